"""bert4x: Chinese NLP on Keras 3 in the bert4keras lineage.

Importing the package registers every layer with Keras, so ``keras.models.load_model`` reads
saved bert4x models without ``custom_objects``.
"""

import os as _os
import sys as _sys

if _os.path.basename((getattr(_sys, "argv", None) or [""])[0]) == "bert4x":
    # Started as the ``bert4x`` command: quiet TensorFlow's C++ log lines (CPU feature notes,
    # the failed CUDA probe) before anything below loads it. Library users keep their own
    # setting; this only takes effect if it is set before TensorFlow is imported.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bert4x import layers  # noqa: F401,E402  (registers the serialisable layers)
from bert4x.config import ConfigError, TransformerConfig
from bert4x.checkpoints import CheckpointError
from bert4x.models import TransformerModel, build_transformer_model

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "TransformerConfig", "TransformerModel",
           "build_transformer_model", "layers"]
