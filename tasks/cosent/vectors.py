"""Texts to unit vectors, pair similarity, and top-k search over a saved corpus of vectors."""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from bert4x.files import atomic_path
from bert4x.training import sequence_padding, split_by_length


class SentenceEncoder:
    """A trained encoder model with its tokenizer and ``maxlen`` (longer texts are truncated)."""

    def __init__(self, encoder, tokenizer, maxlen: int = 64):
        self.encoder, self.tokenizer, self.maxlen = encoder, tokenizer, maxlen

    def token_ids(self, texts: Sequence[str]) -> List[List[int]]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text in a list")
        for number, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text {number} is empty or not a string: {text!r}")
        return self.tokenizer.encode_batch(list(texts), maxlen=self.maxlen)[0]

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True,
               overhead_tokens: Optional[float] = None) -> np.ndarray:
        """Unit-length float32 vectors [len(texts), dim]; batches are formed from texts of
        similar length (fewer padded positions), results come back in input order.

        Batches hold ``batch_size`` texts, or, given a model call's ``overhead_tokens``
        (a server's few texts at a time), are cut where that costs least
        (:func:`~bert4x.training.split_by_length`)."""
        ids = self.token_ids(texts)
        lengths = [len(row) for row in ids]
        if overhead_tokens is None:
            order = np.argsort(lengths, kind="stable")
            batches = [order[start:start + batch_size]
                       for start in range(0, len(ids), batch_size)]
        else:
            batches = split_by_length(lengths, overhead_tokens)
        vectors = None
        for chosen in tqdm(batches, desc="encoding", unit="batch", disable=not progress):
            tokens = sequence_padding([ids[i] for i in chosen])
            batch = np.asarray(self.encoder.predict_on_batch(
                [tokens, np.zeros_like(tokens)]), dtype="float32")
            if vectors is None:
                vectors = np.zeros((len(ids), batch.shape[-1]), "float32")
            vectors[chosen] = batch
        if vectors is None:
            raise ValueError("encode() needs at least one text")
        return normalise(vectors)

    def similarity(self, first: Sequence[str], second: Sequence[str], **options) -> np.ndarray:
        """Cosine of each pair ``(first[i], second[i])``."""
        if len(first) != len(second):
            raise ValueError(f"similarity() needs lists of equal length, got {len(first)} and "
                             f"{len(second)}")
        return np.sum(self.encode(first, **options) * self.encode(second, **options), axis=1)


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype("float32")


class VectorIndex:
    """Unit vectors of a corpus plus its texts; exact top-k by inner product (= cosine).

    Uses FAISS' exact inner-product index when ``faiss`` is installed, else NumPy; both return
    the same neighbours.
    """

    def __init__(self, vectors: np.ndarray, texts: Sequence[str]):
        if len(vectors) != len(texts):
            raise ValueError(f"{len(vectors)} vectors for {len(texts)} texts")
        self.vectors, self.texts = normalise(np.asarray(vectors, "float32")), list(texts)
        self._faiss = _faiss_index(self.vectors)

    def search(self, queries: np.ndarray, k: int = 5) -> List[List[Tuple[int, float, str]]]:
        """For each query vector, ``k`` ``(index, cosine, text)`` best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = normalise(np.atleast_2d(np.asarray(queries, "float32")))
        k = min(k, len(self.texts))
        if self._faiss is not None:
            scores, indices = self._faiss.search(queries, k)
        else:
            all_scores = queries @ self.vectors.T
            indices = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(all_scores, indices, axis=1)
        return [[(int(i), float(s), self.texts[i]) for i, s in zip(row_i, row_s)]
                for row_i, row_s in zip(indices, scores)]

    def save(self, directory) -> str:
        os.makedirs(directory, exist_ok=True)
        with atomic_path(os.path.join(directory, "vectors.npy")) as path:
            np.save(path, self.vectors)
        with atomic_path(os.path.join(directory, "texts.json")) as path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self.texts, handle, ensure_ascii=False)
        return str(directory)

    @classmethod
    def load(cls, directory) -> "VectorIndex":
        vectors_path, texts_path = (os.path.join(directory, name)
                                    for name in ("vectors.npy", "texts.json"))
        if not (os.path.exists(vectors_path) and os.path.exists(texts_path)):
            raise FileNotFoundError(f"{directory} is not a saved vector index "
                                    "(needs vectors.npy and texts.json)")
        with open(texts_path, encoding="utf-8") as handle:
            return cls(np.load(vectors_path), json.load(handle))


def _faiss_index(vectors):
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index
