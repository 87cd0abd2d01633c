"""Token and learned absolute position embeddings."""

import functools

import keras
from keras import ops

from bert4x.input_checks import check_less


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
class EmbeddingSum(keras.layers.Add):
    """``Add`` whose output keeps the padding mask of the inputs that have one.

    Keras 3's ``Add`` drops the mask when any input lacks one; token plus segment embeddings
    would then lose the tokens' padding mask (Keras 2 and-ed the masks present, which is what
    bert4keras models relied on).
    """

    def compute_mask(self, inputs, mask=None):
        masks = [m for m in (mask or []) if m is not None]
        return functools.reduce(ops.logical_and, masks) if masks else None
