"""``build_transformer_model``: the one entry point a bert4keras user knows."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from bert4x.checkpoints import (
    LoadReport, export_huggingface, load_checkpoint, save_google_checkpoint,
)
from bert4x.config import ConfigError, TransformerConfig
from bert4x.models.transformer import MODELS, Transformer


class TransformerModel:
    """A built model together with what produced it: config, family and heads.

    ``build_transformer_model(..., return_keras_model=False)`` returns this; ``.model`` is the
    ``keras.Model``.  It knows how to load checkpoints into that model and export it to HF.
    """

    def __init__(self, builder: Transformer):
        self.builder = builder
        self.config = builder.config
        self.model_name = builder.model_name
        self.model = builder.build()
        # Decoders find the builder here to wire the model's layers into a cached step model.
        self.model._bert4x_builder = builder
        self.load_report: Optional[LoadReport] = None

    def load_checkpoint(self, checkpoint_path, keep_tokens=None, allow_missing=False,
                        allow_unused=False, check_finite=True) -> LoadReport:
        """Load weights; see :func:`bert4x.checkpoints.load_checkpoint`."""
        self.load_report = load_checkpoint(
            self.model, checkpoint_path, self.model_name, self.builder.hf_prefix,
            keep_tokens=keep_tokens, allow_missing=allow_missing, allow_unused=allow_unused,
            check_finite=check_finite)
        return self.load_report

    def save_google_checkpoint(self, prefix) -> str:
        """Write a TF checkpoint with Google's variable names (readable by bert4keras)."""
        return save_google_checkpoint(self.model, prefix, self.model_name)

    def export_huggingface(self, directory, dtype: str = "float32") -> str:
        """Write ``model.safetensors`` (float32 or float16) + ``config.json`` loadable by HF
        transformers."""
        return export_huggingface(self.model, directory, self.config, self.model_name,
                                  self.builder.hf_prefix, bool(self.builder.with_mlm), dtype)


def build_transformer_model(
    config_path: Union[str, os.PathLike, dict, TransformerConfig, None] = None,
    checkpoint_path=None,
    model: str = "bert",
    application: str = "encoder",
    return_keras_model: bool = True,
    with_pool: bool = False,
    with_mlm: Union[bool, str] = False,
    keep_tokens: Optional[Sequence[int]] = None,
    allow_missing: bool = False,
    allow_unused: bool = False,
    check_finite: bool = True,
    name: Optional[str] = None,
    **overrides,
):
    """Build ``model`` ("bert" | "roformer" | "roformer_v2") for ``application``
    ("encoder" | "lm" | "unilm") from a BERT-style config, optionally loading a checkpoint.

    ``config_path`` may be a ``config.json`` path, a dict or a :class:`TransformerConfig`;
    ``overrides`` replace config values (``key_size=128``, ``hidden_dropout_prob=0``...).
    With ``keep_tokens`` the vocabulary is cut to those ids and the checkpoint's embedding rows are
    sliced to match.  ``check_finite=False`` loads a checkpoint even when it holds NaN or
    infinite weights (refused by default).  The model takes ``[token_ids, segment_ids]``;
    token id 0 is padding.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    if keep_tokens is not None:
        overrides["vocab_size"] = len(keep_tokens)
    config = _read_config(config_path, model, overrides)
    built = TransformerModel(MODELS[model](config, application=application, with_pool=with_pool,
                                           with_mlm=with_mlm, name=name))
    if checkpoint_path is not None:
        built.load_checkpoint(checkpoint_path, keep_tokens=keep_tokens,
                              allow_missing=allow_missing, allow_unused=allow_unused,
                              check_finite=check_finite)
    return built.model if return_keras_model else built


def _read_config(config_path, model: str, overrides: dict) -> TransformerConfig:
    if isinstance(config_path, TransformerConfig):
        return TransformerConfig.from_dict({**config_path.to_dict(), **overrides}, model=model) \
            if overrides else config_path
    if isinstance(config_path, dict):
        return TransformerConfig.from_dict({**config_path, **overrides}, model=model)
    if config_path is None:
        return TransformerConfig.from_dict(overrides, model=model)
    if not os.path.exists(config_path):
        raise ConfigError(f"config file not found: {config_path}")
    return TransformerConfig.from_json(config_path, model=model, **overrides)


__all__ = ["TransformerModel", "build_transformer_model"]
