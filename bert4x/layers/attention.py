"""Multi-head attention with the research options of the bert4keras lineage.

* ``key_size`` (Q/K per head) apart from ``head_size`` (V per head): the low-rank-bottleneck knob.
* ``rope``: rotary positions, ``"1d"`` (token index) or ``"2d"`` ((x, y) given per token).
* ``attention_scale="entropy_invariant"``: logits scaled by log(n)/log(L)/sqrt(key_size), n the
  number of keys each query may attend to (at least 16, as bert4keras' ``softmax_plus``) and L
  the ``scale_length`` (512), so the attention entropy stays put when inputs are longer than in
  training. ``"log_n"`` is its form for a model trained with the plain scale: the factor is
  max(1, log(n)/log(L)), 1 up to the training length L and growing only past it.
* ``rope_base``: the base of the rotary frequencies (10000; larger for NTK-aware scaling, see
  :func:`~bert4x.layers.rotary.ntk_scaled_base`).
* ``talking_heads``: learned h×h mixing of the heads' logits before the softmax and of their
  probabilities after it (Shazeer et al. 2020); both start as the identity.
* ``residual_scores`` (RealFormer): the layer adds the previous layer's pre-softmax scores to its
  own and returns its scores for the next layer.

For incremental decoding the call also takes a key/value ``cache``: the new tokens' keys and
values are written into it at ``cache_index`` and the queries attend over the whole cache, so a
generated token costs one position instead of the whole prefix.
"""

import math

import keras
from keras import ops

from bert4x.layers.rotary import apply_rotary, apply_rotary_2d


def write_cache(cache, new, index, axis=1):
    """``cache`` with ``new`` written from slot ``index`` of its slot ``axis`` (``new`` has the
    cache's shape but for n slots there)."""
    start = [0] * len(cache.shape)
    start[axis] = index
    return ops.slice_update(cache, tuple(start), ops.cast(new, cache.dtype))


def heads_first(x):
    """[batch, n, heads, size] -> [batch, heads, n, size], the layout of the batched matmuls."""
    return ops.transpose(x, (0, 2, 1, 3))


#: Logit given to masked positions: exp() of it underflows to exactly 0 in float32.
MASKED_LOGIT = -1e9
ROPES = (None, "1d", "2d")
#: "none" leaves logits unscaled: T5 folds the 1/√d into its initialisation.
SCALES = ("sqrt", "entropy_invariant", "log_n", "none")
#: Training length the entropy-invariant scale is anchored to, and its floor on the key count.
ENTROPY_BASE_LENGTH = 512
ENTROPY_MIN_KEYS = 16


def entropy_invariant_factor(attended, length=ENTROPY_BASE_LENGTH):
    """log(max(n, 16)) / log(length) for key counts ``n`` (1 at n = length)."""
    attended = ops.maximum(ops.cast(attended, "float32"), float(ENTROPY_MIN_KEYS))
    return ops.log(attended) / math.log(length)


def check_length_options(rope_base, scale_length):
    """Refuse a RoPE base or a scale anchor length that no formula can use."""
    if not rope_base > 1:
        raise ValueError(f"rope_base must be > 1, got {rope_base!r}")
    if int(scale_length) != scale_length or scale_length < 2:
        raise ValueError(f"scale_length must be an integer >= 2, got {scale_length!r}")


def length_factor(attention_scale, attended, length):
    """What the 1/√d scale is multiplied by for ``attended`` keys [..., 1]: the entropy-
    invariant factor, its log-n form max(1, log n / log length), or None for the plain scale."""
    if attention_scale == "entropy_invariant":
        return entropy_invariant_factor(attended, length)
    if attention_scale == "log_n":
        attended = ops.maximum(ops.cast(attended, "float32"), 1.0)
        return ops.maximum(ops.log(attended) / math.log(length), 1.0)
    return None


@keras.saving.register_keras_serializable(package="bert4x")
class MultiHeadAttention(keras.layers.Layer):
    """``softmax(Q Kᵀ · scale + bias, masked) V`` over ``heads`` heads, plus the options above.

    Call with ``query`` and optionally ``key``/``value`` (self-attention when omitted),
    ``attention_mask`` (bool, broadcastable to [batch, heads, q, k], True = may attend),
    ``attention_bias`` (added to the logits), ``positions`` ([batch, n, 2], needed by 2D RoPE)
    and, with ``residual_scores``, ``previous_scores`` (None for the first layer). With
    ``residual_scores`` the call returns ``(output, scores)``. Logits and softmax run in float32.
    ``relative_positions`` ([q, k, key_size], NEZHA's :class:`RelativePositionEmbedding`) adds
    ``q·r_ij`` to each logit before scaling and ``Σ_j p_ij r_ij`` to each head's output, as in
    Shaw et al. (2018); it needs ``head_size == key_size``.

    Cross-attention over a fixed source: ``key_value=project_key_value(source)``, computed once,
    replaces the key and value projections at every call.

    Incremental decoding: ``cache=(keys, values)`` of shapes [batch, heads, max_len, key_size]
    and [batch, heads, max_len, head_size] (heads first, so a step's matmuls read the cache
    where it lies rather than transposing all of it; :meth:`cache_shapes`), ``cache_index``
    (scalar: where the new tokens go) and, for 1D RoPE, ``positions`` ([batch, n] token
    positions). The attention mask then covers the whole cache ([batch, 1, n, max_len]) and
    the updated ``keys, values`` are appended to the returned tuple.
    """

    def __init__(self, heads, head_size, key_size=None, out_dim=None, use_bias=True,
                 attention_dropout=0.0, rope=None, attention_scale="sqrt", talking_heads=False,
                 residual_scores=False, kernel_initializer="glorot_uniform", rope_base=10000.0,
                 scale_length=ENTROPY_BASE_LENGTH, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its query
        rope = {True: "1d", False: None}.get(rope, rope)
        if rope not in ROPES:
            raise ValueError(f"rope must be one of {ROPES}, got {rope!r}")
        if attention_scale not in SCALES:
            raise ValueError(f"attention_scale must be one of {SCALES}, got {attention_scale!r}")
        check_length_options(rope_base, scale_length)
        self.heads = heads
        self.head_size = head_size
        self.key_size = key_size or head_size
        multiple = {"1d": 2, "2d": 4}.get(rope)
        if multiple and self.key_size % multiple:
            raise ValueError(f"rope={rope!r} needs a per-head key size divisible by {multiple}, "
                             f"got {self.key_size}")
        self.out_dim = out_dim
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout
        self.rope = rope
        self.rope_base = float(rope_base)
        self.attention_scale = attention_scale
        self.scale_length = int(scale_length)
        self.talking_heads = talking_heads
        self.residual_scores = residual_scores
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
        if self.talking_heads:
            self.logits_mixing = self.add_weight(
                name="logits_mixing", shape=(self.heads, self.heads), initializer="identity")
            self.probs_mixing = self.add_weight(
                name="probs_mixing", shape=(self.heads, self.heads), initializer="identity")
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def _dense(self, units, name):
        return keras.layers.Dense(
            units, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name=name,
        )

    def _split_heads(self, x, size):
        # The length as -1, not shape(x)[1]: tf2onnx's reshape optimizer rewrites
        # (batch, length, heads, size) from the dense layer's flattened input and the ONNX model
        # fails at run time (tests/test_export.py).
        return ops.reshape(x, (ops.shape(x)[0], -1, self.heads, size))

    def _rotate(self, x, positions):
        if self.rope == "1d":
            positions = ops.arange(ops.shape(x)[1]) if positions is None else positions
            return apply_rotary(x, positions, self.rope_base)
        if positions is None:
            raise ValueError(f"{self.name}: rope='2d' needs positions, an (x, y) pair per token "
                             "([batch, n, 2])")
        return apply_rotary_2d(x, positions, self.rope_base)

    def _scale(self, logits, attention_mask):
        if self.attention_scale == "none":
            return logits
        scale = self.key_size ** -0.5
        if self.attention_scale == "sqrt":
            return logits * scale
        if attention_mask is None:
            attended = ops.shape(logits)[-1]
        else:
            attended = ops.sum(ops.cast(attention_mask, "float32"), axis=-1, keepdims=True)
        return logits * (scale * length_factor(self.attention_scale, attended, self.scale_length))

    def _mix_heads(self, x, mixing):
        # [b, h, q, k] -> [b, g, q, k]: out[g] = sum_h x[h] * mixing[h, g]
        return ops.einsum("bhqk,hg->bgqk", x, ops.cast(mixing, x.dtype))

    def project_key_value(self, key, value=None, positions=None):
        """Keys [batch, heads, n, key_size] and values [batch, heads, n, head_size], as
        :meth:`call` computes them: what cross-attention over a fixed source passes back as
        ``key_value``. The keys are rotated when the layer has RoPE (at ``positions``)."""
        value = key if value is None else value
        keys = self._split_heads(self.key_dense(key), self.key_size)
        if self.rope is not None:
            keys = self._rotate(keys, positions)
        return heads_first(keys), heads_first(self._split_heads(self.value_dense(value),
                                                                self.head_size))

    def call(self, query, key=None, value=None, attention_mask=None, attention_bias=None,
             positions=None, previous_scores=None, relative_positions=None, key_value=None,
             cache=None, cache_index=None, training=None):
        if relative_positions is not None and self.head_size != self.key_size:
            raise ValueError(f"{self.name}: relative positions are added to keys and values "
                             f"alike, so head_size ({self.head_size}) must equal key_size "
                             f"({self.key_size})")
        q = self._split_heads(self.query_dense(query), self.key_size)
        if self.rope is not None:
            q = self._rotate(q, positions)
        if key_value is None:
            key_value = self.project_key_value(query if key is None else key, value, positions)
        k, v = key_value
        if cache is not None:
            k, v = (write_cache(stored, new, cache_index, axis=2)
                    for stored, new in zip(cache, (k, v)))
        # Keras' TF einsum is measurably slower than transposes + batched matmul on CPU. The
        # keys' swapped axes fold into the matmul (grappler, XLA), so no copy of them is made.
        logits = ops.matmul(heads_first(q), ops.swapaxes(k, -1, -2))
        if relative_positions is not None:
            logits = logits + ops.einsum("bqhd,qkd->bhqk", q, relative_positions)
        logits = self._scale(ops.cast(logits, "float32"), attention_mask)
        if attention_bias is not None:
            logits = logits + ops.cast(attention_bias, "float32")
        if previous_scores is not None:
            logits = logits + previous_scores
        scores = logits
        if self.talking_heads:
            logits = self._mix_heads(logits, self.logits_mixing)
        if attention_mask is not None:
            logits = ops.where(attention_mask, logits, MASKED_LOGIT)
        probs = ops.softmax(logits, axis=-1)
        if self.talking_heads:
            probs = self._mix_heads(probs, self.probs_mixing)
        probs = self.dropout(ops.cast(probs, v.dtype), training=training)
        context = ops.swapaxes(ops.matmul(probs, v), 1, 2)  # tokens first again
        if relative_positions is not None:
            context = context + ops.einsum("bhqk,qkd->bqhd", probs, relative_positions)
        batch, length = ops.shape(context)[0], ops.shape(context)[1]
        context = ops.reshape(context, (batch, length, self.heads * self.head_size))
        outputs = (self.output_dense(context),)
        if self.residual_scores:
            outputs += (scores,)
        if cache is not None:
            outputs += (k, v)
        return outputs if len(outputs) > 1 else outputs[0]

    def cache_shapes(self):
        """Per-row shapes of the cached keys and values, ``None`` where the slots go."""
        return (self.heads, None, self.key_size), (self.heads, None, self.head_size)

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
            "rope_base": self.rope_base,
            "attention_scale": self.attention_scale,
            "scale_length": self.scale_length,
            "talking_heads": self.talking_heads,
            "residual_scores": self.residual_scores,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
