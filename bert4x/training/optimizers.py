"""AdamW as BERT-style fine-tuning uses it, from Keras built-ins, and the factory that also
makes :class:`~bert4x.training.amos.Amos`.

Decoupled weight decay skips biases and normalisation parameters; EMA, gradient accumulation
and global-norm clipping are Keras ``Optimizer`` options. Layer-wise learning-rate decay has
no Keras equivalent, so :class:`AdamW` scales each variable's learning rate; it also makes
sparse embedding gradients dense, which Keras' Adam mishandles under TensorFlow.
"""

from __future__ import annotations

import math
import re
from typing import Dict, Optional

import keras

from bert4x.training.amos import Amos
from bert4x.training.variables import NO_DECAY, dense_gradients



@keras.saving.register_keras_serializable(package="bert4x")
class AdamW(keras.optimizers.AdamW):
    """Keras AdamW plus two things BERT fine-tuning needs.

    * Sparse gradients are made dense first. Under TensorFlow an embedding's gradient is an
      ``IndexedSlices`` with one slice per token occurrence, and Keras' Adam squares it slice by
      slice, so a token seen n times gets ``sum(g_i^2)`` instead of ``(sum g_i)^2`` in the
      second moment: a different (and batch-dependent) update from the Adam formula.
    * Optional per-variable learning-rate ``multipliers`` (layer-wise decay): each variable's
      gradient step uses ``learning_rate * multipliers.get(variable.path, 1)``; weight decay
      keeps the base rate.
    """

    def __init__(self, multipliers: Optional[Dict[str, float]] = None, **kwargs):
        super().__init__(**kwargs)
        self.multipliers = dict(multipliers or {})

    def apply(self, grads, trainable_variables=None):
        return super().apply(dense_gradients(grads), trainable_variables)

    def build(self, var_list):
        super().build(var_list)
        # By position: under TensorFlow update_step receives the raw tf.Variable, without .path.
        self._factors = [self.multipliers.get(v.path, 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers}


def layerwise_multipliers(model: keras.Model, decay: float) -> Dict[str, float]:
    """``decay ** (L + 1 - depth)`` per variable: embeddings depth 0, ``Transformer-i-*``
    depth i + 1, everything above the encoder (heads) depth L + 1, i.e. multiplier 1."""
    if not 0 < decay <= 1:
        raise ValueError(f"layer-wise decay must be in (0, 1], got {decay}")
    depths = {}
    for variable in model.trainable_variables:
        found = re.match(r"Transformer-(\d+)-", variable.path)
        if found:
            depths[variable.path] = int(found.group(1)) + 1
        elif variable.path.startswith("Embedding-"):
            depths[variable.path] = 0
    if not depths:
        raise ValueError("layer-wise decay needs a bert4x model (layers named Transformer-i-*)")
    layers = max(depths.values())
    return {path: decay ** (layers + 1 - depth) for path, depth in depths.items()}


def check_learning_rate(value: float, name: str = "learning_rate") -> None:
    """A rate of 0 trains nothing and a negative one climbs the loss; neither is ever meant."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, got {value}")


#: The optimizers :func:`build_optimizer` makes.
ALGORITHMS = ("adamw", "amos")


def build_optimizer(learning_rate, weight_decay: float = 0.01, ema_momentum: Optional[float] = None,
                    accumulation_steps: Optional[int] = None, clipnorm: Optional[float] = None,
                    layerwise_decay: Optional[float] = None, model: Optional[keras.Model] = None,
                    epsilon: float = 1e-6, algorithm: str = "adamw") -> keras.optimizers.Optimizer:
    """AdamW with decoupled weight decay excluding biases and norms, or ``algorithm="amos"``.

    ``learning_rate``: a float or a schedule (e.g. :class:`WarmupDecay`); ``ema_momentum``:
    keep an exponential moving average of the weights (evaluate/save with it through
    :class:`~bert4x.training.callbacks.Evaluator`); ``accumulation_steps``: apply the mean of k
    batches' gradients every k steps; ``clipnorm``: global gradient-norm clipping;
    ``layerwise_decay``: multiply the rate of lower layers by decay^(distance from the top).
    :class:`~bert4x.training.amos.Amos` sets its own weight decay and step size per variable,
    so ``weight_decay``, ``epsilon`` and ``layerwise_decay`` are AdamW's alone.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if isinstance(learning_rate, (int, float)):
        check_learning_rate(learning_rate)
    if accumulation_steps is not None and accumulation_steps < 2:
        accumulation_steps = None
    shared = dict(learning_rate=learning_rate, use_ema=ema_momentum is not None,
                  ema_momentum=ema_momentum or 0.99,
                  gradient_accumulation_steps=accumulation_steps, global_clipnorm=clipnorm)
    if algorithm == "amos":
        if layerwise_decay is not None:
            raise ValueError("layerwise_decay scales AdamW's rates; Amos sets each variable's "
                             "rate from its scale eta instead")
        return Amos(**shared)
    options = dict(shared, weight_decay=weight_decay, epsilon=epsilon)
    multipliers = None
    if layerwise_decay is not None:
        if model is None:
            raise ValueError("layerwise_decay needs the model, to find each variable's layer")
        multipliers = layerwise_multipliers(model, layerwise_decay)
    optimizer = AdamW(multipliers, **options)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer
