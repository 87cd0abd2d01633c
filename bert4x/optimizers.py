"""bert4keras' ``optimizers`` names on Keras 3 optimizers, so that
``from bert4keras.optimizers import Adam, extend_with_exponential_moving_average`` becomes
``from bert4x.optimizers import ...``.

``Adam`` is Keras' Adam with bert4keras' formula: ε is added after bias correction
(``m̂ / (√v̂ + ε)``; Keras adds it before, which is ``ε·√(1-β₂ᵗ)`` smaller in early steps) and
``bias_correction=False`` is offered. Each ``extend_with_*(Optimizer, name=None)`` returns a
subclass with one more behaviour, taking bert4keras' arguments; where Keras has the behaviour
built in (weight decay, EMA, gradient accumulation, schedules) the subclass switches it on:

==============================  ==========================================  ===================
factory                          arguments (bert4keras defaults)              Keras 3 piece
==============================  ==========================================  ===================
extend_with_weight_decay         weight_decay_rate=0.01,                      ``weight_decay``
                                 exclude_from_weight_decay=[]
extend_with_exponential_moving   ema_momentum=0.999; ``apply_ema_weights()``  ``use_ema``
_average                         / ``reset_old_weights()``
extend_with_piecewise_linear_lr  lr_schedule={0: 1}                           a schedule
extend_with_gradient_accumulati  grad_accum_steps=2                           ``gradient_accumu
on                                                                            lation_steps``
extend_with_layer_adaptation     exclude_from_layer_adaptation=[]             (ours)
extend_with_lookahead            steps_per_slow_update=5, slow_step_size=0.5  (ours)
==============================  ==========================================  ===================

Exclusion lists are regular expressions searched in each variable's path
(``Transformer-0-FeedForward/intermediate/bias``), as bert4keras searched variable names.
The differences from bert4keras are listed in docs/migrating-from-bert4keras.md.
"""

from __future__ import annotations

import re
from typing import Dict

import keras
from keras import ops

from bert4x.training.optimizers import check_learning_rate
from bert4x.training.variables import dense_gradients

__all__ = ["Adam", "AdamW", "PiecewiseLinear", "extend_with_exponential_moving_average",
           "extend_with_gradient_accumulation", "extend_with_layer_adaptation",
           "extend_with_lookahead", "extend_with_piecewise_linear_lr", "extend_with_weight_decay",
           "piecewise_linear"]


@keras.saving.register_keras_serializable(package="bert4x")
class Adam(keras.optimizers.Adam):
    """Adam with bert4keras' defaults (ε = 1e-6) and formula; sparse gradients made dense (see
    :class:`bert4x.training.AdamW`)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 bias_correction=True, **kwargs):
        if isinstance(learning_rate, (int, float)):
            check_learning_rate(learning_rate)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        self.bias_correction = bias_correction

    def apply(self, grads, trainable_variables=None):
        return super().apply(dense_gradients(grads), trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        m_hat, v_hat = m, v
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, dtype)
            m_hat = m / (1 - ops.power(ops.cast(self.beta_1, dtype), step))
            v_hat = v / (1 - ops.power(ops.cast(self.beta_2, dtype), step))
        step_size = ops.cast(learning_rate, dtype)
        self.assign_sub(variable, step_size * m_hat / (ops.sqrt(v_hat) + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "bias_correction": self.bias_correction}


def _register(factory):
    """bert4keras' ``extend_with_*(Base, name=None)`` calling convention: the new class is
    named ``name`` (or ``Base`` + the factory's suffix) and registered for loading."""
    def extend(base, name=None):
        extended = factory(base)
        extended.__name__ = extended.__qualname__ = name or f"{base.__name__}{extended.__name__}"
        return keras.saving.register_keras_serializable("bert4x", extended.__name__)(extended)
    extend.__name__, extend.__doc__ = factory.__name__, factory.__doc__
    return extend


def _compiled_patterns(patterns):
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _matches(pattern, variable) -> bool:
    return pattern is not None and pattern.search(variable.path) is not None


@_register
def extend_with_weight_decay(base):
    """Decoupled weight decay ``x ← x - lr · weight_decay_rate · x`` (Keras ``weight_decay``),
    skipping variables whose path matches ``exclude_from_weight_decay``."""
    class WeightDecay(base):
        def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=(),
                     **kwargs):
            super().__init__(*args, weight_decay=weight_decay_rate, **kwargs)
            self.weight_decay_rate = weight_decay_rate
            self.exclude_from_weight_decay_patterns = list(exclude_from_weight_decay)

        def build(self, var_list):
            super().build(var_list)
            pattern = _compiled_patterns(self.exclude_from_weight_decay_patterns)
            # By position: under TensorFlow the update receives tf.Variables, without .path.
            self._decays = [not _matches(pattern, v) for v in var_list]

        def _use_weight_decay(self, variable):
            return self._decays[self._get_variable_index(variable)]

        def get_config(self):
            config = super().get_config()
            config.pop("weight_decay", None)
            return {**config, "weight_decay_rate": self.weight_decay_rate,
                    "exclude_from_weight_decay": self.exclude_from_weight_decay_patterns}
    return WeightDecay


@_register
def extend_with_exponential_moving_average(base):
    """Keep an exponential moving average of the weights (Keras ``use_ema``).
    ``apply_ema_weights()`` puts the averages into the model (keeping the trained weights) and
    ``reset_old_weights()`` puts the trained weights back, as bert4keras' evaluators do. Unlike
    Keras' own EMA, ``fit`` leaves the trained weights in the model when it ends."""
    class ExponentialMovingAverage(base):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)
            self._old_weights = None

        def finalize_variable_values(self, var_list):
            """Nothing: the averages go into the model only through apply_ema_weights()."""

        def apply_ema_weights(self, bias_correction=True):
            """Swap the averages in. Keras' average starts from the first trained weights
            rather than from zeros, so it needs no bias correction; asking for the raw,
            uncorrected zero-started average (``bias_correction=False``) is refused."""
            if not bias_correction:
                raise ValueError("apply_ema_weights(bias_correction=False): Keras' moving "
                                 "average starts from the weights, not from zeros, so there "
                                 "is no uncorrected average to apply")
            if not self.built:
                raise RuntimeError("apply_ema_weights() before any training step: there is "
                                   "no average yet")
            variables = self._trainable_variables
            self._old_weights = [ops.convert_to_numpy(v) for v in variables]
            for variable, average in zip(variables, self._model_variables_moving_average):
                # A copy: on JAX, assigning the variable itself shares its buffer, and the
                # next predict or train step donates (deletes) that buffer under the average.
                variable.assign(ops.convert_to_numpy(average))

        def reset_old_weights(self):
            """Put back the weights that :meth:`apply_ema_weights` replaced."""
            if self._old_weights is None:
                raise RuntimeError("reset_old_weights() without apply_ema_weights() first")
            for variable, value in zip(self._trainable_variables, self._old_weights):
                variable.assign(value)
            self._old_weights = None
    return ExponentialMovingAverage


def piecewise_linear(step, schedule: Dict[int, float], from_zero: bool = True):
    """The multiplier at ``step`` of a schedule ``{1000: 1, 2000: 0.1}``: linear from 0 (or
    the first value, without ``from_zero``) to 1 over steps 0-1000, from 1 to 0.1 over
    1000-2000, then 0.1."""
    points = sorted((int(k), float(v)) for k, v in schedule.items())
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    steps, values = [p[0] for p in points], [p[1] for p in points]
    step = ops.cast(step, "float32")
    value = ops.full_like(step, values[0])
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        within = ops.logical_and(step >= t0, step < t1)
        value = ops.where(within, v0 + (v1 - v0) * (step - t0) / (t1 - t0), value)
    return ops.where(step >= steps[-1], values[-1], value)


@keras.saving.register_keras_serializable(package="bert4x")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate · piecewise_linear(step, schedule)``."""

    def __init__(self, learning_rate: float, schedule: Dict[int, float]):
        if not schedule:
            raise ValueError("lr_schedule is empty; give e.g. {1000: 1, 2000: 0.1}")
        self.learning_rate = float(learning_rate)
        self.schedule = {int(k): float(v) for k, v in schedule.items()}

    def __call__(self, step):
        return self.learning_rate * piecewise_linear(step, self.schedule)

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "schedule": {str(k): v for k, v in self.schedule.items()}}


@_register
def extend_with_piecewise_linear_lr(base):
    """Multiply the learning rate by :func:`piecewise_linear` of the step (``lr_schedule``)."""
    class PiecewiseLinearLr(base):
        def __init__(self, *args, lr_schedule=None, learning_rate=0.001, **kwargs):
            if args:  # bert4keras scripts may give the rate first, positionally
                learning_rate, args = args[0], args[1:]
            if lr_schedule is None:
                lr_schedule = {0: 1}
            lr_schedule = {int(k): v for k, v in lr_schedule.items()}
            super().__init__(*args, learning_rate=PiecewiseLinear(learning_rate, lr_schedule),
                             **kwargs)
            self.lr_schedule = lr_schedule
    return PiecewiseLinearLr


@_register
def extend_with_gradient_accumulation(base):
    """Apply the mean gradient of ``grad_accum_steps`` batches once per that many batches
    (Keras ``gradient_accumulation_steps``)."""
    class GradientAccumulation(base):
        def __init__(self, *args, grad_accum_steps=2, **kwargs):
            if grad_accum_steps < 1:
                raise ValueError(f"grad_accum_steps must be at least 1, got {grad_accum_steps}")
            super().__init__(*args, gradient_accumulation_steps=grad_accum_steps, **kwargs)
            self.grad_accum_steps = grad_accum_steps
    return GradientAccumulation


def _with_update_hook(base, after_update):
    """A subclass of ``base`` whose ``update_step`` calls ``after_update(self, variable,
    index, before)`` with the variable's value before the step (shared by layer adaptation
    and lookahead, which both rewrite the step the base optimizer made)."""
    class Hooked(base):
        def update_step(self, gradient, variable, learning_rate):
            before = ops.convert_to_tensor(variable) + 0
            super().update_step(gradient, variable, learning_rate)
            after_update(self, variable, self._get_variable_index(variable), before,
                         learning_rate)
    return Hooked


@_register
def extend_with_layer_adaptation(base):
    """LAMB's layer adaptation (You et al. 2019): rescale each variable's step so that the
    step divided by the learning rate has the norm of the variable itself; variables whose
    path matches ``exclude_from_layer_adaptation`` keep the base step."""
    def adapt(self, variable, index, before, learning_rate):
        if self._adaptation_skips[index]:
            return
        step = ops.convert_to_tensor(variable) - before
        rate = ops.maximum(ops.cast(learning_rate, step.dtype), keras.config.epsilon())
        weight_norm, step_norm = ops.norm(ops.reshape(before, (-1,))), \
            ops.norm(ops.reshape(step / rate, (-1,)))
        ratio = ops.where(ops.logical_and(weight_norm > 0, step_norm > 0),
                          weight_norm / ops.maximum(step_norm, 1e-30), 1.0)
        variable.assign(before + step * ratio)

    class LayerAdaptation(_with_update_hook(base, adapt)):
        def __init__(self, *args, exclude_from_layer_adaptation=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.exclude_from_layer_adaptation = list(exclude_from_layer_adaptation)

        def build(self, var_list):
            super().build(var_list)
            pattern = _compiled_patterns(self.exclude_from_layer_adaptation)
            self._adaptation_skips = [_matches(pattern, v) for v in var_list]

        def get_config(self):
            return {**super().get_config(),
                    "exclude_from_layer_adaptation": self.exclude_from_layer_adaptation}
    return LayerAdaptation


@_register
def extend_with_lookahead(base):
    """Lookahead (Zhang et al. 2019): slow weights start at the initial weights; every
    ``steps_per_slow_update`` steps they move ``slow_step_size`` of the way to the fast
    weights, and the fast weights restart from them."""
    def look_ahead(self, variable, index, before, learning_rate):
        slow_weights = self._slow_weights[index]
        # The optimizer is built inside the first (compiled) step: take the weights from there.
        slow = ops.where(ops.equal(self.iterations, 0), before,
                         ops.convert_to_tensor(slow_weights))
        due = ops.equal((self.iterations + 1) % self.steps_per_slow_update, 0)
        fast = ops.convert_to_tensor(variable)
        moved = slow + self.slow_step_size * (fast - slow)
        self.assign(slow_weights, ops.where(due, moved, slow))
        self.assign(variable, ops.where(due, moved, fast))

    class Lookahead(_with_update_hook(base, look_ahead)):
        def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            if steps_per_slow_update < 1 or not 0 < slow_step_size <= 1:
                raise ValueError("lookahead needs steps_per_slow_update >= 1 and 0 < "
                                 f"slow_step_size <= 1, got {steps_per_slow_update}, "
                                 f"{slow_step_size}")
            self.steps_per_slow_update = steps_per_slow_update
            self.slow_step_size = slow_step_size

        def build(self, var_list):
            super().build(var_list)
            self._slow_weights = [self.add_variable_from_reference(v, "slow") for v in var_list]

        def get_config(self):
            return {**super().get_config(), "steps_per_slow_update": self.steps_per_slow_update,
                    "slow_step_size": self.slow_step_size}
    return Lookahead


#: bert4keras' AdamW: its Adam with decoupled weight decay.
AdamW = extend_with_weight_decay(Adam, "AdamW")
