"""Runtime checks on input values inside a compiled graph.

An out-of-range token id makes TensorFlow's CPU gather fail with an anonymous "indices[...] is not
in [0, N)" and makes GPU gathers silently return zeros.  These checks raise an error that names
the problem instead.  They are the only backend-specific code the layers use: TensorFlow gets a
graph assertion; PyTorch runs eagerly so a Python check works; JAX, which clamps out-of-range
gathers silently and cannot raise inside ``jit``, gets a host callback that raises.
"""

import re
from typing import Optional

import keras
from keras import ops

#: How TensorFlow words a failed ``tf.debugging.assert_*`` inside a graph.
_GRAPH_ASSERTION = re.compile(r"assertion failed: \[([^\]]+)\]")
#: How JAX reports the ValueError a host callback raised: the traceback's last line.
_CALLBACK_ERROR = re.compile(r"CpuCallback error.*\nValueError: ([^\n]+)\s*$", re.S)
#: How Keras wraps an error raised in a layer's call (PyTorch runs the checks eagerly).
_LAYER_ERROR = re.compile(r"^Exception encountered when calling [^\n]*\n\n(?:\x1b\[1m)?"
                          r"([^\n\x1b]+)")


def check_less(values, limit, message):
    """Return ``values`` after checking that every element is ``< limit`` and ``>= 0``."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.control_dependencies([
            tf.debugging.assert_less(values, tf.cast(limit, values.dtype), message=message),
            tf.debugging.assert_non_negative(values, message=message),
        ]):
            return tf.identity(values)
    if backend == "jax":
        import jax

        def refuse(out_of_range):
            if out_of_range:
                raise ValueError(message)

        # JAX clamps out-of-range gathers silently and cannot raise inside jit; a host
        # callback can, and its error carries the message (failed_check_message finds it).
        jax.debug.callback(refuse, ops.any(ops.logical_or(values >= limit, values < 0)))
        return values
    if backend == "torch" and values.device.type == "meta":
        return values  # Keras infers shapes on data-free "meta" tensors of made-up sizes
    if backend in ("torch", "numpy"):
        if bool(ops.any(values >= limit)) or bool(ops.any(values < 0)):
            raise ValueError(message)
    return values


def failed_check_message(error: BaseException) -> Optional[str]:
    """The message of the check behind ``error``, when a compiled graph stopped at one.

    TensorFlow reports it as ``InvalidArgumentError: Graph execution error:`` followed by a
    stack of framework frames, with the message on the last line, JAX as a
    ``JaxRuntimeError`` around the callback's traceback, and PyTorch (eager) as Keras' wrapper
    of the layer's ``ValueError``; a command line prints the message instead of any of them.
    """
    kind = type(error).__name__
    if kind == "InvalidArgumentError":
        found = _GRAPH_ASSERTION.search(str(error))
    elif kind in ("JaxRuntimeError", "XlaRuntimeError"):
        found = _CALLBACK_ERROR.search(str(error))
    elif kind == "ValueError":
        found = _LAYER_ERROR.search(str(error))
    else:
        return None
    return found.group(1) if found else None
