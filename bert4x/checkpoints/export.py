"""Export a bert4x model to HF transformers' format: ``model.safetensors`` + ``config.json``.

The result loads with ``BertModel``/``BertForMaskedLM`` or ``RoFormerModel``/
``RoFormerForMaskedLM`` ``.from_pretrained(directory)``, so models fine-tuned here can be used
wherever transformers is.  Files are written to temporary names and renamed, so an interrupted
export never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bert4x.checkpoints.names import HF, is_transposed, weight_names
from bert4x.checkpoints.readers import CheckpointError
from bert4x.config import TransformerConfig

_HF_CLASSES = {"bert": ("BertModel", "BertForMaskedLM"),
               "roformer": ("RoFormerModel", "RoFormerForMaskedLM")}


def hf_config(config: TransformerConfig, model_name: str, with_mlm: bool) -> dict:
    """The HF ``config.json`` for our config, refusing what HF's classes cannot express."""
    if model_name not in _HF_CLASSES:
        raise CheckpointError(f"HF transformers has no {model_name!r} model to export to")
    natural = config.hidden_size // config.num_attention_heads
    if config.hidden_size % config.num_attention_heads or config.attention_key_size != natural \
            or config.attention_head_size != natural:
        raise CheckpointError(
            "HF transformers needs key_size = head_size = hidden_size / num_attention_heads; "
            f"this model has key_size={config.attention_key_size}, head_size={config.attention_head_size}")
    if model_name == "bert" and config.embedding_dim != config.hidden_size:
        raise CheckpointError("HF BERT has no embedding_size != hidden_size; export as RoFormer "
                              "or keep the sizes equal")
    values = {
        "architectures": [_HF_CLASSES[model_name][1 if with_mlm else 0]],
        "model_type": model_name,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    }
    for key, value in config.to_dict().items():
        if key not in ("head_size", "key_size", "embedding_size"):
            values[key] = value
    if model_name == "roformer":
        values["embedding_size"] = config.embedding_dim
    return values


def export_huggingface(model, directory, config: TransformerConfig, model_name: str,
                       hf_prefix: str, with_mlm: bool) -> str:
    """Write ``model``'s weights and config to ``directory``; returns the directory."""
    from safetensors.numpy import save_file

    config_values = hf_config(config, model_name, with_mlm)
    paths = [variable.path for variable in model.weights]
    names = weight_names(paths, HF, hf_prefix)
    unmapped = [path for path, name in names.items() if name is None]
    if unmapped:
        raise CheckpointError(f"HF {model_name} has no place for: {', '.join(unmapped)}")
    tensors = {}
    for variable in model.weights:
        value = np.asarray(variable.numpy(), dtype="float32")
        if is_transposed(variable.path, HF):
            value = value.T
        tensors[names[variable.path]] = np.ascontiguousarray(value)
    os.makedirs(directory, exist_ok=True)
    weights_file = os.path.join(directory, "model.safetensors")
    config_file = os.path.join(directory, "config.json")
    save_file(tensors, weights_file + ".tmp", metadata={"format": "pt"})
    with open(config_file + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(config_values, handle, indent=2, ensure_ascii=False)
    os.replace(weights_file + ".tmp", weights_file)
    os.replace(config_file + ".tmp", config_file)
    return os.fspath(directory)
