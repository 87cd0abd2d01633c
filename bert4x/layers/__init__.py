"""Keras layers of bert4x: ordinary, serialisable layers usable in any functional model."""

from bert4x.layers import activations  # noqa: F401  (registers gelu_approximate)
from bert4x.layers.attention import MultiHeadAttention
from bert4x.layers.crf import ConditionalRandomField, MaximumEntropyMarkovModel
from bert4x.layers.embeddings import (EmbeddingSum, PositionEmbedding, RelativePositionBias,
                                     RelativePositionEmbedding, TokenEmbedding)
from bert4x.layers.feed_forward import FeedForward
from bert4x.layers.gau import GatedAttentionUnit, ScaleOffset
from bert4x.layers.global_pointer import (EfficientGlobalPointer, GlobalPointer,
                                          multilabel_crossentropy,
                                          sparse_multilabel_crossentropy)
from bert4x.layers.heads import BiasAdd, Pooler
from bert4x.layers.loss import Loss
from bert4x.layers.masks import APPLICATIONS, AttentionMask
from bert4x.layers.normalization import LayerNormalization
from bert4x.layers.pooling import GlobalAveragePooling1D, GlobalMaxPooling1D
from bert4x.layers.rotary import apply_rotary, apply_rotary_2d, rotary_angles, rotate_pairs

__all__ = [
    "APPLICATIONS", "AttentionMask", "BiasAdd", "ConditionalRandomField",
    "EfficientGlobalPointer", "EmbeddingSum", "FeedForward", "GatedAttentionUnit",
    "GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalPointer", "LayerNormalization", "Loss",
    "MaximumEntropyMarkovModel", "MultiHeadAttention", "Pooler", "PositionEmbedding",
    "RelativePositionBias", "RelativePositionEmbedding",
    "ScaleOffset", "TokenEmbedding", "apply_rotary", "apply_rotary_2d",
    "multilabel_crossentropy", "rotary_angles", "rotate_pairs", "sparse_multilabel_crossentropy",
]
