"""Learning-rate schedule: linear warmup, then linear, cosine or no decay.

Keras' ``CosineDecay`` has a warmup but no linear decay, and ``PolynomialDecay`` has no warmup,
so one small schedule covers the BERT recipe (warmup + linear decay) and its variants.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from bert4x.training.optimizers import check_learning_rate

DECAYS = ("linear", "cosine", "constant")


@keras.saving.register_keras_serializable(package="bert4x")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``peak * step / warmup_steps`` during warmup, then decay to ``peak * final_fraction`` at
    ``total_steps`` (and stay there)."""

    def __init__(self, peak_learning_rate: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "linear", final_fraction: float = 0.0):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got "
                             f"warmup_steps={warmup_steps}, total_steps={total_steps}")
        check_learning_rate(peak_learning_rate, "peak_learning_rate")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        warmup = peak * step / max(self.warmup_steps, 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "linear":
            shape = 1.0 - progress
        elif self.decay == "cosine":
            shape = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            shape = ops.ones_like(progress)
        decayed = peak * (self.final_fraction + (1.0 - self.final_fraction) * shape)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return dict(peak_learning_rate=self.peak_learning_rate, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps, decay=self.decay,
                    final_fraction=self.final_fraction)
