"""One configuration dataclass for every model family, read from a BERT-style ``config.json``.

Google's releases, ZhuiyiTechnology's RoFormer releases and HF ``config.json`` files all use the
same core keys; they differ in metadata.  We accept the metadata we recognise, refuse settings we
cannot honour (``position_embedding_type="relative_key"``, ``rotary_value=True``...) and refuse any
key we do not know, naming it, because a silently ignored key builds a different model than the
user asked for.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

#: Activation names used in config files, mapped to Keras activations.  HF's ``gelu`` is the exact
#: erf form; ``gelu_new``/``gelu_pytorch_tanh`` are the tanh approximation.
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_erf": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "relu": "relu",
    "swish": "silu",
    "silu": "silu",
    "tanh": "tanh",
    "linear": "linear",
}

# Keys found in public config files that carry no information for the model we build.
_METADATA_KEYS = frozenset(
    {
        "architectures", "transformers_version", "torch_dtype", "dtype", "directionality",
        "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
        "pooler_size_per_head", "pooler_type", "bos_token_id", "eos_token_id", "use_cache",
        "classifier_dropout", "gradient_checkpointing", "output_past", "id2label", "label2id",
        "problem_type", "chunk_size_feed_forward", "output_hidden_states", "output_attentions",
        "return_dict", "is_encoder_decoder", "_name_or_path", "model_type",
        # heads HF builds on top for sequence classification (ALBERT, ELECTRA)
        "classifier_dropout_prob", "summary_type", "summary_use_proj", "summary_activation",
        "summary_last_dropout", "summary_first_dropout", "summary_proj_to_labels",
        # GPT-2: the context size old configs repeat, task presets, an fp32 upcast of scores
        "n_ctx", "task_specific_params", "reorder_and_upcast_attn",
    }
)

# Keys whose only value we support; anything else would silently change the architecture.
_FIXED_KEYS = {
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "rotary_value": False,
    "is_decoder": False,
    "add_cross_attention": False,
    # ALBERT: one group of one shared block (every public release); the rest of its options
    # are those of the original code left at their plain values.
    "num_hidden_groups": 1,
    "inner_group_num": 1,
    "down_scale_factor": 1,
    "gap_size": 0,
    "net_structure_type": 0,
    "num_memory_blocks": 0,
    # GPT-2: scores scaled by 1/sqrt(head size), as in every release
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    # NEZHA: relative positions are what the family is
    "use_relative_position": True,
}


#: Allowed values of the research options; "auto" RoPE means the model family's own choice.
RESEARCH_CHOICES = {"rope": ("auto", "1d", "2d", None),
                    "attention_scale": ("auto", "sqrt", "entropy_invariant", "log_n"),
                    "initializer": ("auto", "xavier", "depth_scaled", "dimension_averaged")}
#: Research options and their plain-Transformer values (what HF checkpoints can express).
RESEARCH_DEFAULTS = {"rope": "auto", "attention_scale": "auto", "talking_heads": False,
                     "residual_attention_scores": False, "chunk_size": None,
                     "rope_base": 10000.0, "rope_ntk_factor": 1.0}
#: Families built from gated attention units (no multi-head attention, no feed-forward).
GAU_FAMILIES = ("gau_alpha", "flash")
#: GAU-α's config spells the attention normalisation; "softmax_plus" is the entropy-invariant
#: scale (ZhuiyiTechnology/GAU-alpha and its PyTorch port's config.json).
_NORMALIZATION_SCALES = {"softmax_plus": "entropy_invariant", "softmax": "sqrt"}


class ConfigError(ValueError):
    """A configuration key is unknown, missing or has an impossible value."""


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of a Transformer encoder; names follow BERT's ``config.json``.

    ``key_size`` (query/key size per head) and ``head_size`` (value size per head) default to
    ``hidden_size / num_attention_heads`` but are free parameters: a larger ``key_size`` removes the
    low-rank bottleneck of small heads (Bhojanapalli et al. 2020).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    embedding_size: Optional[int] = None
    head_size: Optional[int] = None
    key_size: Optional[int] = None
    #: NEZHA's clipping distance for relative positions (its releases use 64).
    max_relative_position: int = 64
    # T5 / mT5 (HF T5Config's names): decoder depth (None: as deep as the encoder), the
    # relative-bias buckets, the gated feed-forward of T5.1.1, and the output head: tied to
    # the token embedding (and then scaled by hidden_size^-0.5 in T5.1.0) or its own.
    num_decoder_layers: Optional[int] = None
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    gated_feed_forward: bool = False
    tie_word_embeddings: bool = True
    scale_decoder_outputs: Optional[bool] = None
    #: bert4keras' T5 also adds the decoder's relative bias to its cross-attention (its
    #: ``cross_position_bias``, on by default there); T5 itself and HF do not.
    cross_position_bias: bool = False
    # Research options (not in public config files; given as build_transformer_model overrides).
    rope: Optional[str] = "auto"
    attention_scale: str = "auto"
    talking_heads: bool = False
    residual_attention_scores: bool = False
    chunk_size: Optional[int] = None
    #: How new weights start (bert4x.initializers): "auto" is the family's own (truncated
    #: normal of initializer_range; Xavier inside GAU units). It does not change a trained
    #: model, so HF export ignores it.
    initializer: str = "auto"
    #: Length extrapolation: the RoPE base and its NTK-aware stretch for inputs
    #: ``rope_ntk_factor`` times longer than in training (bert4x.layers.rotary.ntk_scaled_base),
    #: and the length L at which the entropy-invariant and log-n scales equal 1/sqrt(d).
    rope_base: float = 10000.0
    rope_ntk_factor: float = 1.0
    attention_scale_length: int = 512

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "max_relative_position"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("type_vocab_size", self.type_vocab_size, minimum=0)
        for name in ("embedding_size", "head_size", "key_size"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name), minimum=1)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"config key {name!r} must be a probability in [0, 1), got {value!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            raise ConfigError(f"config key 'layer_norm_eps' must be positive, got {self.layer_norm_eps!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"config key 'hidden_act' is {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}"
            )
        if self.rope not in RESEARCH_CHOICES["rope"]:
            raise ConfigError(f"config key 'rope' must be one of {RESEARCH_CHOICES['rope']}, "
                              f"got {self.rope!r}")
        for name in ("attention_scale", "initializer"):
            if getattr(self, name) not in RESEARCH_CHOICES[name]:
                raise ConfigError(f"config key {name!r} must be one of {RESEARCH_CHOICES[name]}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("talking_heads", "residual_attention_scores"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config key {name!r} must be true or false, "
                                  f"got {getattr(self, name)!r}")
        if self.chunk_size is not None:
            _require_int("chunk_size", self.chunk_size, minimum=1)
        _require_int("attention_scale_length", self.attention_scale_length, minimum=2)
        for name, minimum, strict in (("rope_base", 1.0, True), ("rope_ntk_factor", 1.0, False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (value > minimum if strict else value >= minimum):
                raise ConfigError(f"config key {name!r} must be a number "
                                  f"{'>' if strict else '>='} {minimum:g}, got {value!r}")
        if self.num_decoder_layers is not None:
            _require_int("num_decoder_layers", self.num_decoder_layers, minimum=1)
        for name in ("relative_attention_num_buckets", "relative_attention_max_distance"):
            _require_int(name, getattr(self, name), minimum=2)
        for name in ("gated_feed_forward", "tie_word_embeddings", "cross_position_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config key {name!r} must be true or false, "
                                  f"got {getattr(self, name)!r}")
        if self.head_size is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"config key 'num_attention_heads' ({self.num_attention_heads}) does not divide "
                f"'hidden_size' ({self.hidden_size}); set 'head_size' explicitly"
            )

    # Derived sizes -------------------------------------------------------------------------
    @property
    def attention_head_size(self) -> int:
        """Per-head size of values (and of queries/keys unless ``key_size`` is set)."""
        return self.head_size or self.hidden_size // self.num_attention_heads

    @property
    def attention_key_size(self) -> int:
        return self.key_size or self.attention_head_size

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def activation(self) -> str:
        """The Keras activation name for ``hidden_act``."""
        return ACTIVATIONS[self.hidden_act]

    # Construction -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], model: Optional[str] = None) -> "TransformerConfig":
        """Build from a config mapping, rejecting unknown keys and unsupported settings by name."""
        field_names = {f.name for f in dataclasses.fields(cls)}
        values = _gau_config_keys(dict(values), model)
        values = _t5_config_keys(_gpt2_config_keys(values, model), model)
        kwargs = {}
        for key, value in values.items():
            if key in field_names:
                kwargs[key] = value
            elif key in _FIXED_KEYS:
                if value != _FIXED_KEYS[key] and value is not None:
                    raise ConfigError(
                        f"config key {key!r} = {value!r} is not supported "
                        f"(bert4x builds {key}={_FIXED_KEYS[key]!r})"
                    )
            elif key == "model_type" and model is not None and value not in _compatible_types(model):
                raise ConfigError(
                    f"config key 'model_type' is {value!r}, but model={model!r} was requested"
                )
            elif key not in _METADATA_KEYS:
                raise ConfigError(f"unknown config key {key!r}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in kwargs]
        if missing:
            raise ConfigError(f"config is missing required key(s): {', '.join(missing)}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike, model: Optional[str] = None, **overrides) -> "TransformerConfig":
        """Read a ``config.json`` file; ``overrides`` replace its values (and are checked the same way)."""
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from error
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} "
                              f"at offset {error.start}); save it as UTF-8") from error
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict({**values, **overrides}, model=model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def with_our_names(values: dict, names: Mapping[str, str], where: str) -> dict:
    """``values`` with each key of ``names`` (another project's name) renamed to ours; a value
    given under both names must be the same one."""
    values = dict(values)
    for theirs, ours in names.items():
        if theirs in values:
            value = values.pop(theirs)
            if ours in values and values[ours] != value:
                raise ConfigError(f"{where} {theirs}={value!r} and {ours}={values[ours]!r} "
                                  "name the same setting; give one")
            values[ours] = value
    return values


def _gau_config_keys(values: dict, model: Optional[str]) -> dict:
    """Read the keys GAU-α's config.json spells its own way into ours.

    ``attention_key_size`` is our ``key_size``; ``normalization`` and a boolean
    ``attention_scale`` together give our ``attention_scale``; ``use_bias`` must match the
    family; a GAU stack has no heads, so ``num_attention_heads`` defaults to 1.
    """
    if "attention_key_size" in values:
        values.setdefault("key_size", values.pop("attention_key_size"))
    scale = values.get("attention_scale")
    if isinstance(scale, bool):
        if not scale:
            raise ConfigError("config key 'attention_scale' = false (no 1/sqrt(d) scaling) is "
                              "not supported")
        values.pop("attention_scale")
    if "normalization" in values:
        normalization = values.pop("normalization")
        if normalization not in _NORMALIZATION_SCALES:
            raise ConfigError(f"config key 'normalization' = {normalization!r} is not supported "
                              f"(supported: {sorted(_NORMALIZATION_SCALES)})")
        values.setdefault("attention_scale", _NORMALIZATION_SCALES[normalization])
    if "use_bias" in values:
        expected = model != "gau_alpha" and model != "roformer_v2"
        if values.pop("use_bias") != expected:
            raise ConfigError(f"config key 'use_bias' must be {str(expected).lower()} for "
                              f"model={model!r}")
    if model in GAU_FAMILIES:
        values.setdefault("num_attention_heads", 1)
    return values


#: GPT-2's config names (HF ``GPT2Config``, OpenAI's ``hparams.json``) and ours.
GPT2_NAMES = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers",
               "n_head": "num_attention_heads", "n_positions": "max_position_embeddings",
               "n_inner": "intermediate_size", "activation_function": "hidden_act",
               "resid_pdrop": "hidden_dropout_prob", "attn_pdrop": "attention_probs_dropout_prob",
               "layer_norm_epsilon": "layer_norm_eps", "n_vocab": "vocab_size"}


def _gpt2_config_keys(values: dict, model: Optional[str]) -> dict:
    """Read GPT-2's config names into ours (``model="gpt2"``, and ``"gpt"`` from HF's
    OpenAIGPT files). ``n_inner`` null or absent means 4 × the hidden size; the embedding dropout must equal the residual one, since one rate
    serves both; GPT-2 has no segments (``type_vocab_size`` 0)."""
    if model == "gpt2_ml":  # BERT's config names; GPT-2's norm epsilon, no segments
        values.setdefault("layer_norm_eps", 1e-5)
        values.setdefault("type_vocab_size", 0)
    if model == "gpt" and "n_embd" in values:  # HF's OpenAIGPT: GPT-2's names, no segments
        values = with_our_names(values, {"afn": "hidden_act"}, "config keys")
        if values.get("hidden_act", "gelu") == "gelu":  # OpenAI's "gelu" is the tanh form
            values["hidden_act"] = "gelu_new"
    elif model != "gpt2":
        return values
    values = with_our_names(values, GPT2_NAMES, "config keys")
    if values.get("intermediate_size") is None and "hidden_size" in values:
        values["intermediate_size"] = 4 * values["hidden_size"]
    if "embd_pdrop" in values:
        embedding_dropout = values.pop("embd_pdrop")
        if embedding_dropout != values.get("hidden_dropout_prob", 0.1):
            raise ConfigError(f"config key 'embd_pdrop' ({embedding_dropout}) must equal "
                              f"'resid_pdrop' ({values.get('hidden_dropout_prob', 0.1)}): "
                              "bert4x uses one dropout rate for both")
    values.setdefault("type_vocab_size", 0)
    values.setdefault("layer_norm_eps", 1e-5)
    values.setdefault("hidden_act", "gelu_new")
    return values


#: The T5 families and what their names imply when a config does not say.
T5_FAMILIES = {"t5": {}, "t5.1.1": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
               "mt5.1.1": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}}
#: T5's config names (HF ``T5Config``) and ours.
T5_NAMES = {"d_model": "hidden_size", "d_ff": "intermediate_size", "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads", "layer_norm_epsilon": "layer_norm_eps",
            "dropout_rate": "hidden_dropout_prob"}


def _t5_config_keys(values: dict, model: Optional[str]) -> dict:
    """Read T5's config names into ours (T5 families only). ``d_kv`` is the per-head size of
    queries, keys and values; ``feed_forward_proj`` "relu" or "gated-gelu" sets the activation
    and the gate; one dropout rate serves everything, as in T5. T5 has no position table and
    no segments."""
    if model not in T5_FAMILIES:
        return values
    if isinstance(values.get("hidden_act"), list) or "attention_head_size" in values:
        # A config in bert4keras' form: its weights were trained by bert4keras, which scales
        # every T5's decoder output by hidden_size^-0.5, its own output head included, and
        # biases the cross-attention by relative position.
        values.setdefault("scale_decoder_outputs", True)
        values.setdefault("cross_position_bias", True)
    values = with_our_names({**T5_FAMILIES[model], **values}, T5_NAMES, "config keys")
    for size in ("d_kv", "attention_head_size"):  # HF's name, bert4keras'
        if size in values:
            values["key_size"] = values["head_size"] = values.pop(size)
    values.setdefault("attention_probs_dropout_prob", values.get("hidden_dropout_prob", 0.1))
    activation = values.pop("hidden_act", None)  # bert4keras' name
    projection = values.pop("feed_forward_proj", None)  # HF's
    resolved = values.pop("dense_act_fn", None)  # what HF made of feed_forward_proj
    for derived in ("is_gated_act", "initializer_factor", "decoder_start_token_id"):
        values.pop(derived, None)
    if isinstance(activation, list):  # bert4keras' gated form, ["gelu", "linear"]
        if len(activation) != 2 or activation[1] != "linear":
            raise ConfigError(f"config key 'hidden_act' = {activation!r} is not supported "
                              "(a list must be [activation, 'linear']: a gated feed-forward)")
        gated, activation = True, activation[0]
    elif projection is not None:
        prefix, _, activation = projection.rpartition("-")
        if prefix not in ("", "gated"):
            raise ConfigError(f"config key 'feed_forward_proj' = {projection!r} is not "
                              "supported (expected an activation, or 'gated-' and one)")
        gated = prefix == "gated"
        # HF reads "gated-gelu" as the tanh approximation (T5.1.1 was trained with it).
        activation = resolved or ("gelu_new" if projection == "gated-gelu" else activation)
    else:
        gated, activation = False, activation or "relu"
    values["gated_feed_forward"] = gated
    values["hidden_act"] = activation
    values.setdefault("layer_norm_eps", 1e-6)
    values.setdefault("max_position_embeddings", 512)  # unused: T5's positions are relative
    values.setdefault("type_vocab_size", 0)
    return values


def _compatible_types(model: str) -> set:
    # RoFormer-V2 and GAU-alpha checkpoints are often published with a RoFormer config.
    return {"bert": {"bert"}, "roformer": {"roformer"}, "albert": {"albert"},
            "albert_unshared": {"albert"}, "electra": {"electra"},
            "gpt2": {"gpt2"}, "gpt": {"openai-gpt"}, "nezha": {"nezha", "bert"}, "t5": {"t5"},
            "t5.1.1": {"t5"}, "mt5.1.1": {"mt5", "t5"}}.get(model, {model, "roformer"})


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config key {name!r} must be an integer >= {minimum}, got {value!r}")
