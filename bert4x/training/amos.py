"""Amos: Adam-style steps with weight decay and learning-rate decay that adapt to each variable.

Amos (Tian & Parikh 2022, "Amos: An Adam-style Optimizer with Adaptive Weight Decay towards
Model-Oriented Scale"; Su Jianlin discusses it on kexue.fm) gives every variable θ an expected
scale η of its entries (the "model-oriented scale") and derives from it, and from one global
rate ξ, both the step size and the weight decay. With g the gradient and t the step:

    v   ← β·v + (1 − β)·mean(g²)          (mean over the reduced axes: the low-memory state)
    r   = (1 − βᵗ) / v                      (reciprocal of the bias-corrected second moment)
    γ   = c · ξ² · r · mean(g²),  c = 1 / √(1 + ζ·√ξ·b)     (the adaptive weight decay)
    α   = ξ · η                             (the variable's initial learning rate)
    θ  ← θ − d · (α·√r·g + ½·γ·θ),  d = 1 / (1 + ζ·√α·b)    (d: the learning-rate decay)
    b   ← b + γ·(1 + b)

b starts at 0 and grows as decay accumulates, which shrinks both factors c and d: the schedule
comes from the variable's own gradients, not from a step count. v and b keep one value per
output unit of a matrix and one per vector, instead of Adam's two values per entry.

Where we differ from the reference implementation (google-research/jestimator), and why:
biases and normalisation parameters (:data:`~bert4x.training.variables.NO_DECAY`) skip the
½·γ·θ pull towards zero, as in our AdamW (a norm's scale starts at 1 and shrinking it rescales
the layer), while their b still grows so their learning rate decays like the others'.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Dict, Optional, Union

import keras
from keras import ops

from bert4x.training.variables import NO_DECAY, dense_gradients

Eta = Union[None, float, Callable, Dict[str, float]]


def model_oriented_scale(variable) -> float:
    """The default η of a variable: 0.5 for vectors (biases, norms), 1/√width for embedding
    tables (each looked-up row about unit length), 1/√fan_in for kernels (the scale a
    unit-variance input needs to give unit-variance outputs)."""
    shape = tuple(variable.shape)
    if len(shape) < 2:
        return 0.5
    if variable.path.endswith("embeddings"):
        return 1.0 / math.sqrt(shape[-1])
    return 1.0 / math.sqrt(math.prod(shape[:-1]))


def state_shape(shape):
    """The shape of v and b: matrices keep their last (output) axis, vectors one value."""
    if len(shape) < 2:
        return (1,) * max(len(shape), 1)
    return (1,) * (len(shape) - 1) + (shape[-1],)


@keras.saving.register_keras_serializable(package="bert4x")
class Amos(keras.optimizers.Optimizer):
    """The Amos optimizer (formulas in the module docstring).

    ``learning_rate`` is ξ. A variable's first steps are ξ·η per entry, so for a kernel of
    fan-in m, ξ/√m plays the part of Adam's learning rate: ξ = 0.008 starts a 256-wide
    model's kernels at Adam's 5e-4. (The reference suggests ξ ≈ 1/√(batches per epoch) for its
    settings; on the toy classifier of tests/test_amos.py, ξ from 0.05 to 0.2 did not learn in
    80 steps where 0.005 did.) ``eta``: η for
    every variable as one number, a dict of regular expressions on variable paths (first match
    wins; unmatched variables get :func:`model_oriented_scale`), or a function of the variable.
    ``beta`` averages the squared gradients, ``zeta`` sets how fast the decays grow, and
    ``momentum`` (optional) averages the updates.
    """

    def __init__(self, learning_rate=0.01, eta: Eta = None, beta: float = 0.999,
                 zeta: float = 0.25, momentum: Optional[float] = None,
                 epsilon: float = 2.0 ** -125, name: str = "amos", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if zeta < 0:
            raise ValueError(f"zeta must be >= 0, got {zeta}")
        if momentum is not None and not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.eta = eta
        self.beta = beta
        self.zeta = zeta
        self.momentum = momentum
        self.epsilon = epsilon

    def _eta_of(self, variable) -> float:
        if self.eta is None:
            return model_oriented_scale(variable)
        if isinstance(self.eta, (int, float)):
            return float(self.eta)
        if isinstance(self.eta, dict):
            for pattern, value in self.eta.items():
                if re.search(pattern, variable.path):
                    return float(value)
            return model_oriented_scale(variable)
        return float(self.eta(variable))

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._second_moments, self._decays, self._averages = [], [], []
        # By position: under TensorFlow update_step receives the raw tf.Variable, without .path.
        self._etas, self._decayed, self._eta_by_path = [], [], {}
        for variable in var_list:
            shape = state_shape(tuple(variable.shape))
            self._second_moments.append(self.add_variable(
                shape, dtype=variable.dtype, name=f"{variable.name}_v"))
            self._decays.append(self.add_variable(
                shape, dtype=variable.dtype, name=f"{variable.name}_b"))
            if self.momentum:
                self._averages.append(self.add_variable_from_reference(variable, "momentum"))
            self._etas.append(self._eta_of(variable))
            self._eta_by_path[f"^{re.escape(variable.path)}$"] = self._etas[-1]
            self._decayed.append(not any(part in variable.path for part in NO_DECAY))

    def apply(self, grads, trainable_variables=None):
        return super().apply(dense_gradients(grads), trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        xi = ops.cast(learning_rate, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        v, b = self._second_moments[index], self._decays[index]
        reduced = tuple(axis for axis, (full, kept) in enumerate(zip(variable.shape, v.shape))
                        if kept < full)
        squared = ops.mean(ops.square(gradient), axis=reduced, keepdims=True) if reduced \
            else ops.square(gradient)
        self.assign(v, self.beta * v + (1 - self.beta) * squared)
        inverse_moment = (1 - ops.power(ops.cast(self.beta, dtype), step)) \
            / ops.maximum(v, self.epsilon)
        decay_rate = ops.rsqrt(1 + self.zeta * ops.sqrt(xi) * b) * ops.square(xi) \
            * inverse_moment * squared
        initial_rate = xi * self._etas[index]
        step_size = 1 / (1 + self.zeta * ops.sqrt(initial_rate) * b)
        update = initial_rate * ops.sqrt(inverse_moment) * gradient
        if self._decayed[index]:
            update = update + 0.5 * decay_rate * variable
        update = step_size * update
        self.assign(b, b + decay_rate * (1 + b))
        if self.momentum:
            average = self._averages[index]
            self.assign(average, self.momentum * average + (1 - self.momentum) * update)
            update = average
        self.assign_sub(variable, update)

    def get_config(self):
        eta = self.eta
        if callable(eta) and not isinstance(eta, dict):
            if not self.built:
                raise ValueError("an Amos whose eta is a function is saved with the values it "
                                 "gave each variable: build it (or train a step) first")
            eta = dict(self._eta_by_path)  # a function cannot be saved; its values can
        return {**super().get_config(), "eta": eta, "beta": self.beta, "zeta": self.zeta,
                "momentum": self.momentum, "epsilon": self.epsilon}
