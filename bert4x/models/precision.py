"""Inference precision: float32, mixed bfloat16, or int8 weights.

Why these three: on CPUs with AVX-512 BF16 and VNNI a bfloat16 or int8 matmul runs at two to
three times the float32 rate, and a transformer's time is its matmuls. Why built on Keras'
own mechanisms (its ``mixed_bfloat16`` dtype policy, its ``quantize("int8")``): our layers
already honour a dtype policy, keeping norms, softmax and attention logits in float32
(``bert4x.layers``), and Keras' int8 layers keep a per-output-channel scale with the weights
and quantize activations per row on the fly, which is what dynamic int8 inference needs.

* ``bf16``: the model is built under ``mixed_bfloat16``: weights stay float32, matmuls run in
  bfloat16, norms and softmax in float32. Hidden states come out in bfloat16, MLM
  probabilities in float32.
* ``int8``: the model is built in float32, the checkpoint loaded, then every dense and einsum
  kernel and the token table are quantized to int8 (the table for the tied MLM output, a
  vocabulary-sized matmul; its lookups dequantize one row each).

Which execution runs each fastest depends on the backend; ``benchmarks/precision.py``
measures it (on TensorFlow CPU, bfloat16 is fastest in a plain ``tf.function``, int8 under
XLA).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Optional

import keras

PRECISIONS = ("fp32", "bf16", "int8")
_BUILD_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "int8": "float32"}


def check_precision(precision: Optional[str]) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS} (None keeps the "
                         "global Keras dtype policy)")


@contextlib.contextmanager
def building_at(precision: Optional[str]):
    """Layers created inside take ``precision``'s dtype policy; ``None`` keeps the global one.
    The global policy is restored afterwards, so one model's precision never leaks into the
    next model a script builds."""
    check_precision(precision)
    if precision is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_BUILD_POLICY[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def quantize_for(model: keras.Model, precision: Optional[str]) -> None:
    """Quantize ``model``'s kernels in place when ``precision`` is ``int8``: after the weights
    are loaded, since an int8 kernel cannot take float weights any more."""
    if precision != "int8":
        return
    with warnings.catch_warnings():
        # Keras warns once for every layer without weights to quantize (norms, dropout...).
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
        # type_check=False: Keras quantizes only its exact classes otherwise, which would skip
        # our TokenEmbedding (a ReversibleEmbedding that checks ids) and leave the tied MLM
        # output, a vocabulary-sized matmul, in float32.
        model.quantize("int8", type_check=False)
