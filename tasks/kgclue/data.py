"""KgCLUE files: questions (JSON lines with ``answer = "subject ||| predicate ||| object"``) and
the knowledge base (``subject \\t predicate \\t object`` lines).

A subject may carry a sense tag in full-width brackets, ``刘晓华（广东工业大学教授）``; it is split
off and generated after the predicate, as in the reference, so the tree branches on the name
first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from bert4x.training import TableColumns, read_records

ANSWER_SEPARATOR = " ||| "
#: What the task reads from a table (a ``datasets`` object, directory or loader source).
QUESTION_COLUMNS = TableColumns("kgclue", required=("question",), optional=("id", "answer"))
KB_COLUMNS = TableColumns("kgclue", required=("subject", "predicate", "object"))


@dataclass(frozen=True)
class Triple:
    subject: str  # the name, sense tag removed
    sense: str  # "" when the subject has none
    predicate: str
    object: str

    @property
    def full_subject(self) -> str:
        return f"{self.subject}（{self.sense}）" if self.sense else self.subject

    def answer(self) -> str:
        """The official answer string ``subject ||| predicate ||| object``."""
        return ANSWER_SEPARATOR.join((self.full_subject, self.predicate, self.object))


@dataclass(frozen=True)
class Question:
    id: object
    question: str
    answer: Optional[Triple]  # None in files without answers


def split_sense(subject: str) -> Tuple[str, str]:
    """``"name（sense）"`` -> ``("name", "sense")``; a subject without a trailing tag is kept."""
    if subject.endswith("）") and "（" in subject:
        cut = subject.index("（")
        if cut > 0:
            return subject[:cut], subject[cut + 1:-1]
    return subject, ""


def normalise_object(text: str) -> str:
    """Whitespace runs become one space, as the reference does before comparing objects."""
    return " ".join(text.split())


def make_triple(subject: str, predicate: str, obj: str) -> Triple:
    for name, value in (("subject", subject), ("predicate", predicate)):
        if not value.strip():
            raise ValueError(f"empty {name}")
    name, sense = split_sense(subject.strip())
    return Triple(name, sense, predicate.strip(), normalise_object(obj))


def parse_answer(answer: str) -> Triple:
    parts = answer.split(ANSWER_SEPARATOR)
    if len(parts) != 3:
        raise ValueError(f"answer must be 'subject ||| predicate ||| object', got {answer!r}")
    return make_triple(*parts)


def read_questions(source, on_error: str = "raise", columns: Optional[dict] = None):
    """KgCLUE QA JSON lines, or a table with :data:`QUESTION_COLUMNS` (renamed by
    ``columns``) -> ``Question`` records (``answer`` None where the source has none)."""
    def parse(record):
        if not isinstance(record, dict):
            raise TypeError("each line must be a JSON object")
        question = record["question"]
        if not isinstance(question, str) or not question.strip():
            raise ValueError("empty question")
        answer = record.get("answer")
        return Question(record.get("id"), question, None if answer is None else
                        parse_answer(answer))

    return read_records(source, parse, fmt="jsonl", on_error=on_error,
                        table=QUESTION_COLUMNS.with_mapping(columns or {}))


def read_kb(source, on_error: str = "skip", columns: Optional[dict] = None):
    """KB lines ``subject \\t predicate \\t object`` (or a table with :data:`KB_COLUMNS`);
    malformed lines are skipped and counted by default (the released 20.6M-line file has a
    few), with ``on_error="raise"`` they stop."""
    return read_records(source, parse_kb_record, fields=3, on_error=on_error,
                        table=KB_COLUMNS.with_mapping(columns or {}))


def parse_kb_record(fields) -> Triple:
    """A KB line's three fields, or a table row with :data:`KB_COLUMNS`, as a triple."""
    if isinstance(fields, dict):
        fields = [fields[name] for name in KB_COLUMNS.required]
    return make_triple(*fields)


def answer_triples(questions: Iterable[Question]) -> List[Triple]:
    """The distinct triples answering ``questions``: the sub-KB the shipped data supports."""
    seen, triples = set(), []
    for question in questions:
        if question.answer is not None and question.answer not in seen:
            seen.add(question.answer)
            triples.append(question.answer)
    return triples
