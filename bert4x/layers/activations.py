"""Activations config files name that Keras lacks under those names."""

import keras

#: Which GELU the name ``"gelu"`` builds: the exact erf form (Keras' and Google BERT's), unless
#: :func:`set_gelu` chose the tanh approximation, as bert4keras' ``set_gelu`` does.
_GELU = {"version": "erf"}


@keras.saving.register_keras_serializable(package="bert4x")
def gelu_approximate(x):
    """tanh-approximated GELU (HF's ``gelu_new``); Keras' ``"gelu"`` is the exact erf form."""
    return keras.activations.gelu(x, approximate=True)


def set_gelu(version: str) -> None:
    """Make ``"gelu"`` in configs mean the ``"erf"`` (default) or ``"tanh"`` form for models
    built from now on."""
    version = version.lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"gelu version must be 'erf' or 'tanh', got {version!r}")
    _GELU["version"] = version


def get(identifier):
    """Like ``keras.activations.get``, also resolving ``"gelu_approximate"`` (and ``"gelu"``
    after ``set_gelu("tanh")``)."""
    if identifier == "gelu_approximate" or (identifier == "gelu" and _GELU["version"] == "tanh"):
        return gelu_approximate
    return keras.activations.get(identifier)
