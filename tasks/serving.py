"""``bert4x serve``: each finished task run as HTTP endpoints, plus the page at ``/``.

    CoSENT run    POST /encode {"texts": [...]}          unit vectors
                  POST /similarity {"pairs": [[a, b]]}   cosines
                  POST /search {"query": "...", "k": 5}  nearest texts of --index
    triples run   POST /extract {"text": "..."}          triples with character spans
    KgCLUE run    POST /answer {"question": "..."}       answer, triple and the KB path taken
    --model M     POST /predict {"texts": [...]}         a saved Keras model's outputs

Texts go through the app's dynamic batchers (``bert4x.serving``); beam search over the KB tree
runs one question at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from bert4x.serving import (BatchFunction, Endpoint, Limits, call_overhead_tokens, check_text,
                            check_texts, create_app)
from tasks.exports import task_of

PAGE = Path(__file__).resolve().parent / "page.html"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored


class Texts(_Request):
    texts: List[StrictStr]


class Pairs(_Request):
    pairs: List[Tuple[StrictStr, StrictStr]]


class Query(_Request):
    query: StrictStr
    k: int = Field(5, ge=1, le=100)


class Text(_Request):
    text: StrictStr


class Question(_Request):
    question: StrictStr


class CosentService:
    name = "cosent"

    def __init__(self, work_dir, limits: Limits, index_dir=None, precision=None):
        from tasks.cosent.task import load_trained_encoder
        from tasks.cosent.vectors import VectorIndex

        self.encoder, self.limits = load_trained_encoder(work_dir, precision), limits
        self.index = VectorIndex.load(index_dir) if index_dir is not None else None
        # What one model call costs beyond its tokens, measured on this host, decides how a
        # batch of mixed lengths is cut into calls.
        self.overhead_tokens = call_overhead_tokens(self.encoder.encoder)

    def _encode(self, texts: List[str]) -> List[np.ndarray]:
        return list(self.encoder.encode(texts, progress=False,
                                        overhead_tokens=self.overhead_tokens))

    def batch_functions(self):
        return {"encode": BatchFunction(self._encode)}

    def endpoints(self):
        endpoints = [Endpoint("/encode", Texts, self.encode, "unit sentence vectors"),
                     Endpoint("/similarity", Pairs, self.similarity, "cosine of each pair")]
        if self.index is not None:
            endpoints.append(Endpoint("/search", Query, self.search,
                                      "the index's nearest texts to a query"))
        return endpoints

    async def encode(self, body: Texts, submit):
        check_texts(body.texts, self.limits)
        vectors = await submit("encode", body.texts)
        return {"vectors": [vector.tolist() for vector in vectors], "dim": len(vectors[0])}

    async def similarity(self, body: Pairs, submit):
        texts = [text for pair in body.pairs for text in pair]
        check_texts(texts, self.limits, field="pairs (flattened)",
                    max_items=2 * self.limits.max_items)
        vectors = await submit("encode", texts)
        cosines = [float(np.dot(vectors[2 * i], vectors[2 * i + 1]))
                   for i in range(len(body.pairs))]
        return {"similarities": cosines}

    async def search(self, body: Query, submit):
        check_text(body.query, self.limits, "query")
        (vector,) = await submit("encode", [body.query])
        (hits,) = self.index.search(vector[None], body.k)
        return {"query": body.query,
                "results": [{"rank": rank, "score": score, "text": text, "id": index}
                            for rank, (index, score, text) in enumerate(hits, start=1)]}


class TriplesService:
    name = "triples"

    def __init__(self, work_dir, limits: Limits, precision=None):
        from tasks.triple_extraction.task import load_trained

        self.extractor, self.limits = load_trained(work_dir, precision), limits

    def batch_functions(self):
        return {"extract": BatchFunction(self.extractor.extract)}

    def endpoints(self):
        return [Endpoint("/extract", Text, self.extract,
                         "(subject, predicate, object) triples with character spans")]

    async def extract(self, body: Text, submit):
        check_text(body.text, self.limits)
        (triples,) = await submit("extract", [body.text])
        return {"text": body.text, "triples": [
            {"subject": t.subject, "predicate": t.predicate, "object": t.object,
             "subject_span": _span(body.text, t.subject), "object_span": _span(body.text, t.object)}
            for t in triples]}


def _span(text: str, entity: str) -> Optional[List[int]]:
    """``[start, end)`` of the entity's first occurrence (decoding returns the entity's text,
    not its offsets, so a repeated entity is marked where it first appears)."""
    start = text.find(entity)
    return None if start < 0 else [start, start + len(entity)]


class KgclueService:
    name = "kgclue"

    def __init__(self, work_dir, limits: Limits, beam_size: int = 3, precision=None):
        from tasks.kgclue.task import Answerer, load_trained

        settings, model, tokenizer, kb = load_trained(work_dir, precision)
        self.answerer = Answerer(model, tokenizer, kb, settings, beam_size=beam_size)
        self.limits = limits

    def _answer(self, questions: List[str]) -> List[tuple]:
        return [self.answerer.generate(question) for question in questions]

    def batch_functions(self):
        # Beam search under the KB tree decodes one question at a time.
        return {"answer": BatchFunction(self._answer, max_batch=1)}

    def endpoints(self):
        return [Endpoint("/answer", Question, self.answer,
                         "the KB triple answering a question, with the path to it")]

    async def answer(self, body: Question, submit):
        check_text(body.question, self.limits, "question")
        ((triple, key),) = await submit("answer", [body.question])
        tokenizer = self.answerer.tokenizer
        parts = _key_parts(key, tokenizer.sep_id)
        path = dict(zip(("name", "predicate", "sense"), (tokenizer.decode(p) for p in parts)))
        return {"question": body.question, "answer": triple.object if triple else None,
                "triple": None if triple is None else {
                    "subject": triple.full_subject, "predicate": triple.predicate,
                    "object": triple.object},
                "kb_path": path, "in_kb": triple is not None}


def _key_parts(key: Sequence[int], sep_id: int) -> List[List[int]]:
    """``name [SEP] predicate [SEP] sense [SEP]`` -> the three id lists."""
    parts, current = [], []
    for token in key:
        if token == sep_id:
            parts.append(current)
            current = []
        else:
            current.append(token)
    return parts + ([current] if current else [])


def build_services(work_dirs: Sequence, limits: Limits, index_dir=None, beam_size: int = 3,
                   precision=None):
    """One service per run directory (at most one run per task), each model computing at
    ``precision`` (fp32, bf16 or int8)."""
    services, tasks = [], {}
    for work_dir in work_dirs:
        task = task_of(work_dir)
        if task in tasks:
            raise ValueError(f"two {task} runs ({tasks[task]}, {work_dir}): serve one per task")
        tasks[task] = work_dir
        if task == "cosent":
            services.append(CosentService(work_dir, limits, index_dir, precision))
        elif task == "kgclue":
            services.append(KgclueService(work_dir, limits, beam_size, precision))
        else:
            services.append(TriplesService(work_dir, limits, precision))
    if index_dir is not None and "cosent" not in tasks:
        raise ValueError("--index is a CoSENT vector index: serve a CoSENT run with it")
    return services


def build_app(work_dirs: Sequence, limits: Limits = Limits(), index_dir=None, beam_size=3,
              models: Sequence = (), precision=None):
    """The app for the runs in ``work_dirs`` (their models at ``precision``) and, as
    ``/predict``, at most one saved model: ``models`` holds ``(model file, vocab.txt, maxlen)``."""
    if not work_dirs and not models:
        raise ValueError("nothing to serve: give --work-dir and/or --model")
    if len(models) > 1:
        raise ValueError("serve one --model at a time")
    from bert4x.serving.model_service import ModelService

    services = build_services(work_dirs, limits, index_dir, beam_size, precision)
    services += [ModelService(path, vocab, limits, maxlen) for path, vocab, maxlen in models]
    return create_app(services, limits, page=PAGE.read_text(encoding="utf-8"))
