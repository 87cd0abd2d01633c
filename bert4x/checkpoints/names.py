"""The tables that tie our weight paths to Google TF and HF checkpoint names, one per layout.

Each row is (our weight path, Google TF name, HF name); ``{i}`` is a layer index and ``{p}`` the HF
family prefix (``bert``/``roformer``/``albert``/``electra``).  A ``None`` means that format has no
such weight.  Both loading and exporting read these tables, so they cannot drift apart.  HF
stores ``nn.Linear`` weights as [out, in]: every path ending in ``/kernel`` is transposed on the
HF side.

Families share a layout where their files do: BERT's serves RoFormer, RoFormer-V2, GAU-α and
FLASH. ALBERT's and ELECTRA's releases name the same weights their own way.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

GOOGLE, HF = "google", "hf"

_BERT_MODEL_ROWS = [
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

_BERT_LAYER_ROWS = [
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


def _renamed(rows, google=(), hf=(), drop=()) -> List[Tuple]:
    """``rows`` with substitutions applied to their Google / HF names, less the rows whose path
    starts with one of ``drop``."""
    renamed = []
    for path, google_name, hf_name in rows:
        if path.startswith(tuple(drop)):
            continue
        for old, new in google:
            google_name = google_name and google_name.replace(old, new)
        for old, new in hf:
            hf_name = hf_name and hf_name.replace(old, new)
        renamed.append((path, google_name, hf_name))
    return renamed


_BERT_BLOCK_ROWS = [row for row in _BERT_LAYER_ROWS if "GatedAttentionUnit" not in row[0]]

# ELECTRA (google-research/electra; HF ElectraModel, ElectraForPreTraining, ElectraForMaskedLM):
# BERT's body under "electra", no pooler; the generator's MLM head and the discriminator's.
_ELECTRA_ROWS = _renamed(
    _BERT_MODEL_ROWS + _BERT_BLOCK_ROWS,
    google=[("bert/encoder/embedding_hidden_mapping_in", "electra/embeddings_project"),
            ("bert/", "electra/"), ("cls/predictions/transform/", "generator_predictions/"),
            ("cls/predictions/output_bias", "generator_predictions/output_bias")],
    hf=[("cls.predictions.transform.", "generator_predictions."),
        ("cls.predictions.bias", "generator_lm_head.bias")],
    drop=("Pooler/",),
) + [
    ("Discriminator-Dense/kernel", "discriminator_predictions/dense/kernel",
     "discriminator_predictions.dense.weight"),
    ("Discriminator-Dense/bias", "discriminator_predictions/dense/bias",
     "discriminator_predictions.dense.bias"),
    ("Discriminator-Prediction/kernel", "discriminator_predictions/dense_1/kernel",
     "discriminator_predictions.dense_prediction.weight"),
    ("Discriminator-Prediction/bias", "discriminator_predictions/dense_1/bias",
     "discriminator_predictions.dense_prediction.bias"),
]

# ALBERT (google-research/albert; HF AlbertModel, AlbertForMaskedLM): one block, stored once
# as group 0's inner group 0, which every layer runs. Our shared block's paths carry no index;
# albert_unshared's indexed paths all read that one stored block.
_ALBERT_GOOGLE_BLOCK = "bert/encoder/transformer/group_0/inner_group_0/"
_ALBERT_HF_BLOCK = "{p}.encoder.albert_layer_groups.0.albert_layers.0."
_ALBERT_BLOCK_PARTS = [
    # ours, Google, HF (after the block prefixes above)
    ("MultiHeadSelfAttention/query", "attention_1/self/query", "attention.query"),
    ("MultiHeadSelfAttention/key", "attention_1/self/key", "attention.key"),
    ("MultiHeadSelfAttention/value", "attention_1/self/value", "attention.value"),
    ("MultiHeadSelfAttention/output", "attention_1/output/dense", "attention.dense"),
    ("FeedForward/intermediate", "ffn_1/intermediate/dense", "ffn"),
    ("FeedForward/output", "ffn_1/intermediate/output/dense", "ffn_output"),
]
_ALBERT_BLOCK_NORMS = [("MultiHeadSelfAttention-Norm", "LayerNorm", "attention.LayerNorm"),
                       ("FeedForward-Norm", "LayerNorm_1", "full_layer_layer_norm")]
_ALBERT_ROWS = _renamed(
    _BERT_MODEL_ROWS,
    hf=[("{p}.embeddings_project", "{p}.encoder.embedding_hidden_mapping_in"),
        ("{p}.pooler.dense.", "{p}.pooler."), ("cls.predictions.transform.", "predictions."),
        ("cls.predictions.bias", "predictions.bias")],
) + [
    (f"Transformer{{block}}-{ours}/{var}", f"{_ALBERT_GOOGLE_BLOCK}{google}/{var}",
     f"{_ALBERT_HF_BLOCK}{hf}.{'weight' if var == 'kernel' else 'bias'}")
    for ours, google, hf in _ALBERT_BLOCK_PARTS for var in ("kernel", "bias")
] + [
    (f"Transformer{{block}}-{ours}/{var}", f"{_ALBERT_GOOGLE_BLOCK}{google}/{var}",
     f"{_ALBERT_HF_BLOCK}{hf}.{'weight' if var == 'gamma' else 'bias'}")
    for ours, google, hf in _ALBERT_BLOCK_NORMS for var in ("gamma", "beta")
]


# GPT-2 (HF GPT2Model / GPT2LMHeadModel; HF names only): pre-norm blocks, one fused
# query/key/value projection per layer, stored by Conv1D as [in, out] (not transposed). A
# name ending in "#k/n" is part k of n along the stored tensor's last axis.
_GPT2_ROWS = [
    ("Embedding-Token/embeddings", None, "{p}.wte.weight"),
    ("Embedding-Position/embeddings", None, "{p}.wpe.weight"),
    ("Output-Norm/gamma", None, "{p}.ln_f.weight"),
    ("Output-Norm/beta", None, "{p}.ln_f.bias"),
] + [
    (f"Transformer-{{i}}-MultiHeadSelfAttention/{part}/{var}", None,
     f"{{p}}.h.{{i}}.attn.c_attn.{'weight' if var == 'kernel' else 'bias'}#{k}/3")
    for k, part in enumerate(("query", "key", "value")) for var in ("kernel", "bias")
] + [
    (f"Transformer-{{i}}-{ours}/{var}", None,
     f"{{p}}.h.{{i}}.{hf}.{'weight' if var in ('kernel', 'gamma') else 'bias'}")
    for ours, hf, variables in [
        ("MultiHeadSelfAttention/output", "attn.c_proj", ("kernel", "bias")),
        ("MultiHeadSelfAttention-Norm", "ln_1", ("gamma", "beta")),
        ("FeedForward/intermediate", "mlp.c_fc", ("kernel", "bias")),
        ("FeedForward/output", "mlp.c_proj", ("kernel", "bias")),
        ("FeedForward-Norm", "ln_2", ("gamma", "beta")),
    ] for var in variables
]


# T5 / mT5 (HF T5ForConditionalGeneration, MT5..., T5EncoderModel; the original releases' TF
# names, which bert4keras reads and writes too): no biases, RMS norms with a scale only, a
# relative bias in each stack's first layer, stored [heads, buckets] in TF. "{gated}" is "_0"
# in a gated feed-forward (whose gate is wi_1) and empty otherwise; "{b}" is the block index
# as TF writes it (block_007). mT5's TF names say rms_norm where T5's say layer_norm.
_T5_ATTENTION = [("query", "q"), ("key", "k"), ("value", "v"), ("output", "o")]
_T5_ROWS = [
    ("Embedding-Token/embeddings", "shared/embedding", "shared.weight"),
    ("Encoder-Embedding-Relative-Position/embeddings",
     "encoder/block_000/layer_000/SelfAttention/relative_attention_bias",
     "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
    ("Decoder-Embedding-Relative-Position/embeddings",
     "decoder/block_000/layer_000/SelfAttention/relative_attention_bias",
     "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
    ("Encoder-Output-Norm/gamma", "encoder/final_layer_norm/scale",
     "encoder.final_layer_norm.weight"),
    ("Decoder-Output-Norm/gamma", "decoder/final_layer_norm/scale",
     "decoder.final_layer_norm.weight"),
    ("Decoder-Output-LM/kernel", "decoder/logits/kernel", "lm_head.weight"),
] + [
    (f"{stack}-Transformer-{{i}}-{part}/{ours}/kernel",
     f"{stack.lower()}/block_{{i:0>3}}/layer_{layer:03d}/{module}/{theirs}",
     f"{stack.lower()}.block.{{i}}.layer.{layer}.{module}.{theirs}.weight")
    for stack, part, layer, module in [
        ("Encoder", "MultiHeadSelfAttention", 0, "SelfAttention"),
        ("Decoder", "MultiHeadSelfAttention", 0, "SelfAttention"),
        ("Decoder", "MultiHeadCrossAttention", 1, "EncDecAttention")]
    for ours, theirs in _T5_ATTENTION
] + [
    (f"{stack}-Transformer-{{i}}-{part}-Norm/gamma",
     f"{stack.lower()}/block_{{i:0>3}}/layer_{layer:03d}/layer_norm/scale",
     f"{stack.lower()}.block.{{i}}.layer.{layer}.layer_norm.weight")
    for stack, part, layer in [
        ("Encoder", "MultiHeadSelfAttention", 0), ("Encoder", "FeedForward", 1),
        ("Decoder", "MultiHeadSelfAttention", 0), ("Decoder", "MultiHeadCrossAttention", 1),
        ("Decoder", "FeedForward", 2)]
] + [
    (f"{stack}-Transformer-{{i}}-FeedForward/{ours}/kernel",
     f"{stack.lower()}/block_{{i:0>3}}/layer_{layer:03d}/DenseReluDense/{theirs}/kernel",
     f"{stack.lower()}.block.{{i}}.layer.{layer}.DenseReluDense.{theirs}.weight")
    for stack, layer in [("Encoder", 1), ("Decoder", 2)]
    for ours, theirs in [("intermediate", "wi{gated}"), ("gate", "wi_1"), ("output", "wo")]
]
_MT5_ROWS = _renamed(_T5_ROWS, google=[("final_layer_norm/", "rms_norm/"),
                                        ("layer_norm/", "rms_norm/")])


# GPT as bert4keras stores it (CDial-GPT): BERT's names under "gpt/", "transformer" for
# "encoder"; no pooler, no MLM transform.
_GPT_ROWS = _renamed(_BERT_MODEL_ROWS + _BERT_BLOCK_ROWS,
                     google=[("bert/encoder/", "gpt/transformer/"), ("bert/", "gpt/")],
                     drop=("Pooler/", "MLM-"))
# GPT in HF's OpenAIGPT files: GPT-2's names with OpenAI's embedding names; ln_1 and ln_2
# are post-norms here, at the same paths as GPT-2's pre-norms.
_OPENAI_GPT_HF = {path: hf.replace(".wte.", ".tokens_embed.").replace(".wpe.", ".positions_embed.")
                  for path, _, hf in _GPT2_ROWS}
_GPT_ROWS = [(path, google, _OPENAI_GPT_HF.get(path)) for path, google, _ in _GPT_ROWS]
# GPT-2 as bert4keras stores it: GPT's names, the pre-norms saved where BERT keeps its
# post-norms ("input/LayerNorm" for "output/LayerNorm"), and a final norm.
_GPT2_GOOGLE = {row[0]: row[1] for row in _renamed(
    _GPT_ROWS, google=[("output/LayerNorm", "input/LayerNorm")])}
_GPT2_GOOGLE.update({"Output-Norm/gamma": "gpt/output/LayerNorm/gamma",
                     "Output-Norm/beta": "gpt/output/LayerNorm/beta"})
_GPT2_ROWS = [(path, _GPT2_GOOGLE.get(path), hf) for path, _, hf in _GPT2_ROWS]
# GPT2-ML (imcaspar/gpt2-ml): its own names under "newslm/", layers numbered with two digits.
_GPT2_ML_ROWS = [
    ("Embedding-Token/embeddings", "newslm/embeddings/word_embed", None),
    ("Embedding-Position/embeddings", "newslm/embeddings/pos_embed", None),
    ("Embedding-Norm/gamma", "newslm/embeddings/LayerNorm_embed_norm/gamma", None),
    ("Embedding-Norm/beta", "newslm/embeddings/LayerNorm_embed_norm/beta", None),
] + [
    (f"Transformer-{{i}}-{ours}/{var}", f"newslm/layer{{i:0>2}}/{theirs}/{var}", None)
    for ours, theirs, variables in [
        ("MultiHeadSelfAttention/query", "query_layer", ("kernel", "bias")),
        ("MultiHeadSelfAttention/key", "key_layer", ("kernel", "bias")),
        ("MultiHeadSelfAttention/value", "value_layer", ("kernel", "bias")),
        ("MultiHeadSelfAttention/output", "context_projection_layer", ("kernel", "bias")),
        ("FeedForward-Norm-0", "LayerNorm_mlp_ln0", ("gamma", "beta")),
        ("FeedForward/intermediate", "intermediate", ("kernel", "bias")),
        ("FeedForward/output", "output", ("kernel", "bias")),
        ("FeedForward-Norm-1", "LayerNorm_mlp_ln1", ("gamma", "beta")),
    ] for var in variables
]


def split_part(name: str):
    """``(stored name, k, n)`` for a name of part k of n (``"...#k/n"``); ``(name, None,
    None)`` for a whole tensor."""
    stored, _, part = name.partition("#")
    if not part:
        return name, None, None
    k, n = part.split("/")
    return stored, int(k), int(n)


class Layout:
    """One family's naming: its rows; the checkpoint entries of heads a caller may not build
    (unused, but expected); and the entries that are not model weights at all (optimizer
    slots, step counters, fixed tables, tied duplicates), which are never reported.

    ``hf_heads`` are HF's top-level head modules: they sit outside the family prefix
    (``cls.``, not ``bert.cls.``), and a model saved without its heads has no prefix at all.
    ``hf_tied`` are head entries that duplicate the token embedding."""

    def __init__(self, rows, google_heads: str, hf_heads: str, hf_tied: str,
                 hf_transposed: bool = True, google_transposed: str = r"^$"):
        self.rows = rows
        self.hf_transposed = hf_transposed
        self.google_transposed = re.compile(google_transposed)
        self.hf_top_level = re.compile(rf"^({hf_heads})\.")
        self.heads = {GOOGLE: re.compile(google_heads),
                      HF: re.compile(rf"(^|\.)pooler\.|^({hf_heads})\.")}
        self.not_weights = {
            GOOGLE: re.compile(r"(/adam_[mv]$|^global_step$|^bad_steps$|^good_steps$|^loss_scale$)"),
            # buffers HF saves beside the weights (RoFormer's sinusoid table, NEZHA's
            # relative one, position ids)
            HF: re.compile(rf"(\.position_ids$|\.embed_positions\.weight$"
                           rf"|\.relative_positions_encoding\.|{hf_tied})"),
        }


_BERT = Layout(_BERT_MODEL_ROWS + _BERT_LAYER_ROWS, google_heads=r"^(bert/pooler/|cls/)",
               hf_heads="cls", hf_tied=r"^cls\.predictions\.decoder\.(weight|bias)$")
_ELECTRA = Layout(_ELECTRA_ROWS, google_heads=r"^(discriminator|generator)_predictions/",
                  hf_heads="discriminator_predictions|generator_predictions|generator_lm_head",
                  hf_tied=r"^generator_lm_head\.weight$")
_ALBERT = Layout(_ALBERT_ROWS, google_heads=r"^(bert/pooler/|cls/)",
                 hf_heads="predictions|sop_classifier",
                 hf_tied=r"^predictions\.decoder\.(weight|bias)$")

_GPT2 = Layout(_GPT2_ROWS, google_heads=r"^$", hf_heads="lm_head", hf_tied=r"^lm_head\.weight$",
               hf_transposed=False)

_GPT = Layout(_GPT_ROWS, google_heads=r"^$", hf_heads="lm_head", hf_tied=r"^lm_head\.weight$",
              hf_transposed=False)
_GPT2_ML = Layout(_GPT2_ML_ROWS, google_heads=r"^$", hf_heads="cls", hf_tied=r"^$")
_T5_OPTIONS = dict(google_heads=r"^$", hf_heads="lm_head",
                   hf_tied=r"^(encoder|decoder)\.embed_tokens\.weight$",
                   google_transposed="Relative-Position/embeddings$")
_T5 = Layout(_T5_ROWS, **_T5_OPTIONS)
_MT5 = Layout(_MT5_ROWS, **_T5_OPTIONS)

#: Which layout each family's checkpoints use.
LAYOUTS = {"albert": _ALBERT, "albert_unshared": _ALBERT, "electra": _ELECTRA, "gpt2": _GPT2,
           "t5": _T5, "t5.1.1": _T5, "mt5.1.1": _MT5, "gpt": _GPT, "gpt2_ml": _GPT2_ML}


def layout_of(model_name: str) -> Layout:
    return LAYOUTS.get(model_name, _BERT)


def is_transposed(path: str, fmt: str, model_name: str = "bert") -> bool:
    """HF ``nn.Linear`` weights are [out, in]; Keras and Google kernels, and GPT-2's
    ``Conv1D`` weights, are [in, out]. T5's TF files store the relative bias [heads, buckets]."""
    layout = layout_of(model_name)
    if fmt == GOOGLE:
        return bool(layout.google_transposed.search(path))
    return path.endswith("/kernel") and layout.hf_transposed


def weight_names(paths: Iterable[str], fmt: str, hf_prefix: Optional[str] = None,
                 model_name: str = "bert") -> Dict[str, Optional[str]]:
    """Map each of our weight ``paths`` (of a ``model_name`` model) to its name in ``fmt``
    (None when the format lacks it)."""
    if fmt not in (GOOGLE, HF):
        raise ValueError(f"unknown checkpoint format {fmt!r}")
    column = 1 if fmt == GOOGLE else 2
    paths = list(paths)
    gated = "_0" if any("FeedForward/gate/" in path for path in paths) else ""
    table, templates = {}, {}
    for row in layout_of(model_name).rows:
        if "{i}" in row[0] or "{block}" in row[0]:
            pattern = re.escape(row[0]).replace(r"\{i\}", r"(\d+)")
            pattern = pattern.replace(r"\{block\}", r"(?:-(\d+))?")
            templates[pattern] = row[column]
        else:
            table[row[0]] = row[column]
    names = {}
    for path in paths:
        template = table.get(path)
        index = None
        if template is None:
            for pattern, layer_template in templates.items():
                match = re.fullmatch(pattern, path)
                if match:
                    template, index = layer_template, match.group(1)
                    break
        if template is None or (fmt == HF and hf_prefix is None):
            names[path] = None
        else:
            names[path] = template.format(i=index, p=hf_prefix, gated=gated)
    return names
