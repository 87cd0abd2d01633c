"""bert4x: Chinese NLP on Keras 3 in the bert4keras lineage.

Importing the package registers every layer with Keras, so ``keras.models.load_model`` reads
saved bert4x models without ``custom_objects``.
"""

from bert4x import layers  # noqa: F401  (registers the serialisable layers)
from bert4x.config import ConfigError, TransformerConfig
from bert4x.checkpoints import CheckpointError
from bert4x.models import TransformerModel, build_transformer_model

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "TransformerConfig", "TransformerModel",
           "build_transformer_model", "layers"]
