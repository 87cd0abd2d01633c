"""Training and evaluating sentence encoders with CoSENT or the Sentence-BERT objective.

A run's directory holds ``cosent.json`` (what to rebuild: backbone, vocabulary, pooling,
``maxlen``), the shared training loop's files (backup, metrics, plot), ``encoder.weights.h5``
(the best encoder by dev Spearman) and ``results.json`` / ``results.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional, Sequence

import keras
import numpy as np
from scipy.stats import spearmanr

from bert4x.files import atomic_path
from bert4x.models.precision import building_at, check_training_precision, restored_at
from bert4x.tokenizers import Tokenizer
from bert4x.training import (BucketedBatches, Evaluator, WarmupDecay, build_optimizer,
                             read_run_settings, record_run_settings, sequence_padding, train)
from tasks.cosent.data import Pair
from tasks.cosent.model import (CoSENTLoss, build_cosine_model, build_encoder,
                                build_sbert_model)
from tasks.cosent.vectors import SentenceEncoder
from tasks.model_options import build_backbone

OBJECTIVES = ("cosent", "sbert")
SETTINGS_FILE = "cosent.json"
ENCODER_WEIGHTS = "encoder.weights.h5"


@dataclasses.dataclass
class Settings:
    """What a run needs to rebuild its encoder. ``checkpoint`` is the starting point (None:
    random initialisation); ``keep_tokens`` cuts the checkpoint's vocabulary (a JSON list)."""

    config: str
    vocab: str
    model: str = "bert"
    checkpoint: Optional[str] = None
    keep_tokens: Optional[str] = None
    pooling: str = "mean"
    output_dim: Optional[int] = None
    maxlen: int = 64
    objective: str = "cosent"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.maxlen < 3:
            raise ValueError(f"maxlen must leave room for [CLS] and [SEP], got {self.maxlen}")
        for name in ("config", "vocab", "checkpoint", "keep_tokens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, os.path.abspath(value))

    def save(self, work_dir) -> None:
        record_run_settings(work_dir, SETTINGS_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, work_dir) -> "Settings":
        return cls(**read_run_settings(work_dir, SETTINGS_FILE, "cosent"))


def build_sentence_encoder(settings: Settings, load_checkpoint: bool = True) -> SentenceEncoder:
    tokenizer = Tokenizer(settings.vocab)
    backbone = build_backbone(settings, tokenizer, settings.maxlen, load_checkpoint,
                              with_pool=settings.pooling == "pooler",
                              allow_unused=True)  # an MLM head in the checkpoint is not needed
    encoder = build_encoder(backbone, settings.pooling, settings.output_dim)
    return SentenceEncoder(encoder, tokenizer, settings.maxlen)


def load_trained_encoder(work_dir, precision: Optional[str] = None) -> SentenceEncoder:
    """The best encoder of a finished run, computing at ``precision`` (fp32, bf16 or int8;
    see :mod:`bert4x.models.precision`)."""
    settings = Settings.load(work_dir)
    weights = os.path.join(work_dir, ENCODER_WEIGHTS)
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{weights} not found: the run in {work_dir} has not finished")
    return restored_at(precision, lambda: build_sentence_encoder(settings, load_checkpoint=False),
                       weights, model_of=lambda built: built.encoder)


def spearman(sentence_encoder: SentenceEncoder, pairs: Sequence[Pair]) -> float:
    """Spearman correlation ×100 between the pairs' cosines and their labels."""
    cosines = sentence_encoder.similarity([p.first for p in pairs], [p.second for p in pairs],
                                          progress=False)
    return float(100 * spearmanr(cosines, [p.label for p in pairs]).statistic)


def pair_batches(pairs: Sequence[Pair], sentence_encoder: SentenceEncoder, batch_size: int,
                 seed: int, labels_as_classes: bool = False) -> BucketedBatches:
    """Batches ``((ids 1, segments 1, ids 2, segments 2), labels)``, truncated to ``maxlen``."""
    first = sentence_encoder.token_ids([p.first for p in pairs])
    second = sentence_encoder.token_ids([p.second for p in pairs])
    dtype = "int32" if labels_as_classes else "float32"
    examples = [(a, b, p.label) for a, b, p in zip(first, second, pairs)]

    def collate(batch):
        a = sequence_padding([example[0] for example in batch])
        b = sequence_padding([example[1] for example in batch])
        labels = np.array([example[2] for example in batch], dtype=dtype)
        return (a, np.zeros_like(a), b, np.zeros_like(b)), labels

    return BucketedBatches(examples, batch_size, collate, seed=seed,
                           length=lambda example: max(len(example[0]), len(example[1])))


def class_count(pairs: Sequence[Pair]) -> int:
    labels = np.array([p.label for p in pairs])
    if np.any(labels != np.round(labels)) or labels.min() < 0:
        raise ValueError("the Sentence-BERT objective classifies labels: they must be "
                         "non-negative integers (0, 1, ...)")
    return int(labels.max()) + 1


def train_encoder(settings: Settings, train_pairs: List[Pair], dev_pairs: List[Pair],
                  work_dir, epochs: int = 2, batch_size: int = 32, learning_rate: float = 2e-5,
                  seed: int = 0, verbose="auto", optimizer: str = "adamw",
                  precision: str = "fp32") -> SentenceEncoder:
    """Train with ``settings.objective``; keep the encoder with the best dev Spearman.
    ``precision`` "bf16" trains the encoder in mixed bfloat16 (the loss in float32)."""
    check_training_precision(precision)
    keras.utils.set_random_seed(seed)
    settings.save(work_dir)
    with building_at(precision):
        sentence_encoder = build_sentence_encoder(settings)
    if settings.objective == "cosent":
        model, loss = build_cosine_model(sentence_encoder.encoder), CoSENTLoss()
    else:
        model = build_sbert_model(sentence_encoder.encoder, class_count(train_pairs))
        loss = keras.losses.SparseCategoricalCrossentropy()
    batches = pair_batches(train_pairs, sentence_encoder, batch_size, seed,
                           labels_as_classes=settings.objective == "sbert")
    total = epochs * len(batches)
    model.compile(optimizer=build_optimizer(WarmupDecay(learning_rate, total,
                                                        warmup_steps=total // 10),
                                            weight_decay=0.01, algorithm=optimizer),
                  loss=loss)
    evaluator = Evaluator(lambda _: {"spearman": spearman(sentence_encoder, dev_pairs)},
                          monitor="spearman",
                          best_path=os.path.join(work_dir, "best.weights.h5"))
    train(model, batches, epochs, work_dir, evaluator=evaluator, seed=seed, verbose=verbose)
    model.load_weights(evaluator.best_path)
    with atomic_path(os.path.join(work_dir, ENCODER_WEIGHTS)) as path:
        sentence_encoder.encoder.save_weights(path)
    return sentence_encoder


def compare_objectives(settings: Settings, objectives: Sequence[str], train_pairs: List[Pair],
                       splits: dict, work_dir, **training) -> dict:
    """Spearman of the untrained encoder and of one encoder per objective, trained with the
    same budget (``training``: epochs, batch size, learning rate, seed, optimizer, precision);
    with one objective
    the run lives in ``work_dir`` itself, with several in ``work_dir/<objective>``. The table
    is written to ``work_dir/results.md``."""
    # The untrained row's weights are random too (with --random-init): seed them by the run.
    keras.utils.set_random_seed(training.get("seed", 0))
    untrained = build_sentence_encoder(settings)
    rows = {"untrained": {split: spearman(untrained, pairs) for split, pairs in splits.items()}}
    for objective in objectives:
        run_dir = work_dir if len(objectives) == 1 else os.path.join(work_dir, objective)
        trained = train_encoder(dataclasses.replace(settings, objective=objective), train_pairs,
                                splits["dev"], run_dir, **training)
        rows[objective] = {split: spearman(trained, pairs) for split, pairs in splits.items()}
    write_results(work_dir, rows)
    return rows


def write_results(work_dir, rows: dict) -> None:
    """``rows``: name -> {split: Spearman}; written as JSON and as a Markdown table."""
    splits = sorted({split for row in rows.values() for split in row})
    lines = ["| model | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    lines += [f"| {name} | " + " | ".join(f"{row.get(split, float('nan')):.2f}"
                                        for split in splits) + " |"
              for name, row in rows.items()]
    with atomic_path(os.path.join(work_dir, "results.json")) as path:
        with open(path, "w") as handle:
            json.dump(rows, handle, indent=1)
    with atomic_path(os.path.join(work_dir, "results.md")) as path:
        with open(path, "w") as handle:
            handle.write("Spearman ×100\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
