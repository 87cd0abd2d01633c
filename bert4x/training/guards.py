"""What keeps a run from silently producing garbage: one process per work directory, and a
stop at the first non-finite loss, metric or weight.

Without the lock two runs on one work directory both exit 0 after interleaving their epochs in
``metrics.jsonl`` and overwriting each other's backups. Without the guard a diverged run (too
high a learning rate, NaN weights from a damaged file, NaN labels) trains whole epochs at
``loss: nan`` and then fails somewhere unrelated.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import socket

import keras
import numpy as np

LOCK_FILE = ".lock"


class TrainingError(ValueError):
    """A run cannot start or had to stop; the message says why and what is kept."""


@contextlib.contextmanager
def work_dir_lock(work_dir: str):
    """Hold an exclusive OS lock on ``work_dir`` for the duration; a second process gets a
    :class:`TrainingError` naming the process that holds it. The lock goes with the process,
    so a killed run never leaves a stale one behind."""
    import fcntl

    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, LOCK_FILE)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TrainingError(f"{work_dir} is in use by {holder}; wait for that run to end, "
                                "or give another work directory") from None
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        handle.write(f"process {os.getpid()} on {socket.gethostname()}, started {started}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop training at the first NaN or infinite loss or epoch metric, naming the step, the
    likely causes and the last backup, which is left as it was.

    ``last_backup()`` returns the epoch the newest intact backup ends (0: none yet; pass None
    for a run that keeps no backups). Place this
    callback before the ones that write at epoch end (metrics log, backup), so that nothing of
    the failed epoch is kept.
    """

    def __init__(self, work_dir: str, last_backup=None):
        super().__init__()
        self.work_dir, self.last_backup = work_dir, last_backup
        self._epoch = 0

    def on_train_begin(self, logs=None):
        for variable in self.model.weights:
            if "float" in str(variable.dtype) and not np.isfinite(variable.numpy()).all():
                raise TrainingError(
                    f"weight {variable.path} holds NaN or infinite values before training: the "
                    "checkpoint or backup it came from is damaged (checkpoint loading refuses "
                    "such files unless check_finite=False)")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self._stop(f"the loss became {loss} in epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        bad = {name: value for name, value in (logs or {}).items()
               if isinstance(value, float) and not math.isfinite(value)}
        if bad:
            self._stop(f"after epoch {epoch + 1}, " + ", ".join(f"{name} is {value}"
                                                             for name, value in bad.items()))

    def _stop(self, what: str):
        rate = getattr(self.model.optimizer, "learning_rate", None)
        rate = "" if rate is None else f", it is {float(keras.ops.convert_to_numpy(rate)):.3g} now"
        kept = None if self.last_backup is None else self.last_backup()
        if kept is None:
            resume = "This run keeps no backups (resume=False)."
        elif kept:
            resume = (f"The backup of epoch {kept} in {self.work_dir} is intact: after fixing "
                      "the data, the same command resumes from it; with other settings (a "
                      "lower learning rate) use a new work directory.")
        else:
            resume = "No epoch had finished, so nothing was backed up."
        raise TrainingError(
            f"training stopped: {what}. Likely causes: a learning rate too high{rate}; labels "
            f"or inputs that are NaN or infinite; weights loaded from a damaged file. {resume}")
