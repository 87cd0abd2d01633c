"""DuIE / LIC2019 JSON lines: ``{"text", "spo_list": [{"subject", "predicate", "object",
"subject_type", "object_type"}]}``; DuIE 2.0 writes the object (and its type) as
``{"@value": ...}``. The schema file has one ``{"predicate", "subject_type", "object_type"}``
per line; a predicate's position in it is its label index."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from bert4x.files import atomic_path
from bert4x.training import TableColumns, read_records

#: What the task reads from a table (a ``datasets`` object, directory or loader source).
EXAMPLE_COLUMNS = TableColumns("triples", required=("text",), optional=("spo_list",))


@dataclass(frozen=True)
class Triple:
    subject: str
    predicate: str
    object: str


@dataclass
class Example:
    text: str
    triples: List[Triple] = field(default_factory=list)
    types: Dict[Triple, Tuple[str, str]] = field(default_factory=dict)


@dataclass
class Schema:
    predicates: List[str]
    types: Dict[str, Tuple[str, str]]

    def __post_init__(self):
        self.index = {predicate: i for i, predicate in enumerate(self.predicates)}

    def check(self, predicate: str) -> str:
        if predicate not in self.index:
            raise ValueError(f"unknown predicate {predicate!r}: not in the schema "
                             f"({len(self.predicates)} predicates)")
        return predicate


def _value(item):
    """A plain string, or DuIE 2.0's ``{"@value": string}``."""
    if isinstance(item, dict):
        item = item["@value"]
    if not isinstance(item, str):
        raise TypeError(f"expected text, got {type(item).__name__}")
    return item


def read_schema(path) -> Schema:
    def parse(record):
        return _value(record["predicate"]), (_value(record.get("subject_type", "")),
                                             _value(record.get("object_type", "")))

    rows = read_records(path, parse, fmt="jsonl").examples
    predicates = [predicate for predicate, _ in rows]
    if len(set(predicates)) != len(predicates):
        raise ValueError(f"{path}: a predicate is listed twice")
    return Schema(predicates, dict(rows))


def parse_example(record, schema: Schema, require_triples: bool = True) -> Example:
    if not isinstance(record, dict):
        raise TypeError("each line must be a JSON object")
    text = record["text"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty text")
    if record.get("spo_list") is None:
        if not require_triples:
            return Example(text)
        raise KeyError("spo_list")
    example = Example(text)
    for spo in record["spo_list"]:
        triple = Triple(_value(spo["subject"]), schema.check(_value(spo["predicate"])),
                        _value(spo["object"]))
        if not triple.subject or not triple.object:
            raise ValueError(f"empty subject or object in {spo}")
        if triple not in example.types:
            example.triples.append(triple)
        # A table's struct has every key, None where this record has none.
        example.types[triple] = (_value(spo.get("subject_type") or ""),
                                 _value(spo.get("object_type") or ""))
    return example


def read_duie(source, schema: Schema, require_triples: bool = True, on_error: str = "raise",
              columns: Optional[dict] = None):
    """Examples of a DuIE file, or of a table with :data:`EXAMPLE_COLUMNS` (renamed by
    ``columns``); ``require_triples=False`` accepts records without ``spo_list`` (text to
    predict). Unknown predicates and empty texts are errors naming file and line (or row)."""
    return read_records(source, lambda record: parse_example(record, schema, require_triples),
                        fmt="jsonl", on_error=on_error,
                        table=EXAMPLE_COLUMNS.with_mapping(columns or {}))


def write_duie(path, texts: Sequence[str], triples: Sequence[Sequence[Triple]],
               schema: Schema) -> None:
    """DuIE JSON lines with the schema's types filled in."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for text, found in zip(texts, triples):
            spo_list = [{"subject": t.subject, "predicate": t.predicate, "object": t.object,
                         "subject_type": schema.types[t.predicate][0],
                         "object_type": schema.types[t.predicate][1]} for t in found]
            handle.write(json.dumps({"text": text, "spo_list": spo_list},
                                    ensure_ascii=False) + "\n")
