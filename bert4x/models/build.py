"""``build_transformer_model``: the one entry point a bert4keras user knows."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import keras

from bert4x.checkpoints import (
    LoadReport, export_huggingface, load_checkpoint, save_google_checkpoint,
)
from bert4x.config import ConfigError, TransformerConfig, with_our_names
from bert4x.models.precision import building_at, quantize_for
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
        # Decoders find the builder here to wire the model's layers into a cached step model,
        # and the model from its MLM output layer when a script wraps that output in another
        # model (a training model with a Loss layer, say).
        self.model._bert4x_builder = builder
        builder.built_model = self.model
        if builder.with_mlm:
            self.model.get_layer(builder.prefix + "MLM-Activation")._bert4x_builder = builder
        self.load_report: Optional[LoadReport] = None

    @property
    def initializer(self):
        """The family's weight initializer, for heads added on top (as in bert4keras)."""
        return self.builder.initializer

    def load_checkpoint(self, checkpoint_path, keep_tokens=None, allow_missing=False,
                        allow_unused=False, check_finite=True, compound_tokens=None
                        ) -> LoadReport:
        """Load weights; see :func:`bert4x.checkpoints.load_checkpoint`."""
        self.load_report = load_checkpoint(
            self.model, checkpoint_path, self.model_name, self.builder.hf_prefix,
            keep_tokens=keep_tokens, allow_missing=allow_missing, allow_unused=allow_unused,
            check_finite=check_finite, compound_tokens=compound_tokens,
            variables=self.own_weights(), layer_prefix=self.builder.prefix)
        return self.load_report

    def own_weights(self):
        """The weights of the layers the builder made: not those of the layers that compute
        a norm condition from the extra inputs, which no checkpoint of the family holds."""
        if self.builder.norm_condition is None:
            return self.model.weights
        condition = keras.Model(self.builder.extra_inputs, self.builder.norm_condition)
        foreign = {id(w) for w in condition.weights}
        return [w for w in self.model.weights if id(w) not in foreign]

    def save_google_checkpoint(self, prefix) -> str:
        """Write a TF checkpoint with Google's variable names (readable by bert4keras)."""
        return save_google_checkpoint(self.model, prefix, self.model_name, self.builder.prefix)

    def export_huggingface(self, directory, dtype: str = "float32") -> str:
        """Write ``model.safetensors`` (float32 or float16) + ``config.json`` loadable by HF
        transformers."""
        return export_huggingface(self.model, directory, self.config, self.model_name,
                                  self.builder.hf_prefix, self.builder.hf_head, dtype,
                                  self.builder.prefix)


#: bert4keras' names for config values, and ours.
RENAMED_KEYWORDS = {
    "max_position": "max_position_embeddings", "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
    "segment_vocab_size": "type_vocab_size", "attention_head_size": "head_size",
    "attention_key_size": "key_size",
}
#: bert4keras keywords bert4x does not offer, and what to do instead.
UNSUPPORTED_KEYWORDS = {
    "with_nsp": "build with with_pool=True and add Dense(2, activation='softmax') on the pooled "
                "output",
    "hierarchical_position": "use a RoFormer family (rotary positions have no table to "
                             "outgrow) or a checkpoint with more positions",
    "custom_position_ids": "positions are always 0..n-1 (rope='2d' takes an Input-Position "
                           "of (x, y) pairs)",
    "shared_segment_embeddings": "give the model a type_vocab_size of its own",
    "sequence_length": "leave it out: bert4x models take any length up to "
                       "max_position_embeddings",
    "autoresize_weights": "load a checkpoint of the model's own shapes",
    "layers": "reuse layers through model.get_layer(name) in your own graph",
    "attention_caches": "decode with bert4x.generation or bert4x.snippets."
                        "AutoRegressiveDecoder, which keep a key/value cache",
}


def build_transformer_model(
    config_path: Union[str, os.PathLike, dict, TransformerConfig, None] = None,
    checkpoint_path=None,
    model: str = "bert",
    application: Optional[str] = None,
    return_keras_model: bool = True,
    with_pool: bool = False,
    with_mlm: Union[bool, str, None] = None,
    with_discriminator: Union[bool, str] = False,
    keep_tokens: Optional[Sequence[int]] = None,
    compound_tokens: Optional[Sequence] = None,
    allow_missing: bool = False,
    allow_unused: bool = False,
    check_finite: bool = True,
    name: Optional[str] = None,
    padding_mask: bool = True,
    layer_norm_cond=None,
    layer_norm_cond_hidden_size: Optional[int] = None,
    layer_norm_cond_hidden_act: Optional[str] = None,
    additional_input_layers=None,
    ignore_invalid_weights: bool = False,
    prefix: str = "",
    precision: Optional[str] = None,
    **overrides,
):
    """Build ``model`` (see ``bert4x.models.MODELS``) for ``application``
    ("encoder" | "lm" | "unilm"; by default "encoder", and "lm" for GPT-2) from a BERT-style
    config, optionally loading a checkpoint.

    ``config_path`` may be a ``config.json`` path, a dict or a :class:`TransformerConfig`;
    ``overrides`` replace config values (``key_size=128``, ``hidden_dropout_prob=0``...), under
    our names or bert4keras' (``max_position``, ``dropout_rate``, ``segment_vocab_size``...).
    ``with_mlm`` defaults to the MLM head for ``lm``/``unilm`` and none for ``encoder``;
    ``with_discriminator`` is ELECTRA's replaced-token head (see
    :class:`~bert4x.models.transformer.Electra`).
    With ``keep_tokens`` the vocabulary is cut to those ids and the checkpoint's embedding rows are
    sliced to match; ``compound_tokens`` adds one token per item, its embedding the mean of
    the listed (kept) ids' (an ``(ids, weights)`` pair gives a weighted mean).
    ``layer_norm_cond`` (a Keras tensor) makes every norm conditional on it, through a dense
    layer of ``layer_norm_cond_hidden_size`` units (``layer_norm_cond_hidden_act``) if given;
    ``additional_input_layers`` are inputs the model takes after its own (those the condition
    comes from). ``ignore_invalid_weights`` is bert4keras' name for ``allow_missing``.
    ``prefix`` starts every layer and input name, so that two models share one Keras graph.
    ``check_finite=False`` loads a checkpoint even when it holds NaN or
    infinite weights (refused by default).  ``precision`` ("fp32", "bf16" or "int8"; see
    :mod:`bert4x.models.precision`) runs the model's matmuls in mixed bfloat16 or on int8
    kernels; ``None`` keeps the global Keras dtype policy.  The model takes
    ``[token_ids, segment_ids]``;
    token id 0 is padding, and with ``padding_mask`` (default) the outputs carry that Keras mask
    (see :class:`~bert4x.models.transformer.Transformer`).
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    if with_discriminator and model != "electra":
        raise ValueError(f"with_discriminator is ELECTRA's head; model={model!r} has none "
                         "(use model='electra')")
    family_options = {"with_discriminator": with_discriminator} if model == "electra" else {}
    overrides = _our_config_names(overrides)
    if application is None:
        application = MODELS[model].default_application
    if with_mlm is None:
        with_mlm = application in ("lm", "unilm", "seq2seq")
    if keep_tokens is not None or compound_tokens:
        base = (len(keep_tokens) if keep_tokens is not None
                else _read_config(config_path, model, dict(overrides)).vocab_size)
        overrides["vocab_size"] = base + len(compound_tokens or ())
    config = _read_config(config_path, model, overrides)
    if additional_input_layers is not None and not isinstance(additional_input_layers, list):
        additional_input_layers = [additional_input_layers]
    with building_at(precision):
        built = TransformerModel(MODELS[model](
            config, application=application, with_pool=with_pool, with_mlm=with_mlm,
            name=name, padding_mask=padding_mask, norm_condition=layer_norm_cond,
            condition_hidden_units=layer_norm_cond_hidden_size,
            condition_hidden_activation=layer_norm_cond_hidden_act or "linear",
            extra_inputs=additional_input_layers or (), prefix=prefix, **family_options))
    if checkpoint_path is not None:
        built.load_checkpoint(checkpoint_path, keep_tokens=keep_tokens,
                              allow_missing=allow_missing or ignore_invalid_weights,
                              allow_unused=allow_unused, check_finite=check_finite,
                              compound_tokens=compound_tokens)
    quantize_for(built.model, precision)
    return built.model if return_keras_model else built


def _our_config_names(overrides: dict) -> dict:
    """Config overrides under our names: bert4keras' are renamed, those we do not offer are
    refused saying what to use instead."""
    for keyword, instead in UNSUPPORTED_KEYWORDS.items():
        if keyword in overrides:
            raise ConfigError(f"build_transformer_model: bert4keras' {keyword}= is not "
                              f"supported by bert4x; {instead}")
    if overrides.get("segment_vocab_size") == 0:
        raise ConfigError("build_transformer_model: segment_vocab_size=0 (a model without a "
                          "segment input) is not supported by bert4x; bert4x models always "
                          "take [token_ids, segment_ids]: keep the segment embedding and feed "
                          "zeros")
    return with_our_names(overrides, RENAMED_KEYWORDS, "build_transformer_model:")


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
