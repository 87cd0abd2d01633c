"""Token and learned absolute position embeddings."""

import keras
from keras import ops

from bert4x.input_checks import check_less


@keras.saving.register_keras_serializable(package="bert4x")
class TokenEmbedding(keras.layers.ReversibleEmbedding):
    """Keras' reversible (tied) embedding that refuses ids outside ``[0, input_dim)``.

    Called with ``reverse=True`` it projects hidden states back onto the vocabulary, which is how
    the MLM head shares the input embedding matrix.
    """

    def call(self, inputs, reverse=False):
        if not reverse:
            inputs = check_less(
                inputs, self.input_dim,
                f"{self.name}: an input id is negative or >= the vocabulary size {self.input_dim}",
            )
        return super().call(inputs, reverse=reverse)

    def compute_mask(self, inputs, mask=None):
        # Padding is handled by explicit attention masks; Keras masks would only add overhead.
        return None


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
