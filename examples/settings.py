"""Where the ported examples find a model and data, and how long they train.

bert4keras' examples point at a downloaded Google checkpoint and dataset; ours point at the
embedded model (``pretrained/roformer_zh_tiny``, a RoFormer, hence ``model='roformer'`` in each
script) and at the small data sets in ``examples/data``. With ``BERT4X_EXAMPLES_QUICK=1`` (what
CI sets) each example trains for one short epoch on a slice of its data, which proves that the
script runs end to end, not that it learns well.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "pretrained" / "roformer_zh_tiny"
config_path = str(MODEL_DIR / "config.json")
checkpoint_path = str(MODEL_DIR / "model.safetensors")
dict_path = str(MODEL_DIR / "vocab.txt")
DATA = ROOT / "examples" / "data"
TRIPLES = ROOT / "tasks" / "triple_extraction" / "data"
QUICK = os.environ.get("BERT4X_EXAMPLES_QUICK") == "1"


def budget(full, quick):
    """``quick`` under ``BERT4X_EXAMPLES_QUICK=1``, else ``full``: epochs, steps, data sizes."""
    return quick if QUICK else full


def data_path(*parts) -> str:
    return str(DATA.joinpath(*parts))
