"""Multi-head attention whose query/key size per head is a free parameter."""

import keras
from keras import ops

from bert4x.layers.rotary import apply_rotary

#: Logit given to masked positions: exp() of it underflows to exactly 0 in float32.
MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="bert4x")
class MultiHeadAttention(keras.layers.Layer):
    """``softmax(Q Kᵀ / sqrt(key_size) + bias, masked) V`` over ``heads`` heads.

    Unlike ``keras.layers.MultiHeadAttention`` it applies RoPE to queries and keys between the
    projection and the dot product, and keeps ``key_size`` (Q/K per head) apart from ``head_size``
    (V per head), the low-rank-bottleneck knob.  Logits and softmax run in float32 even under a
    mixed-precision policy.

    Call with ``query`` and optionally ``key``/``value`` (self-attention when omitted),
    ``attention_mask`` (bool, broadcastable to [batch, heads, q, k], True = may attend) and
    ``attention_bias`` (added to the logits, e.g. relative positions).
    """

    def __init__(self, heads, head_size, key_size=None, out_dim=None, use_bias=True,
                 attention_dropout=0.0, rope=False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.key_size = key_size or head_size
        self.out_dim = out_dim
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout
        self.rope = rope
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, query_shape, key_shape=None, value_shape=None):
        key_shape = key_shape or query_shape
        value_shape = value_shape or key_shape
        out_dim = self.out_dim or query_shape[-1]
        self.query_dense = self._dense(self.heads * self.key_size, "query")
        self.key_dense = self._dense(self.heads * self.key_size, "key")
        self.value_dense = self._dense(self.heads * self.head_size, "value")
        self.output_dense = self._dense(out_dim, "output")
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build((*query_shape[:-1], self.heads * self.head_size))
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def _dense(self, units, name):
        return keras.layers.Dense(
            units, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name=name,
        )

    def _split_heads(self, x, size):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, length, self.heads, size))

    def call(self, query, key=None, value=None, attention_mask=None, attention_bias=None,
             training=None):
        key = query if key is None else key
        value = key if value is None else value
        q = self._split_heads(self.query_dense(query), self.key_size)
        k = self._split_heads(self.key_dense(key), self.key_size)
        v = self._split_heads(self.value_dense(value), self.head_size)
        if self.rope:
            q = apply_rotary(q, ops.arange(ops.shape(q)[1]))
            k = apply_rotary(k, ops.arange(ops.shape(k)[1]))
        # Keras' TF einsum is measurably slower than transposes + batched matmul on CPU.
        logits = ops.matmul(ops.transpose(q, (0, 2, 1, 3)), ops.transpose(k, (0, 2, 3, 1)))
        logits = ops.cast(logits, "float32") * (self.key_size ** -0.5)
        if attention_bias is not None:
            logits = logits + ops.cast(attention_bias, "float32")
        if attention_mask is not None:
            logits = ops.where(attention_mask, logits, MASKED_LOGIT)
        probs = ops.softmax(logits, axis=-1)
        probs = self.dropout(ops.cast(probs, v.dtype), training=training)
        context = ops.transpose(ops.matmul(probs, ops.transpose(v, (0, 2, 1, 3))), (0, 2, 1, 3))
        batch, length = ops.shape(context)[0], ops.shape(context)[1]
        context = ops.reshape(context, (batch, length, self.heads * self.head_size))
        return self.output_dense(context)

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        return (*query_shape[:-1], self.out_dim or query_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "head_size": self.head_size,
            "key_size": self.key_size,
            "out_dim": self.out_dim,
            "use_bias": self.use_bias,
            "attention_dropout": self.attention_dropout,
            "rope": self.rope,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
