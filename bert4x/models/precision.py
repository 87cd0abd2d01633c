"""Inference precision: float32, mixed bfloat16, or int8 weights.

Why these three: on CPUs with AVX-512 BF16 and VNNI a bfloat16 or int8 matmul runs at two to
three times the float32 rate, and a transformer's time is its matmuls. Why built on Keras'
own mechanisms (its ``mixed_bfloat16`` dtype policy, its ``quantize("int8")``): our layers
already honour a dtype policy, keeping norms, softmax and attention logits in float32
(``bert4x.layers``), and Keras' int8 layers keep a per-output-channel scale with the weights
and quantize activations per row on the fly, which is what dynamic int8 inference needs.

* ``bf16``: the model is built under ``mixed_bfloat16``: weights stay float32, matmuls run in
  bfloat16, norms and softmax in float32. Hidden states come out in bfloat16; the vocabulary
  projection (MLM and LM logits) computes in float32.
* ``int8``: the model is built in float32, the checkpoint loaded, then every dense and einsum
  kernel is quantized to int8. The token tables and any vocabulary projection stay float32.

Why the logits stay float32 at both precisions: beam search ranks hypotheses by summed
log-probabilities, and close beams swap on small logit errors. On the demo's KgCLUE model,
bfloat16 logits changed 4 of 100 answers (float32 logits: none; 1 since the feed-forward's
bfloat16 GELU is fused into its matmul, ``benchmarks/RESULTS.md``), and an int8 vocabulary
projection 5 (float32: 1). Projecting one position per decoding step is cheap either way.

Training at ``bf16`` is mixed-precision training: float32 weights and optimizer moments, so no
loss scaling is needed; heads built outside :func:`building_at` compute in float32. Keras'
default ``jit_compile="auto"`` leaves XLA off on a CPU-only TensorFlow machine, which is what
bfloat16 needs there (``benchmarks/train.py``: 1.74x float32 without XLA, 0.98x with it).

Which execution runs each fastest depends on the backend; ``benchmarks/precision.py``
measures it (on TensorFlow CPU, bfloat16 is fastest in a plain ``tf.function``, int8 under
XLA). Keras' int8 is bounded by the int8 matmuls it can call, which on our host are little
faster than float32 ones; a CPU server that wants int8 speed serves the ONNX export quantized
by ONNX Runtime instead (``bert4x export --format onnx_int8``, :func:`bert4x.export.quantize_onnx`).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Optional, TypeVar

import keras

PRECISIONS = ("fp32", "bf16", "int8")
#: int8 kernels do not train.
TRAINING_PRECISIONS = ("fp32", "bf16")
T = TypeVar("T")
_BUILD_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "int8": "float32"}


def check_precision(precision: Optional[str]) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS} (None keeps the "
                         "global Keras dtype policy)")


def check_training_precision(precision: Optional[str]) -> None:
    check_precision(precision)
    if precision is not None and precision not in TRAINING_PRECISIONS:
        raise ValueError(f"precision={precision!r} is for inference: int8 kernels do not "
                         f"train. Train at {' or '.join(TRAINING_PRECISIONS)}, then load the run "
                         "at int8 (--precision int8 on the evaluate and predict commands)")


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


def restored_at(precision: Optional[str], build: Callable[[], T], weights: str,
                model_of: Callable[[T], keras.Model] = lambda built: built) -> T:
    """``build()`` under ``precision``'s policy, its Keras model (``model_of`` the result)
    given the float32 ``weights`` file, then quantized for int8: a finished run at any
    precision, in the one order that works (an int8 kernel cannot take float weights)."""
    with building_at(precision):
        built = build()
    model = model_of(built)
    model.load_weights(weights)
    quantize_for(model, precision)
    return built


def quantize_for(model: keras.Model, precision: Optional[str]) -> None:
    """Quantize ``model``'s kernels in place when ``precision`` is ``int8``: after the weights
    are loaded, since an int8 kernel cannot take float weights any more."""
    if precision != "int8":
        return
    with warnings.catch_warnings():
        # Keras warns once for every layer without weights to quantize (norms, dropout...).
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
        # type_check=False: Keras would quantize only its exact classes, skipping subclasses.
        model.quantize("int8", type_check=False, filters=_outside_the_vocabulary)


def _outside_the_vocabulary(layer) -> bool:
    """Not a token table (its reverse call gives the tied logits), nor the untied logits."""
    return not (isinstance(layer, keras.layers.Embedding) or layer.name.endswith("Output-LM"))
