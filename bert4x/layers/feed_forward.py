"""Position-wise feed-forward block."""

import keras

from bert4x.layers import activations
from bert4x.layers.rows import dense_on_rows


@keras.saving.register_keras_serializable(package="bert4x")
class FeedForward(keras.layers.Layer):
    """``Dense(units, activation) -> Dense(input_dim)``; sub-layers ``intermediate`` and ``output``.

    ``gated=True`` is the gated linear unit of T5.1.1 and mT5 (Shazeer 2020):
    ``output(activation(intermediate(x)) * gate(x))``, with a third sub-layer ``gate``."""

    def __init__(self, units, activation="gelu", use_bias=True,
                 kernel_initializer="glorot_uniform", gated=False, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # keeps the padding mask of its input
        self.units = units
        self.activation = activation
        self.use_bias = use_bias
        self.gated = gated
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
        if self.gated:
            self.gate_dense = keras.layers.Dense(
                self.units, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                name="gate", dtype=self.dtype_policy,
            )
            self.gate_dense.build(input_shape)

    def call(self, inputs):
        hidden = dense_on_rows(self.intermediate_dense, inputs)
        if self.gated:
            hidden = hidden * dense_on_rows(self.gate_dense, inputs)
        return dense_on_rows(self.output_dense, hidden)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "gated": self.gated,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
