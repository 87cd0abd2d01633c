"""Files shipped with bert4x: the Chinese BERT vocabulary and the real data sets (see SOURCES.md)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
CHINESE_BERT_VOCAB = ROOT / "vocab" / "chinese_bert_vocab.txt"
KGCLUE_DIR = ROOT / "data" / "kgclue"
STSB_ZH_DIR = ROOT / "data" / "sts-b-zh"
