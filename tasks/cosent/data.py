"""Sentence-pair files: the TSV layout of ATEC, BQ, LCQMC, PAWSX and STS-B
(``s1 \\t s2 \\t label``), JSON lines (``sentence1``, ``sentence2``, ``label``) and NLI data,
either labelled pairs (``entailment`` / ``neutral`` / ``contradiction``) or triples
(``anchor \\t entailment \\t contradiction``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from bert4x.training import TableColumns, read_records

#: What the task reads from a table (a ``datasets`` object, directory or loader source).
PAIR_COLUMNS = TableColumns("cosent", required=("sentence1", "sentence2", "label"))
NLI_TRIPLE_COLUMNS = TableColumns("cosent", required=("anchor", "entailment", "contradiction"))

#: Graded similarity of NLI labels: an entailed pair is more similar than a neutral one, etc.
NLI_LABELS = {"entailment": 2, "neutral": 1, "contradiction": 0}


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    label: float


def _sentence(text, which: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"sentence {which} must be text, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"sentence {which} is empty")
    return text


def _label(value, label_range: Optional[Tuple[float, float]],
           label_names: Optional[Dict[str, float]]) -> float:
    if label_names is not None and isinstance(value, str) and value.strip() in label_names:
        return float(label_names[value.strip()])
    try:
        label = float(value)
    except (TypeError, ValueError):
        known = f"; known names: {sorted(label_names)}" if label_names else ""
        raise ValueError(f"label {value!r} is not a number{known}") from None
    if not math.isfinite(label):
        raise ValueError(f"label {value!r} is not a finite number")
    if label_range is not None and not label_range[0] <= label <= label_range[1]:
        raise ValueError(f"label {label:g} is outside the declared range "
                         f"[{label_range[0]:g}, {label_range[1]:g}]")
    return label


def read_pairs(source, fmt: Optional[str] = None, label_range=None, label_names=None,
               on_error: str = "raise", columns: Optional[Dict[str, str]] = None):
    """Read ``(first, second, label)`` pairs from a file or a table; a file's ``fmt`` is
    ``"tsv"`` or ``"jsonl"`` (guessed from the suffix), a table's columns are
    :data:`PAIR_COLUMNS`, renamed by ``columns``. ``label_range=(low, high)`` rejects labels
    outside it; ``label_names`` maps label words to numbers (``NLI_LABELS`` for NLI pairs).
    Returns a ``ReadResult``."""
    fmt = fmt or ("jsonl" if str(source).endswith((".jsonl", ".json")) else "tsv")

    def parse(record):
        if isinstance(record, dict):
            first, second, label = record["sentence1"], record["sentence2"], record["label"]
        elif fmt == "jsonl":
            raise TypeError("each line must be a JSON object")
        else:
            first, second, label = record
        return Pair(_sentence(first, "1"), _sentence(second, "2"),
                    _label(label, label_range, label_names))

    return read_records(source, parse, fields=3 if fmt == "tsv" else None, fmt=fmt,
                        on_error=on_error, table=PAIR_COLUMNS.with_mapping(columns or {}))


def read_nli_triples(source, on_error: str = "raise", columns: Optional[Dict[str, str]] = None):
    """``anchor \\t entailed \\t contradicting`` lines (or a table's
    :data:`NLI_TRIPLE_COLUMNS`), each as two pairs labelled 1 and 0."""
    def parse(record):
        if isinstance(record, dict):
            record = [record[name] for name in NLI_TRIPLE_COLUMNS.required]
        anchor, positive, negative = (_sentence(text, str(i + 1)) for i, text in
                                      enumerate(record))
        return Pair(anchor, positive, 1.0), Pair(anchor, negative, 0.0)

    result = read_records(source, parse, fields=3, on_error=on_error,
                          table=NLI_TRIPLE_COLUMNS.with_mapping(columns or {}))
    result.examples = [pair for both in result.examples for pair in both]
    return result
