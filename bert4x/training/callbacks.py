"""Callbacks of the shared loop: task-metric evaluation (with EMA weights) and best-weights
saving, and a metrics log with a plot."""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Callable, Dict, List, Optional

import keras
import numpy as np

from bert4x.files import atomic_path
from bert4x.training.guards import TrainingError


@contextlib.contextmanager
def ema_weights(model: keras.Model):
    """Temporarily put the optimizer's moving-average weights into ``model``.

    No-op when the optimizer keeps no EMA. Keras exposes the averages only as the optimizer's
    ``_model_variables_moving_average`` (what its own ``SwapEMAWeights`` callback uses).
    """
    optimizer = getattr(model, "optimizer", None)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield
        return
    pairs = [(v, a) for v, a in zip(model.trainable_variables, averages) if a is not None]
    saved = [v.numpy() for v, _ in pairs]
    for variable, average in pairs:
        variable.assign(average.numpy())
    try:
        yield
    finally:
        for (variable, _), value in zip(pairs, saved):
            variable.assign(value)


class Evaluator(keras.callbacks.Callback):
    """Compute the task metric on dev data, keep the best weights, stop when it stops improving.

    ``evaluate(model) -> {"name": value, ...}`` runs at each epoch end (or every ``every_steps``
    training steps) with the EMA weights when the optimizer keeps them. When ``monitor``
    improves, the weights are written atomically to ``best_path`` (a ``.weights.h5`` file).
    After ``patience`` evaluations without improvement training stops.
    """

    def __init__(self, evaluate: Callable[[keras.Model], Dict[str, float]], monitor: str,
                 mode: str = "max", best_path: Optional[str] = None,
                 every_steps: Optional[int] = None, patience: Optional[int] = None,
                 verbose: bool = True):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if best_path is not None and not str(best_path).endswith(".weights.h5"):
            raise ValueError(f"best_path must end in .weights.h5, got {best_path!r}")
        self.evaluate, self.monitor, self.mode = evaluate, monitor, mode
        self.best_path, self.every_steps, self.patience = best_path, every_steps, patience
        self.verbose = verbose
        self.best = -math.inf if mode == "max" else math.inf
        self.history: List[Dict[str, float]] = []
        self._waited = 0
        self._step = 0

    @property
    def _state_path(self) -> Optional[str]:
        return None if self.best_path is None else self.best_path + ".json"

    def on_train_begin(self, logs=None):
        """A resumed run continues from the saved best, so a worse model never replaces it."""
        if self._state_path and os.path.exists(self._state_path):
            with open(self._state_path, encoding="utf-8") as handle:
                state = json.load(handle)
            self.best, self._waited, self.history = state["best"], state["waited"], state["history"]

    def _save_state(self) -> None:
        if self._state_path:
            with atomic_path(self._state_path) as temporary, \
                    open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"best": self.best, "waited": self._waited, "history": self.history},
                          handle)

    def _better(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def run(self, epoch: int) -> Dict[str, float]:
        with ema_weights(self.model):
            metrics = {k: float(v) for k, v in self.evaluate(self.model).items()}
            if self.monitor not in metrics:
                raise KeyError(f"the evaluate function returned {sorted(metrics)}, "
                               f"not the monitored {self.monitor!r}")
            if not math.isfinite(metrics[self.monitor]):
                # It could never improve, so no best weights would ever be written.
                raise TrainingError(
                    f"training stopped: the dev {self.monitor} is {metrics[self.monitor]} after "
                    f"epoch {epoch + 1}: the model's outputs are not finite, or all the same")
            improved = self._better(metrics[self.monitor])
            if improved:
                self.best = metrics[self.monitor]
                self._waited = 0
                if self.best_path is not None:
                    with atomic_path(self.best_path) as temporary:
                        self.model.save_weights(temporary)
            else:
                self._waited += 1
        self.history.append({"epoch": epoch + 1, "step": self._step, **metrics})
        self._save_state()
        if self.verbose:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            print(f"\nevaluation after epoch {epoch + 1}: {shown}  "
                  f"(best {self.monitor}={self.best:.4f}{', saved' if improved and self.best_path else ''})")
        if self.patience is not None and self._waited >= self.patience:
            self.model.stop_training = True
        return metrics

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_steps and self._step % self.every_steps == 0:
            self.run(self._epoch)

    def on_epoch_begin(self, epoch, logs=None):
        # Counting from the epoch keeps the step numbers of a resumed run (which starts at a
        # later epoch) equal to an uninterrupted run's.
        self._epoch = epoch
        steps_per_epoch = (self.params or {}).get("steps")
        if steps_per_epoch:
            self._step = epoch * steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_steps:
            metrics = self.run(epoch)
            if logs is not None:
                logs.update({f"dev_{k}": v for k, v in metrics.items()})


class MetricsLog(keras.callbacks.Callback):
    """Append each epoch's logs to a JSON-lines file and redraw a PNG of every curve.

    The log is appended to, so a resumed run continues the same file and the same plot.
    """

    def __init__(self, path: str, plot_path: Optional[str] = None):
        super().__init__()
        self.path = os.fspath(path)
        self.plot_path = plot_path

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.plot_path is not None:
            plot_metrics(read_metrics_log(self.path), self.plot_path)


def read_metrics_log(path: str) -> List[Dict[str, float]]:
    """Records of a metrics log; a resumed run's repeated epochs keep their latest record."""
    by_epoch = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_metrics(records: List[Dict[str, float]], path: str) -> None:
    """One panel per metric family (loss, then each other metric) against epoch."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = sorted({k for r in records for k in r if k != "epoch"})
    families = sorted({n.removeprefix("val_").removeprefix("dev_") for n in names},
                      key=lambda n: (n != "loss", n))
    figure, axes = pyplot.subplots(1, len(families), figsize=(4.5 * len(families), 3.5),
                                   squeeze=False)
    for axis, family in zip(axes[0], families):
        for name in names:
            if name.removeprefix("val_").removeprefix("dev_") == family:
                points = [(r["epoch"], r[name]) for r in records if name in r]
                axis.plot(*np.array(points).T, marker="o", label=name)
        axis.set_xlabel("epoch")
        axis.set_title(family)
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary)
    pyplot.close(figure)
