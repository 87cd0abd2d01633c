"""Tag-sequence layers for sequence labelling: a linear-chain CRF and a bidirectional MEMM.

Both are identity layers on per-token tag scores [batch, n, tags] that own a learned transition
matrix and supply the loss and accuracy to compile with, as bert4keras' layers of these names
do. The layer writes -inf into padded positions (from the Keras padding mask of its input), so
the loss finds the real positions from the scores alone and needs no mask argument.

CRF (Lafferty et al. 2001): the score of a path y is ``Σ_t e_t[y_t] + Σ_t T[y_t, y_{t+1}]``;
the loss is ``log Σ_y' exp score(y') - score(y)``, the normaliser computed by the forward
recursion ``α_t = logsumexp_i(α_{t-1}[i] + T[i, :]) + e_t``. Decoding is Viterbi
(:class:`bert4x.snippets.ViterbiDecoder` on ``layer.trans``).

MEMM: each position's tag distribution is ``softmax((e_t + T[y_{t-1}]) / 2)``, averaged over
the left-to-right and right-to-left directions (with ``hidden_dim``, T is the low-rank
``L Rᵀ``). Cheaper than a CRF: no normaliser over paths.

``lr_multiplier`` stores the transitions divided by it and uses them multiplied by it, so the
optimiser moves them ``lr_multiplier`` times faster than the rest of the model.
"""

from __future__ import annotations

import keras
from keras import ops


def _real_positions(scores):
    """[batch, n] bool: positions the layer did not mask with -inf."""
    return ops.all(ops.not_equal(scores, -float("inf")), axis=-1)


def _tag_ids(y_true, scores):
    """Sparse labels in the shape [batch, n] of ``scores`` without its tag axis, as int32:
    Keras hands a loss ``y_true`` cast to float and with a trailing axis added."""
    return ops.cast(ops.reshape(y_true, ops.shape(scores)[:-1]), "int32")


def _masked_mean(values, mask):
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


class _TransitionLayer(keras.layers.Layer):
    """Shared by both layers: the -inf masking, the scaled transitions, the one-hot forms.
    Subclasses give ``sparse_loss`` and ``sparse_accuracy``."""

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be above 0, got {lr_multiplier}")
        self.lr_multiplier = lr_multiplier

    def _transition_weight(self, name, shape):
        scale = 1.0 / self.lr_multiplier
        return self.add_weight(
            name=name, shape=shape,
            initializer=lambda s, dtype=None: keras.initializers.GlorotUniform()(s, dtype) * scale)

    def _scaled(self, weight):
        return weight * self.lr_multiplier if self.lr_multiplier != 1 else weight

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs
        return ops.where(ops.cast(mask, "bool")[..., None], inputs, -float("inf"))

    def compute_mask(self, inputs, mask=None):
        return None  # the padding now lives in the scores (-inf)

    def compute_output_shape(self, input_shape):
        return input_shape

    def dense_accuracy(self, y_true, y_pred):
        """:meth:`sparse_accuracy` for one-hot ``y_true``."""
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)

    def dense_loss(self, y_true, y_pred):
        """:meth:`sparse_loss` for one-hot ``y_true``."""
        return self.sparse_loss(ops.argmax(y_true, axis=-1), y_pred)

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}


@keras.saving.register_keras_serializable(package="bert4x")
class ConditionalRandomField(_TransitionLayer):
    """Linear-chain CRF on tag scores; compile with ``loss=crf.sparse_loss`` (integer tags) or
    ``crf.dense_loss`` (one-hot), ``metrics=[crf.sparse_accuracy]``."""

    def build(self, input_shape):
        tags = input_shape[-1]
        self._trans = self._transition_weight("trans", (tags, tags))

    @property
    def trans(self):
        """The transition scores T[from, to] the model uses."""
        return self._scaled(self._trans)

    def path_score(self, tags, scores, mask):
        """Score of the tag path ``tags`` [batch, n] (masked positions contribute nothing)."""
        one_hot = ops.one_hot(tags, ops.shape(scores)[-1], dtype=scores.dtype)
        one_hot = one_hot * ops.cast(mask, scores.dtype)[..., None]
        emissions = ops.sum(one_hot * ops.where(mask[..., None], scores, 0.0), axis=(1, 2))
        trans = ops.cast(self.trans, scores.dtype)
        transitions = ops.einsum("bni,ij,bnj->b", one_hot[:, :-1], trans, one_hot[:, 1:])
        return emissions + transitions

    def log_normalizer(self, scores, mask):
        """``log Σ_paths exp score`` by the forward recursion, over real positions."""
        trans = ops.cast(self.trans, scores.dtype)
        scores = ops.where(mask[..., None], scores, 0.0)
        if scores.shape[1] == 1:  # no step to scan (Keras' PyTorch scan fails on zero steps)
            return ops.logsumexp(scores[:, 0], axis=-1)

        def step(alpha, inputs):
            emission, real = inputs[:, :-1], inputs[:, -1:] > 0
            advanced = ops.logsumexp(alpha[:, :, None] + trans[None], axis=1) + emission
            alpha = ops.where(real, advanced, alpha)
            return alpha, alpha  # scan wants a per-step output (TF refuses None)

        # One scanned tensor, the mask as a last channel: Keras' TF scan fails on several
        # sequences of unknown length.
        steps = ops.concatenate([scores, ops.cast(mask, scores.dtype)[..., None]], axis=-1)
        alpha, _ = ops.scan(step, scores[:, 0], ops.moveaxis(steps[:, 1:], 1, 0))
        return ops.logsumexp(alpha, axis=-1)

    def sparse_loss(self, y_true, y_pred):
        """``-log p(y | x)`` per sequence for integer tags ``y_true`` [batch, n]."""
        mask = _real_positions(y_pred)
        tags = _tag_ids(y_true, y_pred)
        return self.log_normalizer(y_pred, mask) - self.path_score(tags, y_pred, mask)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the best tag at each real position (greedy: a training metric;
        decode with Viterbi for the answer)."""
        tags, mask = _tag_ids(y_true, y_pred), _real_positions(y_pred)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        return _masked_mean(ops.cast(ops.equal(tags, predicted), "float32"), mask)


@keras.saving.register_keras_serializable(package="bert4x")
class MaximumEntropyMarkovModel(_TransitionLayer):
    """Bidirectional MEMM on tag scores; ``hidden_dim`` factorises the transitions as
    ``L Rᵀ`` (weights ``l_trans``/``r_trans``, each [tags, hidden_dim]). Compile with
    ``loss=memm.sparse_loss``; decode with Viterbi on :attr:`trans`."""

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(lr_multiplier, **kwargs)
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        tags = input_shape[-1]
        if self.hidden_dim is None:
            self._trans = self._transition_weight("trans", (tags, tags))
        else:
            self._l_trans = self._transition_weight("l_trans", (tags, self.hidden_dim))
            self._r_trans = self._transition_weight("r_trans", (tags, self.hidden_dim))

    @property
    def trans(self):
        """The transition scores T[from, to] (``L Rᵀ`` when factorised)."""
        if self.hidden_dim is None:
            return self._scaled(self._trans)
        return ops.matmul(self._scaled(self._l_trans), ops.transpose(self._scaled(self._r_trans)))

    def _direction_scores(self, tags, scores, mask, backwards):
        """Scores ``(e_t + T[y_{t-1}]) / 2`` in one direction, with its tags and mask (the
        right-to-left direction reverses each sequence's real part and transposes T)."""
        if backwards:
            order = _reversed_positions(mask)
            tags = ops.take_along_axis(tags, order, axis=1)
            scores = ops.take_along_axis(scores, order[..., None], axis=1)
        trans = ops.cast(self.trans, scores.dtype)
        history = ops.take(ops.transpose(trans) if backwards else trans, tags, axis=0)
        history = ops.concatenate([scores[:, :1], history[:, :-1]], axis=1)
        return tags, ops.where(mask[..., None], (scores + history) / 2, 0.0)

    def sparse_loss(self, y_true, y_pred):
        """Mean token cross-entropy over real positions, averaged over both directions."""
        mask, tags = _real_positions(y_pred), _tag_ids(y_true, y_pred)
        losses = []
        for backwards in (False, True):
            direction_tags, logits = self._direction_scores(tags, y_pred, mask, backwards)
            loss = keras.losses.sparse_categorical_crossentropy(direction_tags, logits,
                                                                from_logits=True)
            losses.append(_masked_mean(loss, mask))
        return (losses[0] + losses[1]) / 2

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy over real positions, averaged over both directions."""
        mask, tags = _real_positions(y_pred), _tag_ids(y_true, y_pred)
        accuracies = []
        for backwards in (False, True):
            direction_tags, logits = self._direction_scores(tags, y_pred, mask, backwards)
            right = ops.equal(direction_tags, ops.cast(ops.argmax(logits, axis=-1), "int32"))
            accuracies.append(_masked_mean(ops.cast(right, "float32"), mask))
        return (accuracies[0] + accuracies[1]) / 2

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}


def _reversed_positions(mask):
    """[batch, n] gather indices that reverse each row's real (leading) positions and keep
    the padding after them in place, as ``tf.reverse_sequence``."""
    n = ops.shape(mask)[1]
    lengths = ops.sum(ops.cast(mask, "int32"), axis=1, keepdims=True)
    positions = ops.arange(n, dtype="int32")[None]
    return ops.where(positions < lengths, lengths - 1 - positions, positions)
