"""Token embeddings, learned absolute positions and NEZHA's functional relative positions."""

import functools
import math

import keras
import numpy as np
from keras import ops

from bert4x.input_checks import check_less
from bert4x.layers.rotary import rotary_frequencies


@keras.saving.register_keras_serializable(package="bert4x")
class TokenEmbedding(keras.layers.ReversibleEmbedding):
    """Keras' reversible (tied) embedding that refuses ids outside ``[0, input_dim)``.

    Called with ``reverse=True`` it projects hidden states back onto the vocabulary, which is how
    the MLM head shares the input embedding matrix.

    With ``mask_zero=True`` the output carries Keras' padding mask (id 0 is padding), so that
    layers and loss code downstream see which positions are real; in reverse mode the mask of
    the hidden states passes through to the logits.

    The reverse projection computes in float32 even under a mixed policy: bfloat16 logits are
    spaced 0.125 apart near 20, coarse enough to reorder close beams and flip answers.
    """

    def __init__(self, *args, reverse_dtype="float32", **kwargs):
        super().__init__(*args, reverse_dtype=reverse_dtype, **kwargs)

    def call(self, inputs, reverse=False):
        if not reverse:
            inputs = check_less(
                inputs, self.input_dim,
                f"{self.name}: an input id is negative or >= the vocabulary size {self.input_dim}",
            )
        return super().call(inputs, reverse=reverse)

    def compute_mask(self, inputs, mask=None):
        if "float" in str(inputs.dtype):  # reverse mode: hidden states in, logits out
            return mask
        return ops.not_equal(inputs, 0) if self.mask_zero else None


@keras.saving.register_keras_serializable(package="bert4x")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions (BERT): returns ``inputs + table[:seq_len]``, or
    ``inputs + table[positions]`` when token positions ([batch, n]) are given, as in incremental
    decoding.

    Sequences longer than the table raise an error naming ``max_position_embeddings`` rather than
    failing inside a slice.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its input
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, positions=None):
        if positions is None:
            positions = ops.arange(ops.shape(inputs)[1], dtype="int32")[None]
        positions = check_less(
            ops.cast(positions, "int32"), self.input_dim,
            f"{self.name}: sequence is longer than max_position_embeddings={self.input_dim}",
        )
        table = ops.take(self.embeddings, positions, axis=0)
        return inputs + ops.cast(table, inputs.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


def relative_distances(inputs, positions=None, key_length=None, keys=None):
    """``key position - query position`` [q, k] for the tokens of ``inputs`` [batch, n, ...]
    against themselves, or against ``keys`` [batch, m, ...] (cross-attention); in a decoding
    step, for the new tokens at ``positions`` ([n], or [batch, n] the same in every row)
    against ``key_length`` slots."""
    if positions is None:
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32")
    elif len(positions.shape) == 2:
        positions = positions[0]
    if key_length is None:
        key_length = ops.shape(inputs if keys is None else keys)[1]
    return ops.arange(key_length, dtype="int32")[None, :] - ops.cast(positions, "int32")[:, None]


@keras.saving.register_keras_serializable(package="bert4x")
class RelativePositionEmbedding(keras.layers.Layer):
    """NEZHA's functional relative positions (Shaw et al. 2018 with a fixed table): for query
    position i and key position j, row ``clip(j - i, ±max_distance) + max_distance`` of a
    sinusoid table of ``2·max_distance + 1`` rows, ``[sin(p·θ₀), cos(p·θ₀), sin(p·θ₁), ...]``
    with θ_k = 10000^(-2k/output_dim). The table is computed, not learned, so it has no weight.

    ``call(inputs)`` gives [n, n, output_dim] for a sequence of n tokens; in a decoding step,
    ``positions`` ([n] or [batch, n], the same in every row) and ``key_length`` (the cache's
    size) give the new queries' rows against every cached key.
    """

    def __init__(self, max_distance, output_dim, **kwargs):
        super().__init__(**kwargs)
        if output_dim % 2:
            raise ValueError(f"relative position embeddings need an even size, got {output_dim}")
        self.max_distance = max_distance
        self.output_dim = output_dim
        angles = np.arange(2 * max_distance + 1)[:, None] * rotary_frequencies(output_dim)[None]
        self.table = np.stack([np.sin(angles), np.cos(angles)], -1).reshape(
            2 * max_distance + 1, output_dim).astype("float32")

    def call(self, inputs, positions=None, key_length=None):
        distance = relative_distances(inputs, positions, key_length)
        rows = ops.clip(distance, -self.max_distance, self.max_distance) + self.max_distance
        return ops.cast(ops.take(ops.convert_to_tensor(self.table), rows, axis=0),
                        self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "max_distance": self.max_distance,
                "output_dim": self.output_dim}


@keras.saving.register_keras_serializable(package="bert4x")
class RelativePositionBias(keras.layers.Layer):
    """T5's learned relative attention bias: one scalar per head for each bucket of the
    distance ``key - query``. Distances below half the buckets (of each direction, when
    ``bidirectional``) get a bucket each; longer ones share log-spaced buckets up to
    ``max_distance``, beyond which all share the last. A decoder's buckets
    (``bidirectional=False``) only count keys before the query.

    ``call(inputs)`` gives the bias [1, heads, n, n] for n tokens; in a decoding step
    ``positions`` and ``key_length`` give the new queries against every cache slot (as
    :class:`RelativePositionEmbedding`), and for cross-attention ``key_length`` alone sets the
    keys' count.
    """

    def __init__(self, heads, num_buckets=32, max_distance=128, bidirectional=True,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.num_buckets, self.heads),
                                          initializer=self.embeddings_initializer)

    def bucket(self, distance):
        """Bucket ids for integer ``distance`` = key position - query position."""
        buckets = self.num_buckets
        offset = 0
        if self.bidirectional:
            buckets //= 2
            offset = ops.cast(distance > 0, "int32") * buckets
            distance = ops.abs(distance)
        else:
            distance = ops.maximum(-distance, 0)
        exact = buckets // 2
        far = ops.log(ops.cast(ops.maximum(distance, 1), "float32") / exact) / math.log(
            self.max_distance / exact) * (buckets - exact)
        far = ops.minimum(exact + ops.cast(far, "int32"), buckets - 1)
        return offset + ops.where(distance < exact, distance, far)

    def call(self, inputs, positions=None, key_length=None, keys=None):
        distance = relative_distances(inputs, positions, key_length, keys)
        bias = ops.take(self.embeddings, self.bucket(distance), axis=0)  # [q, k, heads]
        return ops.transpose(bias, (2, 0, 1))[None]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "num_buckets": self.num_buckets,
                "max_distance": self.max_distance, "bidirectional": self.bidirectional,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer)}


@keras.saving.register_keras_serializable(package="bert4x")
class EmbeddingSum(keras.layers.Add):
    """``Add`` whose output keeps the padding mask of the inputs that have one.

    Keras 3's ``Add`` drops the mask when any input lacks one; token plus segment embeddings
    would then lose the tokens' padding mask (Keras 2 and-ed the masks present, which is what
    bert4keras models relied on).
    """

    def compute_mask(self, inputs, mask=None):
        masks = [m for m in (mask or []) if m is not None]
        return functools.reduce(ops.logical_and, masks) if masks else None
