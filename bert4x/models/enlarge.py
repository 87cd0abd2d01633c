"""Lossless enlargement: a wider and deeper model that computes exactly what a trained one does.

Su Jianlin's 我们可以无损放大一个Transformer模型吗 (kexue.fm) asks whether a trained Transformer
can be grown and keep its function, so that training continues from it rather than from
scratch. For the post-norm families (BERT, RoFormer, RoFormer-V2, GAU-α) it can:

* **Width × k.** Every hidden vector x becomes k copies [x; …; x]. A kernel [m, n] between two
  widened sides becomes the k×k block matrix of W/k, so k copies in give k copies out; a side
  that is not widened keeps its size (no tiling, no division on it). A norm over k copies has
  the mean and variance of one, so norms only tile their scale and offset. Attention gets k
  times the heads at the same head size, each new head a copy: every head's scores, softmax
  and RoPE are untouched. A GAU unit widens its e (u and v) and keeps its key size s.
* **The embeddings, tied to the output.** The token, segment and position tables are tiled and
  divided by k: the embedding norm cannot see the scale (it divides it out), and the tied MLM
  output of k copies against the tables / k gives back the original logits.
* **Depth.** A new block gets zero output projections (attention output, FFN output, GAU
  o_dense), so both residual branches add nothing. In a post-norm stack its input is already
  normalised, so a norm without scale and offset returns it unchanged. The block before it
  hands its last norm's scale and offset to the new block's last norm and keeps a bare one,
  so the stack's output is the same. The new block's other weights copy the block before it.

The result equals the original to float32 rounding (tests/test_enlarge.py, every family).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Optional, Sequence

import numpy as np
from keras import ops

from bert4x.config import TransformerConfig

#: The families this construction covers: post-norm, with tied MLM outputs.
ENLARGEABLE = ("bert", "roformer", "roformer_v2", "gau_alpha")
_BLOCK = re.compile(r"^Transformer-(\d+)-(.*)$")
#: Weights that leave a residual branch: zero in a new block.
_BRANCH_OUTPUTS = ("MultiHeadSelfAttention/output/", "FeedForward/output/",
                   "GatedAttentionUnit/o_dense/")


def check_enlargeable(family: str) -> None:
    """Refuse, by name, a family the construction does not cover."""
    if family not in ENLARGEABLE:
        raise ValueError(f"model={family!r} cannot be enlarged losslessly here; "
                         f"covered: {', '.join(ENLARGEABLE)}")


def enlarged_config(config: TransformerConfig, width: int = 1,
                    layers: Optional[int] = None) -> TransformerConfig:
    """``config`` with hidden size, heads and FFN (or GAU) width × ``width``, and
    ``layers`` blocks (the same number by default)."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a whole factor >= 1, got {width!r}")
    layers = config.num_hidden_layers if layers is None else layers
    if layers < config.num_hidden_layers:
        raise ValueError(f"enlarging cannot remove blocks: the model has "
                         f"{config.num_hidden_layers}, asked for {layers}")
    if config.embedding_size not in (None, config.hidden_size):
        raise ValueError("factorised embeddings (embedding_size != hidden_size) are not "
                         "covered: their mapping layer has no lossless widening here")
    return dataclasses.replace(
        config, hidden_size=config.hidden_size * width,
        num_attention_heads=config.num_attention_heads * width,
        intermediate_size=config.intermediate_size * width, num_hidden_layers=layers,
        embedding_size=None)


def inserted_after(old_layers: int, new_layers: int) -> list:
    """The original block each new block follows, spread evenly over the stack."""
    extra = new_layers - old_layers
    return sorted(int(i) for i in np.floor((np.arange(extra) + 1) * old_layers / (extra + 1)))


def block_plan(old_layers: int, new_layers: int) -> list:
    """For each block of the deeper stack: (original block index, is_new)."""
    after = inserted_after(old_layers, new_layers)
    plan = []
    for index in range(old_layers):
        plan.append((index, False))
        plan.extend((index, True) for _ in range(after.count(index)))
    return plan


def _widen(value: np.ndarray, path: str, width: int, gau_units: Optional[int]) -> np.ndarray:
    """One weight of the original model, widened ``width`` times (see the module docstring)."""
    if width == 1:
        return value
    name = path.rsplit("/", 1)[-1]
    if path.startswith("Embedding-") and name == "embeddings":
        return np.tile(value, (1, width)) / width
    if path == "MLM-Bias/bias" or "_scaleoffset/" in path:
        return value  # vocabulary-sized, or the GAU key size s, which stays
    if value.ndim == 1:
        return np.tile(value, width)
    if "GatedAttentionUnit/i_dense/" in path:
        # Output columns [u (e) | v (e) | z (s)]: u and v widen, z (the key path) stays.
        rows = np.tile(value, (width, 1)) / width
        u, v, z = np.split(rows, [gau_units, 2 * gau_units], axis=1)
        return np.concatenate([np.tile(u, (1, width)), np.tile(v, (1, width)), z], axis=1)
    return np.tile(value, (width, width)) / width


def enlarge_weights(old_weights: dict, old_config: TransformerConfig, new_config: TransformerConfig,
                    family: str) -> dict:
    """The enlarged model's weights by path, from the original's (``{path: array}``)."""
    check_enlargeable(family)
    width = new_config.hidden_size // old_config.hidden_size
    gau_units = old_config.intermediate_size if family == "gau_alpha" else None
    wide = {path: _widen(np.asarray(value), path, width, gau_units)
            for path, value in old_weights.items()}
    new, blocks = {}, collections.defaultdict(dict)  # blocks: old index -> {part: value}
    for path, value in wide.items():
        found = _BLOCK.match(path)
        if found:
            blocks[int(found.group(1))][found.group(2)] = value
        else:
            new[path] = value
    plan = block_plan(old_config.num_hidden_layers, new_config.num_hidden_layers)
    for new_index, (old_index, is_new) in enumerate(plan):
        for part, value in blocks[old_index].items():
            zeroed = is_new and part.startswith(_BRANCH_OUTPUTS)
            new[f"Transformer-{new_index}-{part}"] = (np.zeros_like(value) if zeroed
                                                     else value.copy())
    _hand_over_last_norms(new, plan)
    return new


def _hand_over_last_norms(weights: dict, plan: Sequence) -> None:
    """Give each new block the scale and offset of the last norm of the block before it (and
    its own first norm none); leave that block a bare norm. Families without norm parameters
    (RoFormer-V2, GAU-α) have nothing to move."""
    last_norm = _last_norm_name(weights)
    if last_norm is None:
        return
    for index, (_, is_new) in enumerate(plan):
        if not is_new:
            continue
        before, here = f"Transformer-{index - 1}-{last_norm}", f"Transformer-{index}-{last_norm}"
        for name, bare in (("gamma", 1.0), ("beta", 0.0)):
            weights[f"{here}/{name}"] = weights[f"{before}/{name}"].copy()
            weights[f"{before}/{name}"] = np.full_like(weights[f"{before}/{name}"], bare)
            first = f"Transformer-{index}-MultiHeadSelfAttention-Norm/{name}"
            if first in weights:
                weights[first] = np.full_like(weights[first], bare)


def _last_norm_name(weights: dict) -> Optional[str]:
    for candidate in ("FeedForward-Norm", "GatedAttentionUnit-Norm"):
        if f"Transformer-0-{candidate}/gamma" in weights:
            return candidate
    return None


def enlarge_model(built, width: int = 1, layers: Optional[int] = None):
    """A :class:`~bert4x.models.TransformerModel` ``width`` times wider with ``layers`` blocks,
    built like ``built`` (same family, application and heads) and computing the same outputs
    (the sequence output as ``width`` copies of the original's)."""
    from bert4x.models.build import build_transformer_model

    check_enlargeable(built.model_name)  # before building a model it cannot fill
    new_config = enlarged_config(built.config, width, layers)
    builder = built.builder
    bigger = build_transformer_model(
        new_config, model=built.model_name, application=builder.application,
        with_mlm=builder.with_mlm, with_pool=builder.with_pool, return_keras_model=False)
    old = {w.path: ops.convert_to_numpy(w) for w in built.model.weights}
    new = enlarge_weights(old, built.config, new_config, built.model_name)
    targets = {w.path: w for w in bigger.model.weights}
    if set(targets) != set(new):
        raise ValueError("the enlarged weights do not match the enlarged model: "
                         f"missing {sorted(set(targets) - set(new))[:5]}, "
                         f"unexpected {sorted(set(new) - set(targets))[:5]}")
    for path, variable in targets.items():
        variable.assign(new[path].astype(variable.dtype))
    return bigger
