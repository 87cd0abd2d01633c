"""The Keras 2 backend functions bert4keras scripts call as ``K.x``, mapped onto ``keras.ops``.

``from bert4x.backend import K`` gives this module. Each function has the Keras 2 name,
argument order and defaults (``K.sum(x, axis=None, keepdims=False)``,
``K.sparse_categorical_crossentropy(target, output, from_logits=False)``) and works on every
Keras 3 backend. What Keras 3 has no equivalent for (``K.gradients``, ``K.function``, the
global learning phase) raises an error that says what to use instead, rather than doing
something else.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# ---------------------------------------------------------------- values and types
floatx = keras.config.floatx
epsilon = keras.config.epsilon


def cast(x, dtype):
    return ops.cast(x, dtype)


def dtype(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def eval(x):
    """The value of a tensor or variable as a NumPy array."""
    return ops.convert_to_numpy(x)


get_value = eval


def set_value(variable, value):
    variable.assign(value)


def shape(x):
    return ops.shape(x)


def int_shape(x):
    return tuple(x.shape)


def ndim(x) -> int:
    return ops.ndim(x)


def arange(start, stop=None, step=1, dtype="int32"):
    return ops.arange(start, stop, step, dtype=dtype)


def zeros_like(x, dtype=None):
    return ops.zeros_like(x, dtype=dtype)


def ones_like(x, dtype=None):
    return ops.ones_like(x, dtype=dtype)


def one_hot(indices, num_classes):
    return ops.one_hot(indices, num_classes)


# ---------------------------------------------------------------- reductions
def sum(x, axis=None, keepdims=False):  # noqa: A001 - Keras 2's name
    return ops.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return ops.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return ops.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return ops.min(x, axis=axis, keepdims=keepdims)


def prod(x, axis=None, keepdims=False):
    """A static shape's product stays a Python int (``K.prod(K.shape(x)[2:])`` in a reshape):
    JAX traces even constant arithmetic under ``jit``, and a traced size cannot shape an array."""
    if isinstance(x, (tuple, list)) and all(isinstance(d, int) for d in x) \
            and axis is None and not keepdims:
        return math.prod(x)
    return ops.prod(x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return ops.logsumexp(x, axis=axis, keepdims=keepdims)


def argmax(x, axis=-1):
    return ops.argmax(x, axis=axis)


def argmin(x, axis=-1):
    return ops.argmin(x, axis=axis)


# ---------------------------------------------------------------- shapes
def reshape(x, shape):
    return ops.reshape(x, shape)


def expand_dims(x, axis=-1):
    return ops.expand_dims(x, axis)


def squeeze(x, axis):
    return ops.squeeze(x, axis)


def concatenate(tensors, axis=-1):
    return ops.concatenate(tensors, axis=axis)


def stack(tensors, axis=0):
    return ops.stack(tensors, axis=axis)


def tile(x, n):
    return ops.tile(x, n)


def permute_dimensions(x, pattern):
    return ops.transpose(x, pattern)


def transpose(x):
    return ops.transpose(x)


def repeat_elements(x, rep, axis):
    return ops.repeat(x, rep, axis=axis)


def flatten(x):
    return ops.reshape(x, (-1,))


# ---------------------------------------------------------------- element-wise
def equal(x, y):
    return ops.equal(x, y)


def not_equal(x, y):
    return ops.not_equal(x, y)


def greater(x, y):
    return ops.greater(x, y)


def greater_equal(x, y):
    return ops.greater_equal(x, y)


def less(x, y):
    return ops.less(x, y)


def less_equal(x, y):
    return ops.less_equal(x, y)


def maximum(x, y):
    return ops.maximum(x, y)


def minimum(x, y):
    return ops.minimum(x, y)


def clip(x, min_value, max_value):
    return ops.clip(x, min_value, max_value)


def switch(condition, then_expression, else_expression):
    return ops.where(condition, then_expression, else_expression)


def abs(x):  # noqa: A001
    return ops.abs(x)


def exp(x):
    return ops.exp(x)


def log(x):
    return ops.log(x)


def sqrt(x):
    return ops.sqrt(x)


def square(x):
    return ops.square(x)


def pow(x, a):  # noqa: A001
    return ops.power(x, a)


def sin(x):
    return ops.sin(x)


def cos(x):
    return ops.cos(x)


def tanh(x):
    return ops.tanh(x)


def sigmoid(x):
    return ops.sigmoid(x)


def relu(x):
    return ops.relu(x)


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def dot(x, y):
    return ops.matmul(x, y)


def batch_dot(x, y, axes=None):
    """Keras 2's ``batch_dot`` for the common case: [b, n, d] · [b, d, m] (or ``axes`` naming
    the contracted axis of each)."""
    if axes is None:
        return ops.matmul(x, y)
    axes = (axes, axes) if isinstance(axes, int) else tuple(axes)
    x_axis, y_axis = (a % ops.ndim(t) for a, t in zip(axes, (x, y)))
    if ops.ndim(x) == 2:
        x = ops.expand_dims(x, 1)
        x_axis = 2
    x = ops.moveaxis(x, x_axis, -1)
    y = ops.moveaxis(y, y_axis, 1)
    return ops.matmul(x, y)


# ---------------------------------------------------------------- losses (element-wise, as K's)
def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    return ops.sparse_categorical_crossentropy(target, output, from_logits=from_logits,
                                               axis=axis)


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    return ops.categorical_crossentropy(target, output, from_logits=from_logits, axis=axis)


def binary_crossentropy(target, output, from_logits=False):
    return ops.binary_crossentropy(target, output, from_logits=from_logits)


# ---------------------------------------------------------------- randomness and phases
def random_binomial(shape, p=0.0, dtype=None, seed=None):
    return ops.cast(keras.random.uniform(shape, seed=seed) < p, dtype or floatx())


def in_train_phase(x, alt, training=None):
    """``x`` when ``training``, else ``alt``. Keras 3 has no global learning phase, so a
    layer passes its own ``training`` argument."""
    if training is None:
        raise ValueError("K.in_train_phase needs training=...: Keras 3 has no global learning "
                         "phase; pass the training argument your layer's call() receives")
    return x if training is True else alt if training is False else ops.where(training, x, alt)


def _no_equivalent(name: str, instead: str):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"K.{name} belongs to Keras 2's graph mode, which Keras 3 does "
                                  f"not have: {instead} (docs/migrating-from-bert4keras.md)")

    refuse.__name__ = name
    return refuse


gradients = _no_equivalent(
    "gradients", "compute gradients with tf.GradientTape (TensorFlow) or jax.grad inside a "
                 "train_step override")
function = _no_equivalent("function", "call the model or a keras.Model built on the tensors "
                                      "you need")
learning_phase = _no_equivalent("learning_phase", "use the training argument of call()")
