"""The shared training loop: ``model.fit`` plus resume, evaluation, a metrics log and a plot.

A task compiles its model (loss, optimizer from :func:`build_optimizer`) and calls
:func:`train`. Everything a run writes goes to ``work_dir``:

    backup/         the last two epochs' state (weights, optimizer incl. EMA and step), written
                    atomically (:class:`~bert4x.training.backup.AtomicBackup`), and the model's
                    weight shapes, so another model cannot resume this run
    training_settings.json
                    seed, batches per epoch and optimizer, so that the same model trained
                    otherwise cannot resume it either
    metrics.jsonl   one record per epoch (training logs + the evaluator's metrics)
    metrics.png     the curves
    best.weights.h5 the best weights by the evaluator's metric (when an evaluator is given)
    .lock           held while a process trains here: a second one is refused

A NaN or infinite loss or metric stops the run at once (:class:`NonFiniteGuard`), before
anything of that epoch is written.

Re-running the same command after a crash resumes from the last finished epoch; data order and
dropout masks are functions of ``(seed, epoch)``, so the resumed run ends with the same weights
as an uninterrupted one.

In a multi-worker run (``tf.distribute.MultiWorkerMirroredStrategy``, or JAX over several
processes) ``work_dir`` is on storage every worker sees. Only the chief writes the backup;
every worker resumes from it, and worker ``i`` keeps its own lock and logs in
``work_dir/worker-i`` (see :mod:`bert4x.training.workers`).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import keras
import numpy as np

from bert4x.files import atomic_path
from bert4x.training.backup import AtomicBackup, check_backup_fits
from bert4x.training.callbacks import Evaluator, MetricsLog
from bert4x.training.data import EpochBatches
from bert4x.training.guards import NonFiniteGuard, work_dir_lock
from bert4x.training.workers import (prepare_multi_worker_fit, worker_count, worker_dir,
                                     worker_index)

BACKUP_DIR = "backup"
TRAINING_SETTINGS = "training_settings.json"


class ReplayableEpochs(keras.callbacks.Callback):
    """Make epoch ``e`` depend only on ``(seed, e)``: the dataset's batch order and the state of
    every random generator in the model (dropout masks).

    Keras' BackupAndRestore restores weights and optimizer but not the generators' states,
    so without this a resumed run would draw different dropout masks than an uninterrupted one.
    Each generator is keyed by its place among the model's generators, not by its name: Keras
    numbers names with a process-wide counter, so a model built after other models would
    otherwise draw other masks, and the same run would score differently in another process.
    Under PyTorch, Keras draws the masks of a Dropout built without a seed from torch's global
    generator instead (its fast path), so that generator is reseeded by ``(seed, epoch)`` too.
    """

    def __init__(self, dataset=None, seed: int = 0):
        super().__init__()
        self.dataset, self.seed = dataset, seed

    def on_epoch_begin(self, epoch, logs=None):
        if self.dataset is not None and self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)
        generators = [variable for variable in self.model.variables
                      if variable.path.endswith("seed_generator_state")]
        for place, variable in enumerate(generators):
            rng = np.random.default_rng([self.seed, epoch, place])
            value = rng.integers(0, 2**31 - 1, size=variable.shape)
            variable.assign(value.astype(variable.dtype))
        if keras.backend.backend() == "torch":
            import torch
            torch.manual_seed(int(np.random.default_rng([self.seed, epoch]).integers(2**31)))


def train(model: keras.Model, train_data, epochs: int, work_dir: str,
          evaluator: Optional[Evaluator] = None, callbacks: Sequence = (), resume: bool = True,
          validation_data=None, seed: int = 0, verbose="auto") -> keras.callbacks.History:
    """Fit a compiled ``model`` on ``train_data`` (a ``keras.utils.PyDataset`` such as
    :class:`~bert4x.training.data.BucketedBatches` or
    :class:`~bert4x.training.streams.StreamedBatches`, or a ``tf.data.Dataset``)."""
    if getattr(model, "optimizer", None) is None or not model.compiled:
        raise ValueError("compile the model (loss and optimizer) before train()")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    _check_data(train_data)
    worker = worker_index()
    own_dir = worker_dir(work_dir, worker)
    with work_dir_lock(own_dir):
        backup = (AtomicBackup(os.path.join(work_dir, BACKUP_DIR), writes=worker == 0)
                  if resume else None)
        steps = [ReplayableEpochs(train_data if isinstance(train_data, EpochBatches) else None,
                                  seed)]
        if evaluator is not None:
            if evaluator.best_path is None:
                evaluator.best_path = os.path.join(own_dir, "best.weights.h5")
            steps.append(evaluator)
        # Before everything that writes at epoch end, so nothing of a diverged epoch is kept.
        steps.append(NonFiniteGuard(own_dir, backup.last_epoch if backup else None))
        steps.append(MetricsLog(os.path.join(own_dir, "metrics.jsonl"),
                                os.path.join(own_dir, "metrics.png")))
        steps.extend(callbacks)
        if backup is not None:
            check_backup_fits(model, backup.backup_dir, record=worker == 0)
            record_run_settings(own_dir, TRAINING_SETTINGS,
                                training_settings(model, train_data, seed))
            # Last, so an epoch only counts as done once everything above has finished with it.
            steps.append(backup)
        if isinstance(train_data, EpochBatches) and keras.backend.backend() == "tensorflow":
            train_data = train_data.as_tf_dataset()
        if worker_count() > 1 and keras.backend.backend() == "tensorflow":
            prepare_multi_worker_fit(model, train_data)
        # shuffle=False: Keras would reorder a PyDataset's batches with its own unseeded
        # generator, which a resumed run cannot reproduce; EpochBatches shuffle by
        # (seed, epoch) itself.
        return model.fit(train_data, epochs=epochs, callbacks=steps,
                         validation_data=validation_data, verbose=verbose, shuffle=False)


def _check_data(train_data) -> None:
    """Refuse data ``fit`` would take and use wrongly, saying what to pass instead."""
    if type(train_data).__module__.startswith("datasets."):
        raise TypeError("train() takes batches, not a datasets table: wrap it in "
                        "BucketedBatches(table, batch_size, collate, lengths=...) or, for an "
                        "IterableDataset, StreamedBatches(table, batch_size, steps_per_epoch, "
                        "collate)")
    sharded = isinstance(train_data, EpochBatches) and train_data.shard is not None
    if sharded and worker_count() > 1 and keras.backend.backend() == "tensorflow":
        # Tried with auto-sharding off: two workers' half-batches left the one-process loss
        # curve (docs/design-notes.md, Training).
        raise ValueError("under TensorFlow's MultiWorkerMirroredStrategy, give every worker "
                         "the whole batches (no shard=...): TensorFlow gives each worker its "
                         "part of every batch itself")


def record_run_settings(work_dir: str, filename: str, settings: dict) -> None:
    """Write a run's settings into its work directory, refusing a directory that holds a run
    made with other settings: :func:`train` would resume that run and its scores would be
    reported as the new run's (same shapes, so :func:`check_backup_fits` cannot tell)."""
    path = os.path.join(work_dir, filename)
    if os.path.exists(path):
        with open(path) as handle:
            saved = json.load(handle)
        changed = sorted(key for key in set(saved) | set(settings)
                         if saved.get(key) != settings.get(key))
        if changed:
            details = "; ".join(f"{key}: {saved.get(key)!r} there, {settings.get(key)!r} now"
                                for key in changed)
            raise ValueError(f"{work_dir} already holds a run with other settings ({details}); "
                             "give a new work directory, or delete that one to start over")
    os.makedirs(work_dir, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        json.dump(settings, handle, indent=1)


def read_run_settings(work_dir: str, filename: str, task: str) -> dict:
    """The settings :func:`record_run_settings` wrote for a ``task`` run (its CLI name, e.g.
    ``"cosent"``), or an error saying how to make such a run."""
    path = os.path.join(work_dir, filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{work_dir} holds no {task} run ({filename} missing); "
                                f"train one with `bert4x {task} train`")
    with open(path) as handle:
        return json.load(handle)


def training_settings(model: keras.Model, train_data, seed: int) -> dict:
    """What besides the weights' shapes decides the weights a run ends with: its seed, batches
    an epoch, optimizer (with its learning-rate schedule) and the dtype policies its layers
    compute in (a float32 run resumed under mixed bfloat16 would mix two precisions' steps).
    Resuming with others would silently mix two runs. Names are flattened
    (``learning_rate.config.peak_learning_rate``) so that a refusal says what changed. The
    epoch count is not recorded: training a finished run further at a constant rate is a
    continuation (a schedule over all steps still changes)."""
    optimizer = keras.saving.serialize_keras_object(model.optimizer)["config"]
    optimizer.pop("name", None)
    try:
        steps_per_epoch = len(train_data)
    except TypeError:  # a tf.data.Dataset of unknown length
        steps_per_epoch = None
    policies = sorted({layer.dtype_policy.name for layer in model._flatten_layers()})
    return dict(seed=seed, steps_per_epoch=steps_per_epoch, dtype_policies=policies,
                **_flattened(optimizer))


def _flattened(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flattened(value, f"{prefix}{key}."))
        elif isinstance(value, float):  # Keras keeps rates as float32: 0.0010000000474974513
            flat[f"{prefix}{key}"] = float(f"{value:.7g}")
        else:
            flat[f"{prefix}{key}"] = value
    return json.loads(json.dumps(flat, default=repr))  # what the saved file will read back as
