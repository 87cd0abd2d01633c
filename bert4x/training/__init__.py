"""The shared training loop: data batches, readers, optimiser, schedule, callbacks, ``train``."""

from bert4x.training.amos import Amos
from bert4x.training.backup import AtomicBackup, BackupError
from bert4x.training.callbacks import Evaluator, MetricsLog, ema_weights, plot_metrics, read_metrics_log
from bert4x.training.data import (BucketedBatches, EpochBatches, sequence_padding,
                                  split_by_length)
from bert4x.training.guards import NonFiniteGuard, TrainingError, work_dir_lock
from bert4x.training.layouts import model_parallel_layout
from bert4x.training.loop import (ReplayableEpochs, read_run_settings, record_run_settings,
                                  train)
from bert4x.training.optimizers import AdamW, build_optimizer, layerwise_multipliers
from bert4x.training.readers import (DataError, ReadResult, iter_records, numbered_lines,
                                     read_records, read_text_lines)
from bert4x.training.schedules import WarmupDecay
from bert4x.training.streams import StreamedBatches, held_out_texts, text_stream
from bert4x.training.tables import (TableColumns, is_table_source, load_table,
                                    parse_column_pair, tokenize_table)
from bert4x.training.workers import worker_count, worker_index

__all__ = ["AdamW", "Amos", "AtomicBackup", "BackupError", "BucketedBatches", "DataError", "EpochBatches",
           "Evaluator", "MetricsLog", "NonFiniteGuard", "ReadResult",
           "ReplayableEpochs", "StreamedBatches", "TableColumns", "TrainingError",
           "WarmupDecay", "build_optimizer", "ema_weights", "held_out_texts",
           "is_table_source", "iter_records", "layerwise_multipliers", "load_table",
           "model_parallel_layout", "numbered_lines", "parse_column_pair",
           "plot_metrics", "read_metrics_log", "read_records", "read_run_settings",
           "read_text_lines", "record_run_settings", "sequence_padding",
           "split_by_length", "text_stream", "tokenize_table", "train", "work_dir_lock", "worker_count",
           "worker_index"]
