"""UniLM seq2seq training and KB-constrained answering for KgCLUE.

Training sequences are ``[CLS] question [SEP] name [SEP] predicate [SEP] sense [SEP]``: the
question is segment 0 (seen bidirectionally), the key is segment 1 (generated left to right),
and the loss covers the key tokens only. Answering runs beam search over the KB's prefix tree,
optionally with the reference's look-ahead: once the name is generated, a next token is
favoured by how much more of the question the keys it leads to would cover (longest common
subsequence), by raising its probability to the power 1/(1 + extra coverage).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

import keras
import numpy as np
from tqdm.auto import tqdm

from bert4x.files import atomic_path
from bert4x.models.precision import building_at, check_training_precision, restored_at
from bert4x.generation import AutoRegressiveDecoder
from bert4x.tokenizers import Tokenizer
from bert4x.training import (BucketedBatches, Evaluator, WarmupDecay, build_optimizer,
                             read_run_settings, record_run_settings, sequence_padding, train)
from tasks.kgclue.data import Question
from tasks.kgclue.kb import KnowledgeBase, key_ids
from tasks.kgclue.metrics import lcs_length, score
from tasks.model_options import build_backbone

SETTINGS_FILE = "kgclue.json"
MODEL_WEIGHTS = "model.weights.h5"


@dataclasses.dataclass
class Settings:
    """What a run needs to rebuild its model and tokenizer (paths made absolute)."""

    config: str
    vocab: str
    kb: str
    model: str = "roformer"
    checkpoint: Optional[str] = None
    keep_tokens: Optional[str] = None
    question_maxlen: int = 64
    key_maxlen: int = 48

    def __post_init__(self):
        for name in ("config", "vocab", "kb", "checkpoint", "keep_tokens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, os.path.abspath(value))

    def save(self, work_dir) -> None:
        record_run_settings(work_dir, SETTINGS_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, work_dir) -> "Settings":
        return cls(**read_run_settings(work_dir, SETTINGS_FILE, "kgclue"))


def build_seq2seq(settings: Settings, tokenizer, load_checkpoint: bool = True) -> keras.Model:
    return build_backbone(settings, tokenizer, settings.question_maxlen + settings.key_maxlen,
                          load_checkpoint, application="unilm", with_mlm="linear")


def load_trained(work_dir, precision: Optional[str] = None):
    """(settings, model, tokenizer, knowledge base) of a finished run, the model computing at
    ``precision`` (fp32, bf16 or int8; see :mod:`bert4x.models.precision`)."""
    settings = Settings.load(work_dir)
    weights = os.path.join(work_dir, MODEL_WEIGHTS)
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{weights} not found: the run in {work_dir} has not finished")
    tokenizer = Tokenizer(settings.vocab)
    model = restored_at(
        precision, lambda: build_seq2seq(settings, tokenizer, load_checkpoint=False), weights)
    return settings, model, tokenizer, KnowledgeBase.load(settings.kb)


# Training --------------------------------------------------------------------------------------

def seq2seq_examples(questions: Sequence[Question], tokenizer, settings: Settings):
    """(question ids, key ids) pairs; keys longer than ``key_maxlen`` are left out, because a
    truncated key could never be generated under the tree."""
    answered = [q for q in questions if q.answer is not None]
    sources = tokenizer.encode_batch([q.question for q in answered],
                                     maxlen=settings.question_maxlen)[0]
    keys = key_ids(tokenizer, [q.answer.subject for q in answered],
                   [q.answer.sense for q in answered], [q.answer.predicate for q in answered])
    return [(source, key) for source, key in zip(sources, keys)
            if len(key) <= settings.key_maxlen]


def collate_seq2seq(batch):
    """Inputs, next-token targets and weights that select the key's tokens."""
    tokens = sequence_padding([source + key for source, key in batch])
    segments = sequence_padding([[0] * len(source) + [1] * len(key) for source, key in batch])
    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    weights = np.zeros(tokens.shape, "float32")
    weights[:, :-1] = segments[:, 1:]
    # Keras averages over all positions; dividing by the mean weight makes the loss the mean
    # over key tokens.
    return (tokens, segments), targets, weights / max(weights.mean(), 1e-9)


def train_seq2seq(settings: Settings, train_questions, dev_questions, work_dir, epochs=3,
                  batch_size=32, learning_rate=1e-4, seed=0, dev_limit=200, beam_size=3,
                  verbose="auto", optimizer="adamw", precision="fp32") -> keras.Model:
    """Fine-tune on the training questions; keep the weights with the best dev score (on the
    first ``dev_limit`` dev questions, constrained decoding). ``precision`` "bf16" trains in
    mixed bfloat16 (logits and loss in float32)."""
    check_training_precision(precision)
    keras.utils.set_random_seed(seed)
    settings.save(work_dir)
    tokenizer, kb = Tokenizer(settings.vocab), KnowledgeBase.load(settings.kb)
    with building_at(precision):
        model = build_seq2seq(settings, tokenizer)
    examples = seq2seq_examples(train_questions, tokenizer, settings)
    batches = BucketedBatches(examples, batch_size, collate_seq2seq, seed=seed,
                              length=lambda example: len(example[0]) + len(example[1]))
    total = epochs * len(batches)
    model.compile(optimizer=build_optimizer(WarmupDecay(learning_rate, total,
                                                        warmup_steps=total // 20),
                                            weight_decay=0.01, algorithm=optimizer),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dev = list(dev_questions)[:dev_limit]
    evaluator = Evaluator(
        lambda m: {"score": evaluate(Answerer(m, tokenizer, kb, settings, beam_size), dev,
                                     progress=False)["score"]},
        monitor="score", best_path=os.path.join(work_dir, "best.weights.h5"))
    train(model, batches, epochs, work_dir, evaluator=evaluator, seed=seed, verbose=verbose)
    model.load_weights(evaluator.best_path)
    with atomic_path(os.path.join(work_dir, MODEL_WEIGHTS)) as path:
        model.save_weights(path)
    return model


# Answering -------------------------------------------------------------------------------------

class Answerer:
    """Question -> (triple or None, generated key ids) by beam search, under the KB tree
    (``constrained``) or free (the ablation), with or without the look-ahead re-weighting."""

    def __init__(self, model, tokenizer, kb: KnowledgeBase, settings: Settings, beam_size=3,
                 constrained=True, lookahead=True):
        self.tokenizer, self.kb, self.settings = tokenizer, kb, settings
        self.beam_size, self.constrained, self.lookahead = beam_size, constrained, lookahead
        self.decoder = AutoRegressiveDecoder(model, end_id=tokenizer.sep_id, min_ends=3,
                                             max_new_tokens=settings.key_maxlen)

    def generate(self, question: str):
        source = self.tokenizer.encode(question, maxlen=self.settings.question_maxlen)[0]
        options = {}
        if self.constrained:
            options = dict(constraint=self.kb.trie, score_fn=self._reweighting(source[1:-1]))
        (best,) = self.decoder.beam_search(source, beam_size=self.beam_size, num_results=1,
                                           **options)
        triples = self.kb.lookup(best.tokens)
        return (triples[0] if triples else None), best.tokens

    def _reweighting(self, question_ids):
        """Look-ahead (optional) and renormalisation over the tree's allowed tokens."""
        trie, sep = self.kb.trie, self.tokenizer.sep_id

        def reweight(generated, scores):
            scores = scores.copy()
            for row, tokens in enumerate(generated):
                allowed = trie.next_tokens(tokens)
                if allowed.size == 0:
                    continue
                if self.lookahead and allowed.size > 1 and sep in tokens:
                    covered = lcs_length(tokens, question_ids)
                    weights = {}
                    for key in trie.keys(tokens):
                        extra = lcs_length(key, question_ids) - covered
                        token = key[len(tokens)]
                        weights[token] = max(weights.get(token, 1.0), extra + 1.0)
                    for token, weight in weights.items():
                        scores[row, token] /= weight  # p ** (1 / weight)
                chosen = scores[row, allowed]
                chosen = chosen - np.logaddexp.reduce(chosen)
                scores[row, allowed] = chosen
            return scores

        return reweight


def evaluate(answerer: Answerer, questions: Sequence[Question], progress=True) -> dict:
    """Official EM / F1 / score on the object, plus what a reader of the numbers needs: how
    many gold triples the KB lacks and how many generated keys are not KB keys."""
    answered = [q for q in questions if q.answer is not None]
    if not answered:
        raise ValueError("evaluation needs questions with answers")
    predicted, not_keys = [], 0
    for question in tqdm(answered, desc="answering", unit=" questions", disable=not progress):
        triple, ids = answerer.generate(question.question)
        predicted.append(triple.object if triple else "")
        not_keys += triple is None
    gold_keys = key_ids(answerer.tokenizer, [q.answer.subject for q in answered],
                        [q.answer.sense for q in answered], [q.answer.predicate for q in answered])
    missing = sum(q.answer not in answerer.kb.lookup(key) for q, key in zip(answered, gold_keys))
    em, f1, total = score(predicted, [q.answer.object for q in answered])
    return dict(em=em, f1=f1, score=total, questions=len(answered), not_kb_keys=not_keys,
                gold_missing_from_kb=missing)


def predict(answerer: Answerer, questions: Sequence[Question], output_path) -> int:
    """Write the official submission format: the input records with ``answer`` filled in."""
    with atomic_path(output_path) as path, open(path, "w", encoding="utf-8") as handle:
        for question in tqdm(questions, desc="answering", unit=" questions"):
            triple, _ = answerer.generate(question.question)
            answer = triple.answer() if triple else ""
            handle.write(json.dumps({"id": question.id, "question": question.question,
                                     "answer": answer}, ensure_ascii=False) + "\n")
    return len(questions)
