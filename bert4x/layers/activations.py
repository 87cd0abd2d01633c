"""Activations config files name that Keras lacks under those names."""

import keras


@keras.saving.register_keras_serializable(package="bert4x")
def gelu_approximate(x):
    """tanh-approximated GELU (HF's ``gelu_new``); Keras' ``"gelu"`` is the exact erf form."""
    return keras.activations.gelu(x, approximate=True)


def get(identifier):
    """Like ``keras.activations.get``, also resolving ``"gelu_approximate"``."""
    if identifier == "gelu_approximate":
        return gelu_approximate
    return keras.activations.get(identifier)
