"""Position-wise feed-forward block."""

import keras

from bert4x.layers import activations


@keras.saving.register_keras_serializable(package="bert4x")
class FeedForward(keras.layers.Layer):
    """``Dense(units, activation) -> Dense(input_dim)``; sub-layers ``intermediate`` and ``output``."""

    def __init__(self, units, activation="gelu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its input
        self.units = units
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.intermediate_dense = keras.layers.Dense(
            self.units, activation=activations.get(self.activation), use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, name="intermediate",
            dtype=self.dtype_policy,
        )
        self.output_dense = keras.layers.Dense(
            input_shape[-1], use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            name="output", dtype=self.dtype_policy,
        )
        self.intermediate_dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.units))

    def call(self, inputs):
        return self.output_dense(self.intermediate_dense(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
