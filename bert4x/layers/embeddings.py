"""Token embeddings, learned absolute positions and NEZHA's functional relative positions."""

import functools

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
    """

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
        if positions is None:
            positions = ops.arange(ops.shape(inputs)[1], dtype="int32")
        elif len(positions.shape) == 2:
            positions = positions[0]
        key_length = ops.shape(inputs)[1] if key_length is None else key_length
        distance = (ops.arange(key_length, dtype="int32")[None, :]
                    - ops.cast(positions, "int32")[:, None])
        rows = ops.clip(distance, -self.max_distance, self.max_distance) + self.max_distance
        return ops.cast(ops.take(ops.convert_to_tensor(self.table), rows, axis=0),
                        self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "max_distance": self.max_distance,
                "output_dim": self.output_dim}


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
