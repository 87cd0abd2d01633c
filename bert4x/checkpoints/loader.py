"""Load a checkpoint into a built model, checking every name and shape.

Nothing is skipped silently: weights the model has but the checkpoint lacks (*missing*) and
checkpoint entries nothing reads (*unused*) are errors unless the caller allows them.  Entries
that are not weights (optimizer slots, HF's fixed RoPE table, tied duplicates) are ignored, and
heads the caller did not build (pooler, MLM, NSP) are listed as skipped, since loading an encoder
from a full pre-training checkpoint is the common case.
"""

from __future__ import annotations

import dataclasses
import re
from typing import List, Optional, Sequence

import numpy as np

from bert4x.checkpoints.names import (
    GOOGLE, HF, is_transposed, layout_of, split_part, weight_names,
)
from bert4x.checkpoints.readers import Checkpoint, CheckpointError, open_checkpoint

#: How errors name the families.
FAMILY_NAMES = {"bert": "BERT", "roformer": "RoFormer", "roformer_v2": "RoFormer-V2",
                "gau_alpha": "GAU-α", "flash": "FLASH", "albert": "ALBERT",
                "albert_unshared": "ALBERT", "electra": "ELECTRA", "gpt2": "GPT-2",
                "nezha": "NEZHA", "gpt": "GPT", "gpt2_ml": "GPT2-ML", "t5": "T5", "t5.1.1": "T5.1.1", "mt5.1.1": "mT5"}
#: Families stored under another's names: FLASH units are saved as GAU-α's, and an unshared
#: ALBERT reads ALBERT's one block into each of its layers.
_SAME_FILES = {"flash": "gau_alpha", "albert_unshared": "albert", "t5.1.1": "t5",
               "mt5.1.1": "t5"}

#: Weights indexed by vocabulary id, sliced by ``keep_tokens``.
_VOCAB_INDEXED = ("Embedding-Token/embeddings", "MLM-Bias/bias")
#: Weights no checkpoint holds by design: a conditional norm's projections of its condition
#: (zero-initialised, so the model starts as the unconditional one).
_NEW_BY_DESIGN = re.compile(r"/(gamma_dense|beta_dense|condition_hidden)/")


@dataclasses.dataclass
class LoadReport:
    """What a load did, by name; ``str(report)`` is a readable summary."""

    checkpoint: str
    fmt: str
    loaded: List[str]
    missing: List[str]
    unused: List[str]
    skipped_heads: List[str]

    def __str__(self):
        lines = [f"{self.checkpoint} ({self.fmt}): loaded {len(self.loaded)} weights"]
        for title, names in (("missing from checkpoint", self.missing),
                             ("unused checkpoint entries", self.unused),
                             ("heads not built, skipped", self.skipped_heads)):
            if names:
                lines.append(f"  {title} ({len(names)}): " + ", ".join(names))
        return "\n".join(lines)


def guess_architecture(checkpoint: Checkpoint) -> Optional[str]:
    """Best guess of the model family a checkpoint was saved from, for error messages."""
    names = set(checkpoint.names)
    if checkpoint.fmt == GOOGLE:
        if any("GAU" in n or "gau" in n for n in names):
            return "gau_alpha"
        if any(n.startswith("electra/") for n in names):
            return "electra"
        if any(n.startswith("gpt/") for n in names):
            return "gpt"
        if any(n.startswith("newslm/") for n in names):
            return "gpt2_ml"
        if any(n.startswith("bert/encoder/transformer/group_0/") for n in names):
            return "albert"
        if "bert/embeddings/position_embeddings" in names:
            return "bert"
        if "bert/embeddings/LayerNorm/gamma" in names:
            return "roformer"
        if "bert/embeddings/word_embeddings" in names:
            return "roformer_v2"
        return None
    if any(".albert_layer_groups." in n for n in names):
        return "albert"
    if any(re.search(r"(^|\.)h\.0\.attn\.c_attn\.", n) for n in names):
        return "gpt2"
    if any(n.startswith("encoder.block.0.layer.0.SelfAttention.") for n in names):
        return "t5"
    prefixes = {n.split(".", 1)[0] for n in names}
    for family in ("bert", "roformer", "electra"):
        if family in prefixes:
            return family
    if "embeddings.position_embeddings.weight" in names:
        return "bert"
    if "embeddings.word_embeddings.weight" in names:
        return "roformer"
    return None


def _hf_aliases(names: Sequence[str], prefix: Optional[str], top_level: re.Pattern) -> dict:
    """Canonical HF name -> stored name: adds a missing family prefix (to names that are not
    ``top_level`` heads) and renames legacy ``LayerNorm.gamma/beta`` to ``weight/bias``."""
    aliases = {}
    has_prefix = bool(prefix) and any(n.startswith(prefix + ".") for n in names)
    for name in names:
        canonical = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        canonical = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", canonical)
        if prefix and not has_prefix and not top_level.match(canonical):
            canonical = f"{prefix}.{canonical}"
        aliases[canonical] = name
    return aliases


def load_checkpoint(model, checkpoint_path, model_name: str, hf_prefix: Optional[str],
                    keep_tokens: Optional[Sequence[int]] = None, allow_missing: bool = False,
                    allow_unused: bool = False, check_finite: bool = True,
                    compound_tokens=None, variables=None, layer_prefix: str = "") -> LoadReport:
    """Copy checkpoint weights into ``model`` (built by the ``model_name`` family).

    Vocabulary-indexed weights are cut to ``keep_tokens``, then extended by one row per item
    of ``compound_tokens``: the mean of the rows of a list of (kept) ids, or a weighted mean
    for an ``(ids, weights)`` pair. ``variables`` limits the load to those of the model's
    weights (default: all of them); ``layer_prefix`` is what the model's layer names start
    with (``build_transformer_model(prefix=...)``), left out of the checkpoint names.

    A checkpoint whose names fit another family is refused naming that family; with
    ``check_finite`` (the default) so is one holding NaN or infinite weights."""
    checkpoint = open_checkpoint(checkpoint_path)
    if checkpoint.fmt == HF and hf_prefix is None:
        raise CheckpointError(
            f"{checkpoint.path}: bert4x reads no HF files for {model_name!r}; load its "
            "Google-format TF checkpoint instead")
    variables = {variable.path.removeprefix(layer_prefix): variable
                 for variable in (model.weights if variables is None else variables)}
    layout = layout_of(model_name)
    expected = weight_names(variables, checkpoint.fmt, hf_prefix, model_name)
    stored = (_hf_aliases(checkpoint.names, hf_prefix, layout.hf_top_level) if checkpoint.fmt == HF
              else {n: n for n in checkpoint.names})

    loaded, missing, mismatched, assignments, used = [], [], [], [], set()
    for path, variable in variables.items():
        if _NEW_BY_DESIGN.search(path):
            continue
        name, part, parts = split_part(expected[path] or "")
        if not name or name not in stored:
            missing.append(path)
            continue
        used.add(stored[name])
        value = checkpoint.get(stored[name])
        if is_transposed(path, checkpoint.fmt, model_name):
            value = value.T
        if part is not None:  # one of several weights stored as one tensor (GPT-2's c_attn)
            if value.shape[-1] % parts:
                mismatched.append(f"{path} <- {stored[name]}: checkpoint {tuple(value.shape)} "
                                  f"does not split into {parts} parts")
                continue
            value = np.split(value, parts, axis=-1)[part]
        if path in _VOCAB_INDEXED:
            value = _vocabulary_rows(value, keep_tokens, compound_tokens, name)
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(f"{path} <- {stored[name]}: checkpoint {tuple(value.shape)}, "
                              f"model {tuple(variable.shape)}")
            continue
        assignments.append((variable, stored[name], value))
        loaded.append(path)

    leftovers = [n for n in checkpoint.names
                 if n not in used and not layout.not_weights[checkpoint.fmt].search(n)]
    skipped_heads = [n for n in leftovers if layout.heads[checkpoint.fmt].search(n)]
    unused = [n for n in leftovers if n not in skipped_heads]
    report = LoadReport(checkpoint.path, checkpoint.fmt, loaded, missing, unused, skipped_heads)

    problems = []
    if mismatched:
        problems.append("shape mismatch:\n    " + "\n    ".join(mismatched))
    guess = guess_architecture(checkpoint)
    if guess is not None and _SAME_FILES.get(guess, guess) != _SAME_FILES.get(model_name, model_name) \
            and (missing or unused or mismatched):
        # Another family's file: allow_missing would only give a half-random model.
        raise CheckpointError(
            f"cannot load {checkpoint.path} into {model_name!r}: this looks like a "
            f"{FAMILY_NAMES.get(guess, guess)} checkpoint: use model=\"{guess}\" (read as "
            f"{model_name!r}, weights missing: {len(missing)}, entries unused: {len(unused)}, "
            f"shapes differing: {len(mismatched)}; first: "
            f"{(missing or unused or mismatched)[0]})")
    if missing and not allow_missing:
        problems.append("weights missing from the checkpoint (pass allow_missing=True to keep "
                        "them initialised): " + ", ".join(missing))
    if unused and not allow_unused:
        problems.append("checkpoint entries nothing reads (pass allow_unused=True to ignore): "
                        + ", ".join(unused))
    if problems:
        raise CheckpointError(f"cannot load {checkpoint.path} into {model_name!r}:\n  "
                              + "\n  ".join(problems))
    if check_finite:
        _check_finite(checkpoint.path, [(name, value) for _, name, value in assignments])
    for variable, _, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return report


def _check_finite(path: str, named_values) -> None:
    """Refuse NaN or infinite weights: a file damaged after its header was written still
    loads, and training from it runs whole epochs at ``loss: nan``."""
    bad = [(name, int(np.size(value) - np.count_nonzero(np.isfinite(value))), np.size(value))
           for name, value in named_values
           if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all()]
    if bad:
        listed = ", ".join(f"{name} ({count} of {size})" for name, count, size in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(
            f"{path}: {len(bad)} tensors hold NaN or infinite values: {listed}{more}; the file "
            "is damaged or was saved from a diverged run (pass check_finite=False to load it "
            "anyway)")


def _vocabulary_rows(value: np.ndarray, keep_tokens, compound_tokens, name: str) -> np.ndarray:
    if keep_tokens is not None:
        value = value[_row_ids(keep_tokens, value, "keep_tokens must be a non-empty list of "
                               f"ids in [0, {value.shape[0]}) for {name}")]
    if not compound_tokens:
        return value
    rows = []
    for number, item in enumerate(compound_tokens):
        ids, weights = (item, None) if isinstance(item, list) else item
        ids = _row_ids(ids, value, f"compound_tokens[{number}] must list ids in "
                                   f"[0, {value.shape[0]}) for {name}, got {item!r}")
        rows.append(np.average(value[ids].astype("float64"), axis=0, weights=weights))
    return np.concatenate([value, np.asarray(rows, dtype=value.dtype)], axis=0)


def _row_ids(ids, value: np.ndarray, message: str) -> np.ndarray:
    """``ids`` as int64 row indices of ``value``; a non-empty 1-D list in range, else
    ``message``."""
    ids = np.asarray(ids, dtype="int64")
    if ids.ndim != 1 or ids.size == 0 or ids.min() < 0 or ids.max() >= value.shape[0]:
        raise CheckpointError(message)
    return ids
