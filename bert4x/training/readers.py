"""Line-oriented dataset readers that say which file and line a bad record is on.

A task gives a ``parse(fields_or_object) -> example`` function that raises ``ValueError`` (or
``KeyError``/``TypeError``) for a record it cannot use; the reader adds ``file:line`` and either
stops (``on_error="raise"``) or skips the record and counts it (``on_error="skip"``).
We read line files ourselves rather than through ``datasets``: its loaders cannot report the
line of a malformed record, which is the first thing a user needs to fix their data. Every reader
also takes a ``datasets`` table (:mod:`bert4x.training.tables`); its bad records are named by
row.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterator, List, Optional, Tuple

from bert4x.files import not_utf8
from bert4x.training.tables import TableColumns, describe_source, is_table_source, load_table


class DataError(ValueError):
    """A malformed record; ``path`` and ``line`` say where it is (``unit="row "`` for the rows
    of a table, which have no lines)."""

    def __init__(self, path, line: int, reason: str, unit: str = ""):
        super().__init__(f"{path}:{unit}{line}: {reason}")
        self.path, self.line, self.reason = os.fspath(path), line, reason


@dataclasses.dataclass
class ReadResult:
    """Parsed examples plus the records that were skipped, as ``(line, reason)``."""

    path: str
    examples: List
    skipped: List[Tuple[int, str]]

    def __len__(self):
        return len(self.examples)

    def summary(self) -> str:
        text = f"{self.path}: {len(self.examples)} examples"
        if self.skipped:
            line, reason = self.skipped[0]
            text += f", {len(self.skipped)} malformed lines skipped (first: line {line}: {reason})"
        return text


def numbered_lines(path, keep_blank: bool = False) -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` for each line of a UTF-8 text file (blank ones only with
    ``keep_blank``), with byte-order marks and line endings (``\\n``, ``\\r\\n``, ``\\r``)
    removed.

    Bytes that are not UTF-8 raise :class:`DataError` naming the line, the column and the byte,
    instead of the decoder's offset in the whole file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            # A BOM starts the file when an editor wrote it, or any line of concatenated files.
            line = line.rstrip("\r\n").lstrip("\ufeff")
            where = not_utf8(line)
            if where:
                raise DataError(path, number, f"not UTF-8 text ({where}); save the file as UTF-8")
            if keep_blank or line.strip():
                yield number, line


def read_text_lines(path, keep_blank: bool = False) -> List[str]:
    """One text per line (the input of ``predict``/``encode`` commands). ``keep_blank=True``
    keeps blank lines as they are, so that output line i still answers input line i."""
    texts = [line for _, line in numbered_lines(path, keep_blank)]
    if not any(text.strip() for text in texts):
        raise DataError(path, 0, "no texts (one text per line expected)")
    return texts


def iter_records(source, parse: Callable, fields: Optional[int] = None, fmt: str = "tsv",
                 on_error: str = "raise", skipped: Optional[list] = None,
                 table: Optional[TableColumns] = None) -> Iterator:
    """Yield ``parse(record)`` for each record of a TSV file (``fmt="tsv"``, ``fields`` columns
    per line) or JSON lines (``fmt="jsonl"``), one at a time, for files too large to hold.

    ``source`` may also be a ``datasets`` table or what :func:`~bert4x.training.tables.
    load_table` opens (a ``save_to_disk`` directory, ``json:FILE``, ``train.csv``, ...); then
    ``table`` names the task's columns and ``parse`` gets each row as a dict under those names.
    Blank lines are ignored. With ``on_error="skip"`` malformed records are appended to
    ``skipped`` as ``(line or row, reason)``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if fmt not in ("tsv", "jsonl"):
        raise ValueError(f"fmt must be 'tsv' or 'jsonl', got {fmt!r}")
    skipped = [] if skipped is None else skipped
    if is_table_source(source):
        if table is None:
            raise ValueError("this reader takes files only: it names no table columns")
        records, unit, split = table.rows(load_table(source)), "row ", (lambda row: row)
    else:
        records, unit = numbered_lines(source), ""
        split = lambda line: _split_record(line, fmt, fields)  # noqa: E731
    name = describe_source(source)
    for number, raw in records:
        try:
            example = parse(split(raw))
        except (ValueError, KeyError, TypeError) as error:
            reason = _reason(error)
            if on_error == "raise":
                raise DataError(name, number, reason, unit) from None
            skipped.append((number, reason))
            continue
        yield example


def read_records(source, parse: Callable, fields: Optional[int] = None, fmt: str = "tsv",
                 on_error: str = "raise", table: Optional[TableColumns] = None) -> ReadResult:
    """All records of a file or table (see :func:`iter_records`) with the skipped ones listed.

    An empty file is an error: training on nothing is never intended.
    """
    skipped = []
    examples = list(iter_records(source, parse, fields, fmt, on_error, skipped, table))
    name = describe_source(source)
    if not examples:
        detail = f" ({len(skipped)} malformed records skipped)" if skipped else ""
        kind = "table" if is_table_source(source) else "file"
        raise DataError(name, 0, f"no usable records in the {kind}{detail}")
    return ReadResult(name, examples, skipped)


def _split_record(line: str, fmt: str, fields: Optional[int]):
    if fmt == "jsonl":
        try:
            return json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    columns = line.split("\t")
    if fields is not None and len(columns) != fields:
        raise ValueError(f"expected {fields} tab-separated fields, found {len(columns)}")
    return columns


def _reason(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)
