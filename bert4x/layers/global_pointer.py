"""Span scoring heads for entity and relation extraction (Su 2021, GlobalPointer / GPLinker).

A head scores every token pair (i, j): ``s(i, j) = q_iᵀ k_j / √d`` with RoPE on q and k, so the
score knows the distance between i and j. ``GlobalPointer`` has its own q/k per head;
``EfficientGlobalPointer`` shares one q/k across heads and adds per-head start and end biases
(``s_h(i, j) = q_iᵀ k_j / √d + b_h^start(i) + b_h^end(j)``), which scales to many heads.
Padding rows/columns (and, with ``tril_mask``, pairs with i > j: an end before its start) get
``-MASKED`` so they never count as positives.

Trained with the sparse multilabel categorical cross-entropy below: per head,
``log(1 + Σ_{neg} e^{s}) + log(1 + Σ_{pos} e^{−s})``, positives given as flat indices
``i · n + j``, so the dense n × n targets are never built.
"""

import keras
from keras import ops

from bert4x.layers.renamed import accepts_bert4keras_names
from bert4x.layers.rotary import apply_rotary

#: Score given to impossible pairs: exp(-1e12) is exactly 0, and it stays finite.
MASKED = 1e12


def _mask_pairs(logits, mask, tril_mask):
    """Masked logits [b, h, n, n] for padding (``mask`` [b, n], True = token) and i > j."""
    if mask is not None:
        mask = ops.cast(mask, logits.dtype)
        pair = mask[:, None, :, None] * mask[:, None, None, :]
        logits = logits * pair - (1.0 - pair) * MASKED
    if tril_mask:
        n = ops.shape(logits)[-1]
        below = ops.cast(ops.tril(ops.ones((n, n)), -1), logits.dtype)
        logits = logits - below * MASKED
    return logits


@keras.saving.register_keras_serializable(package="bert4x")
@accepts_bert4keras_names(RoPE="rope")
class GlobalPointer(keras.layers.Layer):
    """Scores [batch, heads, n, n] for ``heads`` span types over hidden states [batch, n, d].

    Call with ``mask`` (bool [batch, n], True for real tokens) to mask padding.
    """

    def __init__(self, heads, head_size, rope=True, tril_mask=True, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if rope and head_size % 2:
            raise ValueError(f"RoPE needs an even head_size, got {head_size}")
        self.heads, self.head_size = heads, head_size
        self.rope, self.tril_mask, self.use_bias = rope, tril_mask, use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.dense = keras.layers.Dense(self.heads * 2 * self.head_size, use_bias=self.use_bias,
                                        kernel_initializer=self.kernel_initializer, name="dense",
                                        dtype=self.dtype_policy)
        self.dense.build(input_shape)

    def _rotate(self, x):
        return apply_rotary(x, ops.arange(ops.shape(x)[1])) if self.rope else x

    def call(self, inputs, mask=None):
        batch, n = ops.shape(inputs)[0], ops.shape(inputs)[1]
        projected = ops.reshape(self.dense(inputs), (batch, n, self.heads, 2 * self.head_size))
        q = self._rotate(projected[..., :self.head_size])
        k = self._rotate(projected[..., self.head_size:])
        logits = ops.einsum("bmhd,bnhd->bhmn", q, k) / self.head_size ** 0.5
        return _mask_pairs(ops.cast(logits, "float32"), mask, self.tril_mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_size": self.head_size,
                "rope": self.rope, "tril_mask": self.tril_mask, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="bert4x")
class EfficientGlobalPointer(GlobalPointer):
    """GlobalPointer with q/k shared by all heads plus per-head start/end biases."""

    def build(self, input_shape):
        dense = dict(use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                     dtype=self.dtype_policy)
        self.dense = keras.layers.Dense(2 * self.head_size, name="dense", **dense)
        self.dense.build(input_shape)
        self.bias_dense = keras.layers.Dense(2 * self.heads, name="bias_dense", **dense)
        self.bias_dense.build((*input_shape[:-1], 2 * self.head_size))

    def call(self, inputs, mask=None):
        projected = self.dense(inputs)
        q = self._rotate(projected[..., None, :self.head_size])[:, :, 0]
        k = self._rotate(projected[..., None, self.head_size:])[:, :, 0]
        shared = ops.einsum("bmd,bnd->bmn", q, k) / self.head_size ** 0.5
        bias = ops.transpose(self.bias_dense(projected), (0, 2, 1)) / 2  # [b, 2h, n]
        start, end = bias[:, :self.heads], bias[:, self.heads:]
        logits = shared[:, None] + start[:, :, :, None] + end[:, :, None, :]
        return _mask_pairs(ops.cast(logits, "float32"), mask, self.tril_mask)


def sparse_multilabel_crossentropy(positives, logits, mask_zero=True):
    """Multilabel softmax cross-entropy with sparse targets.

    ``logits`` [..., C]; ``positives`` int [..., k]: the classes that are positive, padded with
    index 0 when ``mask_zero`` (class 0 must then never be a real positive: for flattened span
    scores it is the pair ([CLS], [CLS])). Returns ``log(1 + Σ_{c∉pos} e^{s_c}) +
    log(1 + Σ_{c∈pos} e^{−s_c})`` per row [...].

    The negative term is computed as "all classes minus the positives": log Σ_all −
    log(1 − Σ_pos / Σ_all), which needs no dense target tensor.
    """
    logits = ops.cast(logits, "float32")
    positives = ops.cast(positives, "int32")
    zeros = ops.zeros_like(logits[..., :1])
    if mask_zero:
        # Padding indices read class 0: +inf makes it vanish from Σ_pos e^{−s} ...
        ignored_in_pos = ops.concatenate([zeros + MASKED, logits[..., 1:]], axis=-1)
        pos_scores = ops.take_along_axis(ignored_in_pos, positives, axis=-1)
        # ... and -inf makes it vanish from Σ_pos e^{s} (class 0's real score stays in "all").
        ignored_in_neg = ops.concatenate([zeros - MASKED, logits[..., 1:]], axis=-1)
        pos_for_neg = ops.take_along_axis(ignored_in_neg, positives, axis=-1)
    else:
        pos_scores = pos_for_neg = ops.take_along_axis(logits, positives, axis=-1)
    positive_loss = ops.logsumexp(ops.concatenate([zeros, -pos_scores], axis=-1), axis=-1)
    all_term = ops.logsumexp(ops.concatenate([zeros, logits], axis=-1), axis=-1)
    positive_share = ops.logsumexp(pos_for_neg, axis=-1) - all_term
    remaining = ops.clip(1.0 - ops.exp(positive_share), keras.backend.epsilon(), 1.0)
    return positive_loss + all_term + ops.log(remaining)


def multilabel_crossentropy(targets, logits):
    """The dense form of :func:`sparse_multilabel_crossentropy`: ``targets`` [..., C] in
    [0, 1] (1 for a positive class); logits of ``-inf`` are classes that do not exist. Returns
    ``log(1 + Σ_neg e^{s}) + log(1 + Σ_pos e^{−s})`` per row, with each class weighted into
    both sums by its target (``log t`` and ``log(1 − t)`` added to its score)."""
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    exists = ops.not_equal(logits, -float("inf"))
    negatives = ops.where(exists, logits, -float("inf")) + ops.log(1.0 - targets)
    positives = ops.where(exists, -logits, -float("inf")) + ops.log(targets)
    zeros = ops.zeros_like(logits[..., :1])
    return (ops.logsumexp(ops.concatenate([negatives, zeros], axis=-1), axis=-1)
            + ops.logsumexp(ops.concatenate([positives, zeros], axis=-1), axis=-1))
