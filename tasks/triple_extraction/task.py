"""Training, evaluation and prediction for both extraction models.

A run's directory holds ``triples.json`` (what to rebuild), the shared training loop's files,
``model.weights.h5`` (best by dev F1) and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import List, Optional, Sequence

import keras

from bert4x.files import atomic_path
from bert4x.models.precision import building_at, check_training_precision, restored_at
from bert4x.tokenizers import Tokenizer
from bert4x.training import (BucketedBatches, Evaluator, WarmupDecay, build_optimizer,
                             read_run_settings, record_run_settings, train)
from tasks.triple_extraction.data import Example, Schema, read_schema
from tasks.triple_extraction.metrics import triple_scores
from tasks.triple_extraction.models import KINDS, MODELS
from tasks.triple_extraction.spans import encode_text, label_example, spans_to_triples
from tasks.model_options import build_backbone

SETTINGS_FILE = "triples.json"
MODEL_WEIGHTS = "model.weights.h5"


@dataclasses.dataclass
class Settings:
    config: str
    vocab: str
    schema: str
    kind: str = "gplinker"
    model: str = "bert"
    checkpoint: Optional[str] = None
    keep_tokens: Optional[str] = None
    maxlen: int = 128
    head_size: int = 64

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("config", "vocab", "schema", "checkpoint", "keep_tokens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, os.path.abspath(value))

    def save(self, work_dir) -> None:
        record_run_settings(work_dir, SETTINGS_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, work_dir) -> "Settings":
        return cls(**read_run_settings(work_dir, SETTINGS_FILE, "triples"))


class Extractor:
    """A model of either kind with its tokenizer and schema: texts in, triples out."""

    def __init__(self, settings: Settings, load_checkpoint: bool = True):
        self.settings = settings
        self.schema: Schema = read_schema(settings.schema)
        self.tokenizer = Tokenizer(settings.vocab)
        backbone = build_backbone(settings, self.tokenizer, settings.maxlen, load_checkpoint,
                                  allow_unused=True)
        self.model = MODELS[settings.kind](backbone, len(self.schema.predicates),
                                           settings.head_size)

    def label(self, examples: Sequence[Example], warn: bool = True):
        """Token-span labels; triples whose entities cannot be placed are counted and skipped."""
        labelled = [label_example(e, self.schema, self.tokenizer, self.settings.maxlen)
                    for e in examples]
        unplaced = [reason for text in labelled for _, reason in text.unplaced]
        if unplaced and warn:
            warnings.warn(f"{len(unplaced)} triples skipped: their entities could not be "
                          f"placed (first: {unplaced[0]})", stacklevel=2)
        return labelled

    def extract(self, texts: Sequence[str]) -> List[list]:
        for number, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text {number} is empty")
        encoded = [encode_text(text, self.tokenizer, self.settings.maxlen) for text in texts]
        return [spans_to_triples(e, spans, self.schema)
                for e, spans in zip(encoded, self.model.decode(encoded))]

    def evaluate(self, examples: Sequence[Example]) -> dict:
        return triple_scores(self.extract([e.text for e in examples]),
                             [e.triples for e in examples])


def load_trained(work_dir, precision: Optional[str] = None) -> Extractor:
    """The best extractor of a finished run, computing at ``precision`` (fp32, bf16 or int8;
    see :mod:`bert4x.models.precision`)."""
    settings = Settings.load(work_dir)
    weights = os.path.join(work_dir, MODEL_WEIGHTS)
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{weights} not found: the run in {work_dir} has not finished")
    return restored_at(precision, lambda: Extractor(settings, load_checkpoint=False), weights,
                       model_of=lambda built: built.model.train_model)


def train_extractor(settings: Settings, train_examples: Sequence[Example],
                    dev_examples: Sequence[Example], work_dir, epochs: int = 20,
                    batch_size: int = 16, learning_rate: float = 5e-5, seed: int = 0,
                    verbose="auto", optimizer: str = "adamw",
                    precision: str = "fp32") -> Extractor:
    """Train; keep the weights with the best dev F1. ``precision`` "bf16" trains in mixed
    bfloat16 (the losses in float32)."""
    check_training_precision(precision)
    keras.utils.set_random_seed(seed)
    settings.save(work_dir)
    with building_at(precision):
        extractor = Extractor(settings)
    model = extractor.model
    examples = model.training_examples(extractor.label(train_examples))
    batches = BucketedBatches(examples, batch_size, model.collate, seed=seed,
                              length=lambda example: len(getattr(example, "token_ids", None)
                                                         or example[0].token_ids))
    total = epochs * len(batches)
    model.train_model.compile(
        optimizer=build_optimizer(WarmupDecay(learning_rate, total, warmup_steps=total // 10),
                                  weight_decay=0.01, algorithm=optimizer),
        loss=model.losses)
    evaluator = Evaluator(lambda _: {"f1": extractor.evaluate(dev_examples)["all"]["f1"]},
                          monitor="f1", best_path=os.path.join(work_dir, "best.weights.h5"))
    train(model.train_model, batches, epochs, work_dir, evaluator=evaluator, seed=seed,
          verbose=verbose)
    model.train_model.load_weights(evaluator.best_path)
    with atomic_path(os.path.join(work_dir, MODEL_WEIGHTS)) as path:
        model.train_model.save_weights(path)
    return extractor
