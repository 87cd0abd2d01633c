"""Files shipped with bert4x: the Chinese BERT vocabulary and the real data sets (see SOURCES.md)."""

import json
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent
CHINESE_BERT_VOCAB = ROOT / "vocab" / "chinese_bert_vocab.txt"
KGCLUE_DIR = ROOT / "data" / "kgclue"
STSB_ZH_DIR = ROOT / "data" / "sts-b-zh"


def chinese_texts() -> List[str]:
    """Every KgCLUE question and answer field and every STS-B-zh sentence (104,100 real texts),
    for tokenizer checks and benchmarks."""
    texts = []
    for split in ("train", "dev", "test_public"):
        with open(KGCLUE_DIR / f"{split}.json", encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                texts.append(record["question"])
                texts.extend(record["answer"].split(" ||| "))
    for split in ("train", "valid", "test"):
        with open(STSB_ZH_DIR / f"{split}.data", encoding="utf-8") as handle:
            for line in handle:
                texts.extend(line.rstrip("\n").split("\t")[:2])
    return texts
