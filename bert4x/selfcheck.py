"""An end-to-end check of the model zoo a user can run on any machine, with no downloads.

For each family it builds a small model with random weights, writes it in every checkpoint
format we support, reads each back into a fresh model and reports the largest output
difference; with transformers installed it also runs the HF export in transformers itself.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

import numpy as np

from bert4x.models import build_transformer_model

SMALL = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
FAMILIES = {"bert": "gelu", "roformer": "gelu", "roformer_v2": "relu"}


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, SMALL["vocab_size"], (4, 24)).astype("int32")
    token_ids[1, 15:] = 0
    token_ids[3, 5:] = 0
    return token_ids, (rng.random(token_ids.shape) > 0.5).astype("int32") * (token_ids > 0)


def _max_difference(a, b, token_ids):
    keep = token_ids != 0
    return float(np.abs(np.asarray(a)[keep] - np.asarray(b)[keep]).max())


def _transformers_logits(directory, token_ids, segment_ids):
    import torch
    import transformers

    model = transformers.AutoModelForMaskedLM.from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(token_ids, dtype=torch.long),
                    token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
                    attention_mask=torch.tensor(token_ids > 0, dtype=torch.long))
    return out.logits.numpy()


def run_selfcheck(print_fn=print) -> list:
    """Run the round trips; returns rows (family, route, max |difference|)."""
    have_transformers = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
    token_ids, segment_ids = _batch()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for family, activation in FAMILIES.items():
            config = dict(SMALL, hidden_act=activation)
            original = build_transformer_model(config, model=family, with_mlm="linear",
                                               return_keras_model=False)
            rng = np.random.default_rng(1)
            for variable in original.model.weights:  # move away from the default init
                variable.assign(variable.numpy() + rng.normal(0, 0.05, variable.shape))
            expected = original.model.predict([token_ids, segment_ids], verbose=0)

            prefix = original.save_google_checkpoint(os.path.join(workdir, family, "model.ckpt"))
            reloaded = build_transformer_model(config, prefix, model=family, with_mlm="linear")
            rows.append((family, "Google TF checkpoint -> bert4x", _max_difference(
                reloaded.predict([token_ids, segment_ids], verbose=0), expected, token_ids)))
            if original.builder.hf_prefix is None:
                rows.append((family, "HF safetensors export", None))
                continue
            hf_dir = original.export_huggingface(os.path.join(workdir, family, "hf"))
            reloaded = build_transformer_model(config, hf_dir, model=family, with_mlm="linear")
            rows.append((family, "HF safetensors -> bert4x", _max_difference(
                reloaded.predict([token_ids, segment_ids], verbose=0), expected, token_ids)))
            if have_transformers:
                rows.append((family, "HF safetensors -> transformers", _max_difference(
                    _transformers_logits(hf_dir, token_ids, segment_ids), expected, token_ids)))
    print_fn(f"{'model':12s} {'route':34s} {'max |logit diff|':>17s}")
    for family, route, difference in rows:
        shown = "n/a (no HF model)" if difference is None else f"{difference:.2e}"
        print_fn(f"{family:12s} {route:34s} {shown:>17s}")
    if not have_transformers:
        print_fn("(install the [test] extra to also run the exports in HF transformers)")
    return rows
