"""The one table that ties our weight paths to Google TF and HF checkpoint names.

Each row is (our weight path, Google TF name, HF name); ``{i}`` is a layer index and ``{p}`` the HF
family prefix (``bert``/``roformer``).  A ``None`` means that format has no such weight.  Both
loading and exporting read this table, so they cannot drift apart.  HF stores ``nn.Linear``
weights as [out, in]: every path ending in ``/kernel`` is transposed on the HF side.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Optional

GOOGLE, HF = "google", "hf"

_MODEL_ROWS = [
    ("Embedding-Token/embeddings", "bert/embeddings/word_embeddings",
     "{p}.embeddings.word_embeddings.weight"),
    ("Embedding-Segment/embeddings", "bert/embeddings/token_type_embeddings",
     "{p}.embeddings.token_type_embeddings.weight"),
    ("Embedding-Position/embeddings", "bert/embeddings/position_embeddings",
     "{p}.embeddings.position_embeddings.weight"),
    ("Embedding-Norm/gamma", "bert/embeddings/LayerNorm/gamma", "{p}.embeddings.LayerNorm.weight"),
    ("Embedding-Norm/beta", "bert/embeddings/LayerNorm/beta", "{p}.embeddings.LayerNorm.bias"),
    ("Embedding-Mapping/kernel", "bert/encoder/embedding_hidden_mapping_in/kernel",
     "{p}.embeddings_project.weight"),
    ("Embedding-Mapping/bias", "bert/encoder/embedding_hidden_mapping_in/bias",
     "{p}.embeddings_project.bias"),
    ("Pooler/dense/kernel", "bert/pooler/dense/kernel", "{p}.pooler.dense.weight"),
    ("Pooler/dense/bias", "bert/pooler/dense/bias", "{p}.pooler.dense.bias"),
    ("MLM-Dense/kernel", "cls/predictions/transform/dense/kernel",
     "cls.predictions.transform.dense.weight"),
    ("MLM-Dense/bias", "cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias"),
    ("MLM-Norm/gamma", "cls/predictions/transform/LayerNorm/gamma",
     "cls.predictions.transform.LayerNorm.weight"),
    ("MLM-Norm/beta", "cls/predictions/transform/LayerNorm/beta",
     "cls.predictions.transform.LayerNorm.bias"),
    ("MLM-Bias/bias", "cls/predictions/output_bias", "cls.predictions.bias"),
]

_LAYER_ROWS = [
    (f"Transformer-{{i}}-MultiHeadSelfAttention/{ours}/{var}",
     f"bert/encoder/layer_{{i}}/attention/{google}/{var}",
     f"{{p}}.encoder.layer.{{i}}.attention.{hf}.{'weight' if var == 'kernel' else 'bias'}")
    for ours, google, hf in [("query", "self/query", "self.query"), ("key", "self/key", "self.key"),
                             ("value", "self/value", "self.value"),
                             ("output", "output/dense", "output.dense")]
    for var in ("kernel", "bias")
] + [
    ("Transformer-{i}-MultiHeadSelfAttention-Norm/gamma",
     "bert/encoder/layer_{i}/attention/output/LayerNorm/gamma",
     "{p}.encoder.layer.{i}.attention.output.LayerNorm.weight"),
    ("Transformer-{i}-MultiHeadSelfAttention-Norm/beta",
     "bert/encoder/layer_{i}/attention/output/LayerNorm/beta",
     "{p}.encoder.layer.{i}.attention.output.LayerNorm.bias"),
    ("Transformer-{i}-FeedForward/intermediate/kernel", "bert/encoder/layer_{i}/intermediate/dense/kernel",
     "{p}.encoder.layer.{i}.intermediate.dense.weight"),
    ("Transformer-{i}-FeedForward/intermediate/bias", "bert/encoder/layer_{i}/intermediate/dense/bias",
     "{p}.encoder.layer.{i}.intermediate.dense.bias"),
    ("Transformer-{i}-FeedForward/output/kernel", "bert/encoder/layer_{i}/output/dense/kernel",
     "{p}.encoder.layer.{i}.output.dense.weight"),
    ("Transformer-{i}-FeedForward/output/bias", "bert/encoder/layer_{i}/output/dense/bias",
     "{p}.encoder.layer.{i}.output.dense.bias"),
    ("Transformer-{i}-FeedForward-Norm/gamma", "bert/encoder/layer_{i}/output/LayerNorm/gamma",
     "{p}.encoder.layer.{i}.output.LayerNorm.weight"),
    ("Transformer-{i}-FeedForward-Norm/beta", "bert/encoder/layer_{i}/output/LayerNorm/beta",
     "{p}.encoder.layer.{i}.output.LayerNorm.bias"),
] + [
    # GAU-α's release (ZhuiyiTechnology/GAU-alpha, models.py): kernels and scale-offset gammas
    # only; biases and betas exist in FLASH units, under the same scheme. HF has no such model.
    (f"Transformer-{{i}}-GatedAttentionUnit/{part}", f"GAU_alpha/encoder/layer_{{i}}/gau/{part}",
     None)
    for part in ("i_dense/kernel", "i_dense/bias", "o_dense/kernel", "o_dense/bias",
                 "q_scaleoffset/gamma", "q_scaleoffset/beta", "k_scaleoffset/gamma",
                 "k_scaleoffset/beta", "lin_q_scaleoffset/gamma", "lin_q_scaleoffset/beta",
                 "lin_k_scaleoffset/gamma", "lin_k_scaleoffset/beta")
]

#: Checkpoint entries that belong to heads a caller may not build: unused, but expected.
HEAD_PATTERNS = {
    GOOGLE: re.compile(r"^(bert/pooler/|cls/)"),
    HF: re.compile(r"(^|\.)pooler\.|^cls\."),
}

#: Entries that are not model weights at all (optimizer slots, step counters, fixed tables,
#: tied duplicates); never reported.
NON_WEIGHT_PATTERNS = {
    GOOGLE: re.compile(r"(/adam_[mv]$|^global_step$|^bad_steps$|^good_steps$|^loss_scale$)"),
    HF: re.compile(r"(\.position_ids$|\.embed_positions\.weight$|^cls\.predictions\.decoder\.(weight|bias)$)"),
}


def is_transposed(path: str, fmt: str) -> bool:
    """HF ``nn.Linear`` weights are [out, in]; Keras and Google kernels are [in, out]."""
    return fmt == HF and path.endswith("/kernel")


def weight_names(paths: Iterable[str], fmt: str, hf_prefix: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Map each of our weight ``paths`` to its name in ``fmt`` (None when the format lacks it)."""
    if fmt not in (GOOGLE, HF):
        raise ValueError(f"unknown checkpoint format {fmt!r}")
    column = 1 if fmt == GOOGLE else 2
    table = {}
    for row in _MODEL_ROWS:
        table[row[0]] = row[column]
    layer_templates = {re.escape(row[0]).replace(r"\{i\}", r"(\d+)"): row[column] for row in _LAYER_ROWS}
    names = {}
    for path in paths:
        template = table.get(path)
        index = None
        if template is None:
            for pattern, layer_template in layer_templates.items():
                match = re.fullmatch(pattern, path)
                if match:
                    template, index = layer_template, match.group(1)
                    break
        if template is None or (fmt == HF and hf_prefix is None):
            names[path] = None
        else:
            names[path] = template.format(i=index, p=hf_prefix)
    return names
