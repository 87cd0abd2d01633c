"""Per-epoch backups that a crash at any moment cannot spoil, and that only their model resumes.

Keras' ``BackupAndRestore`` writes ``latest.weights.h5`` in place and then
``training_metadata.json``. A crash in the first write leaves a truncated file that fails to
load with an h5py ``OSError`` naming neither the file nor a remedy; a crash between the two
pairs the new weights with the old epoch count, so the resumed run trains that epoch twice.
:class:`AtomicBackup` keeps Keras' restore logic but writes each epoch's weights to a file of
their own under a temporary name, then the metadata naming that file: renaming the metadata is
the moment the epoch counts as backed up. The previous epoch's file is kept, so a damaged
latest file falls back to it.
"""

from __future__ import annotations

import json
import os
import re
import sys

import keras

from bert4x.files import atomic_path

METADATA = "training_metadata.json"
WEIGHT_SHAPES = "weight_shapes.json"
#: What Keras' own BackupAndRestore wrote (work directories made before AtomicBackup).
_KERAS_WEIGHTS = "latest.weights.h5"
_EPOCH_FILE = re.compile(r"^epoch-\d+\.weights\.h5$")


class BackupError(ValueError):
    """A backup cannot be written or read back; the message says what is left and what to do."""


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """Back up weights and optimizer state at each epoch end; restore the newest readable
    backup when ``fit`` starts. See the module docstring for why it is not Keras' own.
    ``writes=False``: only restore (the workers of a multi-worker run other than the chief)."""

    def __init__(self, backup_dir: str, writes: bool = True):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.writes = writes

    # ------------------------------------------------------------------ what is on disk
    def backups(self) -> list:
        """``[{"epoch": e, "weights": file name}, ...]``, oldest first."""
        path = os.path.join(self.backup_dir, METADATA)
        if not os.path.exists(path):
            return []
        try:
            with open(path, encoding="utf-8") as handle:
                metadata = json.load(handle)
        except (OSError, ValueError) as error:
            raise BackupError(f"{path} cannot be read ({error}); delete {self.backup_dir} to "
                              "start the run afresh") from None
        if "backups" in metadata:
            return metadata["backups"]
        return [{"epoch": metadata["epoch"], "weights": _KERAS_WEIGHTS}]

    def last_epoch(self) -> int:
        """The epoch the newest backup ends (0: none yet)."""
        entries = self.backups()
        return entries[-1]["epoch"] if entries else 0

    # ------------------------------------------------------------------ writing
    def _save_model(self):
        if not self.writes:
            return
        epoch = self._current_epoch
        name = f"epoch-{epoch}.weights.h5"
        kept = [entry for entry in self.backups() if entry["epoch"] < epoch][-1:]
        kept.append({"epoch": epoch, "weights": name})
        try:
            with atomic_path(os.path.join(self.backup_dir, name)) as temporary:
                self.model.save_weights(temporary)
            self._write_metadata({"epoch": epoch, "batch": 0, "backups": kept})
        except OSError as error:  # a full disk, a lost mount
            previous = (f"the backup of epoch {kept[-2]['epoch']} is intact: free the space "
                        "and re-run the same command to resume from it"
                        if len(kept) > 1 else "no earlier backup exists")
            raise BackupError(f"cannot write the backup of epoch {epoch} to {self.backup_dir} "
                              f"({error}); {previous}") from error
        wanted = {entry["weights"] for entry in kept}
        for file in os.listdir(self.backup_dir):
            if (_EPOCH_FILE.match(file) or file == _KERAS_WEIGHTS) and file not in wanted:
                os.remove(os.path.join(self.backup_dir, file))

    def _write_metadata(self, metadata: dict) -> None:
        with atomic_path(os.path.join(self.backup_dir, METADATA)) as temporary, \
                open(temporary, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle)

    # ------------------------------------------------------------------ reading
    def on_train_begin(self, logs=None):
        entries = self.backups()
        if not entries:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        damaged = []
        for entry in reversed(entries):
            path = os.path.join(self.backup_dir, entry["weights"])
            try:
                self.model.load_weights(path)
            except (OSError, ValueError) as error:  # truncated, overwritten, deleted
                damaged.append(f"{path} ({str(error).splitlines()[0]})")
                continue
            if damaged:
                print(f"warning: backup {damaged[0]} is damaged; resuming from the backup of "
                      f"epoch {entry['epoch']} instead", file=sys.stderr)
            self.model._initial_epoch = entry["epoch"]
            return
        raise BackupError(f"cannot resume the run in {self.backup_dir}: every backup is "
                          f"damaged: {'; '.join(damaged)}. Delete {self.backup_dir} to train "
                          "from the start")


def check_backup_fits(model: keras.Model, backup_dir: str, record: bool = True) -> None:
    """Refuse to resume a backup written by another model, before Keras fails on it deep in
    weight loading. The weight shapes of the model that started the run are kept beside its
    backup (``record``: by the process that writes the backup); a run started before they were
    recorded is not checked."""
    shapes = [list(variable.shape) for variable in model.weights]
    path = os.path.join(backup_dir, WEIGHT_SHAPES)
    if not os.path.exists(path):
        if record and (not os.path.isdir(backup_dir) or not os.listdir(backup_dir)):
            os.makedirs(backup_dir, exist_ok=True)
            with atomic_path(path) as temporary, open(temporary, "w") as handle:
                json.dump(shapes, handle)
        return
    with open(path) as handle:
        saved = json.load(handle)
    if saved == shapes:
        return
    work_dir = os.path.dirname(os.path.abspath(backup_dir))
    if len(saved) != len(shapes):
        difference = f"it has {len(saved)} weight arrays, this model {len(shapes)}"
    else:
        index = next(i for i, (a, b) in enumerate(zip(saved, shapes)) if a != b)
        difference = (f"weight {model.weights[index].path} is {saved[index]} there and "
                      f"{shapes[index]} here")
    raise ValueError(f"{work_dir} holds the backup of a run of another model ({difference}); "
                     f"use a new work dir, or delete {backup_dir} to start this run afresh")
