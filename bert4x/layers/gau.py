"""Gated Attention Unit (GAU) and FLASH's mixed-chunk attention (Hua et al. 2022).

One unit replaces attention + feed-forward::

    U = φ(X W_u), V = φ(X W_v), Z = φ(X W_z)           (one dense layer, split: e, e, s)
    Q = Z ⊙ γ_q + β_q,  K = Z ⊙ γ_k + β_k             (per-dimension scale and offset)
    A = softmax(Q Kᵀ / √s)  or  relu²(Q Kᵀ / √s) / n  (GAU-α / FLASH; n = keys attended)
    O = (U ⊙ A V) W_o

With ``chunk_size=c`` (FLASH, relu² only) the sequence is cut into chunks of c tokens (padded
at the end): quadratic attention inside each chunk plus linear attention to the other chunks
(all others, or only earlier ones when ``causal``), with their own scale-offsets for Q and K.
Cost grows linearly with length. The linear part is a mean over the keys it covers, so with a
single chunk the unit is exactly the quadratic one, and a causal unit never reads later tokens.

The quadratic unit decodes incrementally with a cache of its keys K and values V, like
:class:`~bert4x.layers.attention.MultiHeadAttention`.
"""

import keras
from keras import ops

from bert4x.layers.attention import (
    ENTROPY_BASE_LENGTH, MASKED_LOGIT, check_length_options, length_factor, write_cache,
)
from bert4x.layers.rotary import apply_rotary
from bert4x.layers.rows import dense_on_rows

NORMALIZATIONS = ("softmax", "relu2")
#: The scales a unit knows (no "none": a unit always divides by sqrt(key_size)).
UNIT_SCALES = ("sqrt", "entropy_invariant", "log_n")


@keras.saving.register_keras_serializable(package="bert4x")
class ScaleOffset(keras.layers.Layer):
    """``x * gamma + beta`` per last-axis dimension (``beta`` optional)."""

    def __init__(self, offset=True, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its input
        self.offset = offset

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")
        if self.offset:
            self.beta = self.add_weight(name="beta", shape=(input_shape[-1],),
                                        initializer="zeros")

    def call(self, x):
        x = x * ops.cast(self.gamma, x.dtype)
        return x + ops.cast(self.beta, x.dtype) if self.offset else x

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="bert4x")
class GatedAttentionUnit(keras.layers.Layer):
    """A GAU over ``[batch, n, hidden]``; see the module docstring for the formulas.

    Call with ``attention_mask`` (bool [batch, 1, q, k], True = may attend) for the quadratic
    unit, or ``key_mask`` (bool [batch, n]) for the chunked one, whose causality is ``causal``.
    Incremental decoding (quadratic unit only): ``cache=(keys, values)`` ([batch, max_len,
    key_size] and [batch, max_len, units]), ``cache_index`` and ``positions`` ([batch, n]) as
    for multi-head attention; the call then returns ``(output, keys, values)``.
    """

    def __init__(self, units, key_size=128, activation="silu", use_bias=True,
                 normalization="softmax", attention_scale="sqrt", rope=True,
                 attention_dropout=0.0, chunk_size=None, causal=False,
                 kernel_initializer="glorot_uniform", rope_base=10000.0,
                 scale_length=ENTROPY_BASE_LENGTH, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its query
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, "
                             f"got {normalization!r}")
        if chunk_size is not None and (normalization != "relu2" or chunk_size < 1):
            raise ValueError("mixed-chunk attention (chunk_size) needs normalization='relu2' "
                             f"and a positive chunk size, got {normalization!r}, {chunk_size!r}")
        if attention_scale not in UNIT_SCALES:
            raise ValueError(f"attention_scale must be one of {UNIT_SCALES}, "
                             f"got {attention_scale!r}")
        if normalization == "relu2" and attention_scale != "sqrt":
            scale = attention_scale.replace("_", "-")
            raise ValueError(f"the {scale} scale belongs to softmax attention; relu² attention "
                             "is normalised by the key count instead")
        check_length_options(rope_base, scale_length)
        if rope and key_size % 2:
            raise ValueError(f"RoPE needs an even key_size, got {key_size}")
        self.units = units
        self.key_size = key_size
        self.activation = activation
        self.use_bias = use_bias
        self.normalization = normalization
        self.attention_scale = attention_scale
        self.rope = rope
        self.rope_base = float(rope_base)
        self.scale_length = int(scale_length)
        self.attention_dropout = attention_dropout
        self.chunk_size = chunk_size
        self.causal = causal
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        dense = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                     dtype=self.dtype_policy)
        self.i_dense = keras.layers.Dense(2 * self.units + self.key_size,
                                          activation=self.activation, name="i_dense", **dense)
        self.o_dense = keras.layers.Dense(input_shape[-1], name="o_dense", **dense)
        self.i_dense.build(input_shape)
        self.o_dense.build((*input_shape[:-1], self.units))
        names = ["q_scaleoffset", "k_scaleoffset"]
        if self.chunk_size is not None:
            names += ["lin_q_scaleoffset", "lin_k_scaleoffset"]
        self.scale_offsets = {}
        for name in names:
            layer = ScaleOffset(offset=self.use_bias, name=name, dtype=self.dtype_policy)
            layer.build((self.key_size,))
            self.scale_offsets[name] = layer
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def _project(self, z, name, positions=None):
        x = self.scale_offsets[name](z)
        if self.rope:
            positions = ops.arange(ops.shape(x)[1]) if positions is None else positions
            x = apply_rotary(x[:, :, None, :], positions, self.rope_base)[:, :, 0, :]
        return x

    def call(self, x, attention_mask=None, key_mask=None, positions=None, cache=None,
             cache_index=None, training=None):
        u, v, z = ops.split(dense_on_rows(self.i_dense, x), [self.units, 2 * self.units], axis=-1)
        if self.chunk_size is None:
            q = self._project(z, "q_scaleoffset", positions)
            k = self._project(z, "k_scaleoffset", positions)
            if cache is not None:
                k, v = (write_cache(stored, new, cache_index) for stored, new in zip(cache, (k, v)))
            mixed = self._quadratic(q, k, v, attention_mask, training)
        elif cache is not None:
            raise ValueError(f"{self.name}: mixed-chunk attention has no incremental decoding; "
                             "build the unit without chunk_size to decode with a cache")
        else:
            mixed = self._mixed_chunk(z, v, key_mask, training)
        output = dense_on_rows(self.o_dense, u * mixed)
        return output if cache is None else (output, k, v)

    def compute_output_spec(self, x, *args, **kwargs):
        if self.chunk_size is None:
            return super().compute_output_spec(x, *args, **kwargs)
        # Not traced: under JAX, padding to whole chunks and cutting back gives a length that
        # its shape tracing cannot prove equal to the input's ("incompatible shapes").
        return keras.KerasTensor(x.shape, self.compute_dtype)

    def cache_shapes(self):
        """Per-row shapes of the cached keys and values, ``None`` where the slots go."""
        return (None, self.key_size), (None, self.units)

    def _normalize(self, logits, allowed, training):
        """Attention weights from float32 logits [..., q, k] and bool ``allowed``."""
        logits = logits * (self.key_size ** -0.5)
        attended = ops.sum(ops.cast(allowed, "float32"), axis=-1, keepdims=True)
        if self.normalization == "softmax":
            factor = length_factor(self.attention_scale, attended, self.scale_length)
            if factor is not None:
                logits = logits * factor
            weights = ops.softmax(ops.where(allowed, logits, MASKED_LOGIT), axis=-1)
        else:
            weights = ops.where(allowed, ops.square(ops.relu(logits)), 0.0)
            weights = weights / ops.maximum(attended, 1.0)
        return self.dropout(weights, training=training)

    def _quadratic(self, q, k, v, attention_mask, training):
        logits = ops.cast(ops.matmul(q, ops.transpose(k, (0, 2, 1))), "float32")
        allowed = ops.ones((1, ops.shape(q)[1], ops.shape(k)[1]), "bool") \
            if attention_mask is None else attention_mask[:, 0]
        weights = self._normalize(logits, allowed, training)
        return ops.matmul(ops.cast(weights, v.dtype), v)

    def _mixed_chunk(self, z, v, key_mask, training):
        batch, n = ops.shape(z)[0], ops.shape(z)[1]
        c = self.chunk_size
        if key_mask is None:
            key_mask = ops.ones((batch, n), "bool")
        # (c - n % c) % c, not (-n) % c: in the ONNX export (tf2onnx) the modulo of a negative
        # number truncated, 9 tokens in chunks of 4 were padded to 8, and the model failed.
        padding = (c - n % c) % c
        pad = lambda t: ops.pad(t, [[0, 0], [0, padding], [0, 0]])  # noqa: E731
        projected = [pad(self._project(z, name)) for name in
                     ("q_scaleoffset", "k_scaleoffset", "lin_q_scaleoffset", "lin_k_scaleoffset")]
        v = pad(v)
        valid = ops.pad(ops.cast(key_mask, "bool"), [[0, 0], [0, padding]])
        groups = (n + padding) // c
        chunked = lambda t: ops.reshape(t, (batch, groups, c, ops.shape(t)[-1]))  # noqa: E731
        quad_q, quad_k, lin_q, lin_k = [chunked(t) for t in projected]
        v = chunked(v)
        valid = ops.reshape(valid, (batch, groups, 1, c))

        # Quadratic attention inside each chunk.
        logits = ops.cast(ops.matmul(quad_q, ops.transpose(quad_k, (0, 1, 3, 2))), "float32")
        allowed = valid
        if self.causal:
            allowed = ops.logical_and(allowed, ops.cast(ops.tril(ops.ones((c, c))), "bool"))
        weights = self._normalize(logits, allowed, training)
        quadratic = ops.matmul(ops.cast(weights, v.dtype), v)

        # Linear attention to the other chunks (earlier ones only when causal), as a mean.
        key_weight = ops.cast(ops.transpose(valid, (0, 1, 3, 2)), v.dtype)  # [b, g, c, 1]
        lin_k = lin_k * key_weight
        chunk_kv = ops.matmul(ops.transpose(lin_k, (0, 1, 3, 2)), v)  # [b, g, s, e]
        chunk_count = ops.sum(key_weight, axis=(2, 3))  # [b, g]
        if self.causal:
            kv = ops.cumsum(chunk_kv, axis=1) - chunk_kv
            count = ops.cumsum(chunk_count, axis=1) - chunk_count
        else:
            kv = ops.sum(chunk_kv, axis=1, keepdims=True) - chunk_kv
            count = ops.sum(chunk_count, axis=1, keepdims=True) - chunk_count
        linear = ops.matmul(lin_q, kv) / ops.maximum(count, 1.0)[:, :, None, None]
        mixed = ops.reshape(quadratic + linear, (batch, groups * c, ops.shape(v)[-1]))
        return mixed[:, :n]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "key_size": self.key_size,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "normalization": self.normalization,
            "attention_scale": self.attention_scale,
            "rope": self.rope,
            "rope_base": self.rope_base,
            "scale_length": self.scale_length,
            "attention_dropout": self.attention_dropout,
            "chunk_size": self.chunk_size,
            "causal": self.causal,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
