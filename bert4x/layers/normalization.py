"""Layer normalisation in the three forms our models need, with one weight layout.

``keras.layers.LayerNormalization`` always centres and ``keras.layers.RMSNormalization`` always
carries a scale; RoFormer-V2 needs a norm with neither centring nor parameters, and the 2020
triple-extraction model needs gamma/beta shifted by a condition vector.  One layer covers all
three so checkpoints always see the same ``gamma``/``beta`` names.

The norm computes in float32 at every precision, with its parameters as stored (never
autocast to bfloat16). Under bfloat16 on TensorFlow the model runs as a plain graph (oneDNN's
bfloat16 matmuls), where the norm's casts, moments and scaling would be separate passes over
the activations; there the plain (unconditional) norm of a fixed shape is compiled with XLA
into one fused kernel (``_plain_norm_for``).
"""

import functools

import keras
from keras import ops

from bert4x.layers.renamed import accepts_bert4keras_names


@keras.saving.register_keras_serializable(package="bert4x")
@accepts_bert4keras_names(hidden_units="condition_hidden_units",
                          hidden_activation="condition_hidden_activation",
                          hidden_initializer="condition_hidden_initializer")
class LayerNormalization(keras.layers.Layer):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` over the last axis.

    - ``zero_mean=False``: no centring, divide by the root mean square (RoFormer-V2 style).
    - ``center``/``scale``: whether the ``beta``/``gamma`` parameters exist.
    - ``conditional=True``: called on ``[x, condition]``; gamma and beta are shifted by dense
      projections of the condition (zero-initialised, so an untrained conditional norm equals the
      plain one).  ``condition_hidden_units`` first maps the condition through a dense layer
      (``condition_hidden_activation``, ``condition_hidden_initializer``).
    """

    def __init__(self, epsilon=1e-12, center=True, scale=True, zero_mean=True, conditional=False,
                 condition_hidden_units=None, condition_hidden_activation="linear",
                 condition_hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its input
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.zero_mean = zero_mean
        self.conditional = conditional
        self.condition_hidden_units = condition_hidden_units
        self.condition_hidden_activation = condition_hidden_activation
        # Kept as given and resolved in build(): a Keras initializer made here would draw a
        # seed, shifting the random initialisation of every layer created after this one.
        self.condition_hidden_initializer = condition_hidden_initializer

    def build(self, input_shape):
        x_shape = input_shape[0] if self.conditional else input_shape
        dim = x_shape[-1]
        # Not autocast: under mixed precision gamma and beta would be read rounded to bfloat16.
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones",
                                         autocast=False)
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros",
                                        autocast=False)
        if not self.conditional:
            return
        cond_dim = input_shape[1][-1]
        if self.condition_hidden_units:
            self.condition_dense = keras.layers.Dense(
                self.condition_hidden_units, activation=self.condition_hidden_activation,
                use_bias=False,
                kernel_initializer=keras.initializers.get(self.condition_hidden_initializer),
                name="condition_hidden", dtype=self.dtype_policy,
            )
            self.condition_dense.build(input_shape[1])
            cond_dim = self.condition_hidden_units
        cond_shape = (*input_shape[1][:-1], cond_dim)
        if self.scale:
            self.gamma_dense = keras.layers.Dense(
                dim, use_bias=False, kernel_initializer="zeros", name="gamma_dense",
                dtype=self.dtype_policy)
            self.gamma_dense.build(cond_shape)
        if self.center:
            self.beta_dense = keras.layers.Dense(
                dim, use_bias=False, kernel_initializer="zeros", name="beta_dense",
                dtype=self.dtype_policy)
            self.beta_dense.build(cond_shape)

    def call(self, inputs):
        x = inputs[0] if self.conditional else inputs
        gamma = self.gamma if self.scale else None
        beta = self.beta if self.center else None
        if not self.conditional:
            return _plain_norm_for(x)(x, gamma, beta, self.epsilon, self.zero_mean)
        compute_dtype = x.dtype
        condition = inputs[1]
        if self.condition_hidden_units:
            condition = self.condition_dense(condition)
        # A per-example condition [batch, c] applies to every position of the sequence.
        while len(condition.shape) < len(x.shape):
            condition = ops.expand_dims(condition, 1)
        x = _normalize(ops.cast(x, "float32"), None, None, self.epsilon, self.zero_mean)
        if self.scale:
            x = x * (gamma + ops.cast(self.gamma_dense(condition), "float32"))
        if self.center:
            x = x + (beta + ops.cast(self.beta_dense(condition), "float32"))
        return ops.cast(x, compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "zero_mean": self.zero_mean,
            "conditional": self.conditional,
            "condition_hidden_units": self.condition_hidden_units,
            "condition_hidden_activation": self.condition_hidden_activation,
            "condition_hidden_initializer": (
                self.condition_hidden_initializer
                if isinstance(self.condition_hidden_initializer, str)
                else keras.initializers.serialize(self.condition_hidden_initializer)),
        }


def _normalize(x, gamma, beta, epsilon, zero_mean):
    """Keras' fused normalisation ops: ~40% faster than composing mean/rsqrt on TF CPU."""
    if zero_mean:
        return ops.layer_normalization(x, gamma, beta, epsilon=epsilon)
    x = ops.rms_normalization(x, gamma, epsilon=epsilon)
    return x if beta is None else x + beta


def _plain_norm(x, gamma, beta, epsilon, zero_mean):
    """The unconditional norm of ``x`` in float32, returned in ``x``'s dtype."""
    return ops.cast(_normalize(ops.cast(x, "float32"), gamma, beta, epsilon, zero_mean), x.dtype)


def _plain_norm_for(x):
    """:func:`_plain_norm`, compiled with XLA for half-precision inputs of a fixed shape on
    TensorFlow. In a plain bfloat16 graph its separate passes took 5.1 ms on a BERT-base batch
    of 32 x 128 tokens, XLA's fused kernel 2.3 (inside an XLA-compiled model it is simply
    inlined). XLA compiles once per shape, about 80 ms here: a graph traced for one shape is
    specialised to it anyway, but a shape-generic one (Keras' ``predict`` after a few lengths)
    would compile the norm again at every new length, which cost more than it saved on
    batches of varying length."""
    half = keras.backend.standardize_dtype(x.dtype) in ("bfloat16", "float16")
    fixed_shape = None not in tuple(x.shape)
    if half and fixed_shape and keras.backend.backend() == "tensorflow":
        return _compiled_on_tensorflow()
    return _plain_norm


@functools.cache
def _compiled_on_tensorflow():
    import tensorflow as tf

    compiled = tf.function(_plain_norm, jit_compile=True)

    def norm(x, gamma, beta, epsilon, zero_mean):
        # A tf.function takes tensors, not Keras variables.
        gamma, beta = (None if weight is None else tf.convert_to_tensor(weight.value)
                       for weight in (gamma, beta))
        return compiled(x, gamma, beta, epsilon, zero_mean)
    return norm
