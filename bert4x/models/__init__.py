"""Model families and the ``build_transformer_model`` entry point."""

from bert4x.models.build import TransformerModel, build_transformer_model
from bert4x.models.transformer import MODELS, RoFormer, RoFormerV2, Transformer

__all__ = ["MODELS", "RoFormer", "RoFormerV2", "Transformer", "TransformerModel",
           "build_transformer_model"]
