"""Runtime checks on input values inside a compiled graph.

An out-of-range token id makes TensorFlow's CPU gather fail with an anonymous "indices[...] is not
in [0, N)" and makes GPU gathers silently return zeros.  These checks raise an error that names
the problem instead.  They are the only backend-specific code the layers use: TensorFlow gets a
graph assertion; PyTorch runs eagerly so a Python check works; JAX cannot raise from inside ``jit``
and is left unchecked.
"""

import re
from typing import Optional

import keras
from keras import ops

#: How TensorFlow words a failed ``tf.debugging.assert_*`` inside a graph.
_GRAPH_ASSERTION = re.compile(r"assertion failed: \[([^\]]+)\]")


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
    if backend in ("torch", "numpy"):
        if bool(ops.any(values >= limit)) or bool(ops.any(values < 0)):
            raise ValueError(message)
    return values


def failed_check_message(error: BaseException) -> Optional[str]:
    """The message of the check behind ``error``, when a compiled graph stopped at one.

    TensorFlow reports it as ``InvalidArgumentError: Graph execution error:`` followed by a
    stack of framework frames, with the message on the last line; a command line prints this
    instead of the traceback.
    """
    if type(error).__name__ != "InvalidArgumentError":
        return None
    found = _GRAPH_ASSERTION.search(str(error))
    return found.group(1) if found else None
