"""Export a bert4x model: to HF transformers' format (``model.safetensors`` + ``config.json``)
or to a Google-format TF checkpoint (what bert4keras and the original BERT code read).

The HF export loads with the family's HF class (``BertModel``/``BertForMaskedLM``,
``RoFormer...``, ``Albert...``, ``ElectraModel``/``ElectraForMaskedLM``/``ElectraForPreTraining``)
``.from_pretrained(directory)``, so models fine-tuned here can be used wherever transformers is.  Files are written to temporary names and renamed, so an interrupted
export never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bert4x.checkpoints.names import GOOGLE, HF, is_transposed, split_part, weight_names
from bert4x.checkpoints.readers import CheckpointError
from bert4x.config import GPT2_NAMES, RESEARCH_DEFAULTS, T5_FAMILIES, T5_NAMES, TransformerConfig
from bert4x.files import atomic_path
from bert4x.layers.rotary import rotary_frequencies

#: The HF class of each family, by head: none ("model"), MLM, ELECTRA's discriminator.
_HF_CLASSES = {"bert": {"model": "BertModel", "mlm": "BertForMaskedLM"},
               "roformer": {"model": "RoFormerModel", "mlm": "RoFormerForMaskedLM"},
               "albert": {"model": "AlbertModel", "mlm": "AlbertForMaskedLM"},
               "electra": {"model": "ElectraModel", "mlm": "ElectraForMaskedLM",
                           "discriminator": "ElectraForPreTraining"},
               "gpt2": {"model": "GPT2Model", "mlm": "GPT2LMHeadModel"},
               "t5": {"model": "T5EncoderModel", "mlm": "T5ForConditionalGeneration"},
               "t5.1.1": {"model": "T5EncoderModel", "mlm": "T5ForConditionalGeneration"},
               "mt5.1.1": {"model": "MT5EncoderModel", "mlm": "MT5ForConditionalGeneration"}}
#: Our config names -> GPT-2's, for its HF ``config.json``.
GPT2_HF_NAMES = {ours: theirs for theirs, ours in GPT2_NAMES.items() if theirs != "n_vocab"}
#: Config fields only T5's HF config has.
_T5_FIELDS = ("num_decoder_layers", "relative_attention_num_buckets",
              "relative_attention_max_distance", "gated_feed_forward", "tie_word_embeddings",
              "scale_decoder_outputs", "cross_position_bias")
#: Families whose HF config states the embedding size (factorised embeddings).
_HF_EMBEDDING_SIZE = ("roformer", "albert", "electra")


def hf_config(config: TransformerConfig, model_name: str, head: str = "model") -> dict:
    """The HF ``config.json`` for our config with ``head`` ("model", "mlm" or
    "discriminator"), refusing what HF's classes cannot express."""
    if model_name == "albert_unshared":
        raise CheckpointError("ALBERT checkpoints hold one block that every layer shares; "
                              "albert_unshared has one per layer, so it has no ALBERT file: "
                              "save it with model.save_weights")
    if model_name not in _HF_CLASSES:
        raise CheckpointError(f"HF transformers has no {model_name!r} model to export to")
    if model_name in T5_FAMILIES:
        return _t5_hf_config(config, model_name, head)
    natural = config.hidden_size // config.num_attention_heads
    if config.hidden_size % config.num_attention_heads or config.attention_key_size != natural \
            or config.attention_head_size != natural:
        raise CheckpointError(
            "HF transformers needs key_size = head_size = hidden_size / num_attention_heads; "
            f"this model has key_size={config.attention_key_size}, head_size={config.attention_head_size}")
    if model_name == "bert" and config.embedding_dim != config.hidden_size:
        raise CheckpointError("HF BERT has no embedding_size != hidden_size; export as RoFormer "
                              "or keep the sizes equal")
    changed = [key for key, plain in RESEARCH_DEFAULTS.items() if getattr(config, key) != plain]
    if changed:
        raise CheckpointError(f"HF transformers' {model_name} cannot express {changed}; "
                              "keep this model in Keras format")
    values = {
        "architectures": [_HF_CLASSES[model_name][head]],
        "model_type": model_name,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    }
    for key, value in config.to_dict().items():
        if key not in ("head_size", "key_size", "embedding_size", "max_relative_position",
                       "initializer", "attention_scale_length", *_T5_FIELDS,
                       *RESEARCH_DEFAULTS):
            values[key] = value
    if model_name in _HF_EMBEDDING_SIZE:
        values["embedding_size"] = config.embedding_dim
    if model_name == "gpt2":
        del values["type_vocab_size"]
        values = {GPT2_HF_NAMES.get(key, key): value for key, value in values.items()}
        values["embd_pdrop"] = config.hidden_dropout_prob
    return values


def _t5_hf_config(config: TransformerConfig, model_name: str, head: str) -> dict:
    """HF ``T5Config``/``MT5Config`` values for a T5-family config."""
    if config.cross_position_bias:
        raise CheckpointError("HF's T5 has no relative bias in its cross-attention "
                              "(bert4keras' cross_position_bias); keep this model in Keras or "
                              "TF format")
    activation = {"gelu_approximate": "gelu"}.get(config.activation, config.hidden_act)
    values = {
        "architectures": [_HF_CLASSES[model_name][head]],
        "model_type": "mt5" if model_name == "mt5.1.1" else "t5",
        "feed_forward_proj": f"gated-{activation}" if config.gated_feed_forward else activation,
        "d_kv": config.attention_key_size, "is_encoder_decoder": True, "pad_token_id": 0,
        "decoder_start_token_id": 0,
        "num_decoder_layers": config.num_decoder_layers or config.num_hidden_layers,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "tie_word_embeddings": config.tie_word_embeddings,
    }
    if config.scale_decoder_outputs is not None:
        values["scale_decoder_outputs"] = config.scale_decoder_outputs
    for theirs, ours in T5_NAMES.items():
        values[theirs] = getattr(config, ours)
    values["vocab_size"] = config.vocab_size
    return values


def _named_arrays(model, fmt: str, model_name: str, hf_prefix=None, layer_prefix="") -> dict:
    """``{checkpoint name: float32 array}`` for every weight of ``model`` (whose layer names
    may start with ``layer_prefix``)."""
    ours = {variable.path: variable.path.removeprefix(layer_prefix) for variable in model.weights}
    checkpoint_names = weight_names(list(ours.values()), fmt, hf_prefix, model_name)
    names = {path: checkpoint_names[unprefixed] for path, unprefixed in ours.items()}
    unmapped = [path for path, name in names.items() if name is None]
    mapped = [name for name in names.values() if name is not None]
    if len(set(mapped)) < len(mapped):
        raise CheckpointError(f"the {fmt} format of {model_name!r} stores several of its "
                              "weights under one name (ALBERT's shared block); save this "
                              "model with model.save_weights")
    if unmapped:
        raise CheckpointError(f"the {fmt} format of {model_name!r} has no place for: "
                              + ", ".join(unmapped))
    arrays, parts = {}, {}
    for variable in model.weights:
        value = np.asarray(variable.numpy(), dtype="float32")
        name, part, count = split_part(names[variable.path])
        if part is not None:  # stored fused with its siblings (GPT-2's c_attn): joined below
            parts.setdefault(name, [None] * count)[part] = (variable.path, value)
            continue
        if is_transposed(variable.path, fmt, model_name):
            value = value.T
        arrays[name] = np.ascontiguousarray(value)
    for name, pieces in parts.items():
        value = np.concatenate([piece[1] for piece in pieces], axis=-1)
        if is_transposed(pieces[0][0], fmt, model_name):
            value = value.T
        arrays[name] = np.ascontiguousarray(value)
    return arrays


def _hf_sinusoid_table(positions: int, dim: int) -> np.ndarray:
    """HF RoFormer's ``embed_positions`` layout: [sin of all pairs | cos of all pairs]."""
    angles = np.arange(positions)[:, None] * rotary_frequencies(dim)[None, :]
    return np.ascontiguousarray(np.concatenate([np.sin(angles), np.cos(angles)], 1), "float32")


def _make_directory(directory) -> None:
    """Create the export directory, refusing a path that is a file (``os.makedirs`` would
    raise a bare ``FileExistsError``)."""
    directory = os.fspath(directory)
    for parent in _parents(os.path.abspath(directory)):
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise CheckpointError(f"cannot export to {directory}: {parent} is a file, not a "
                                  "directory; give a new directory name")
    os.makedirs(directory, exist_ok=True)


def _parents(path: str):
    """``path`` and each directory above it."""
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def export_huggingface(model, directory, config: TransformerConfig, model_name: str,
                       hf_prefix: str, head: str = "model", dtype: str = "float32",
                       layer_prefix: str = "") -> str:
    """Write ``model``'s weights (stored as ``dtype``: float32 or float16) and config, for
    the HF class of ``head`` (see :func:`hf_config`), to ``directory``; returns the
    directory."""
    from safetensors.numpy import save_file

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    config_values = dict(hf_config(config, model_name, head), torch_dtype=dtype)
    tensors = _named_arrays(model, HF, model_name, hf_prefix, layer_prefix)
    if model_name == "roformer":
        # transformers recomputes this fixed table but reports it MISSING when absent.
        tensors[f"{hf_prefix}.encoder.embed_positions.weight"] = _hf_sinusoid_table(
            config.max_position_embeddings, config.attention_head_size)
    tensors = {name: value.astype(dtype) for name, value in tensors.items()}
    _make_directory(directory)
    weights_file = os.path.join(directory, "model.safetensors")
    config_file = os.path.join(directory, "config.json")
    with atomic_path(weights_file) as temporary:
        save_file(tensors, temporary, metadata={"format": "pt"})
    with atomic_path(config_file) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump(config_values, handle, indent=2, ensure_ascii=False)
    return os.fspath(directory)


def save_google_checkpoint(model, prefix, model_name: str, layer_prefix: str = "") -> str:
    """Write ``model``'s weights as a TF checkpoint under Google's variable names
    (``prefix.index`` + ``prefix.data-00000-of-00001``); returns ``prefix``."""
    import tensorflow as tf

    arrays = _named_arrays(model, GOOGLE, model_name, layer_prefix=layer_prefix)
    prefix = os.fspath(prefix)
    directory = os.path.dirname(os.path.abspath(prefix))
    _make_directory(directory)
    temporary = os.path.join(directory, f".{os.path.basename(prefix)}.tmp")
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=temporary, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[name]) for name in names])
    for suffix in (".data-00000-of-00001", ".index"):  # the index last: it makes the checkpoint
        os.replace(temporary + suffix, prefix + suffix)
    return prefix
