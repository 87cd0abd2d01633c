"""Small output pieces: the [CLS] pooler and the MLM output bias."""

import keras


@keras.saving.register_keras_serializable(package="bert4x")
class Pooler(keras.layers.Layer):
    """BERT's pooler: ``tanh(W h[CLS] + b)`` on the first position; sub-layer ``dense``."""

    def __init__(self, units, activation="tanh", kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.dense = keras.layers.Dense(
            self.units, activation=self.activation, kernel_initializer=self.kernel_initializer,
            name="dense", dtype=self.dtype_policy,
        )
        self.dense.build((input_shape[0], input_shape[-1]))

    def call(self, inputs):
        return self.dense(inputs[:, 0])

    def compute_mask(self, inputs, mask=None):
        return None  # one vector per sequence: no positions left to mask

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="bert4x")
class BiasAdd(keras.layers.Layer):
    """Adds a trainable bias over the last axis (the MLM output bias over the vocabulary)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape
