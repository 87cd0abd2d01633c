"""Task data as HF ``datasets`` tables: Arrow on disk, memory-mapped, instead of Python lists.

Anything a reader takes as a file it also takes as a table:

- a ``datasets.Dataset`` or ``IterableDataset`` the caller made;
- a directory written by ``Dataset.save_to_disk`` (opened memory-mapped);
- files that ``datasets.load_dataset`` reads: ``json:train.jsonl``, ``csv:train.csv``,
  ``text:corpus.txt``, ``parquet:part-*.parquet`` (builder, colon, files; a glob is allowed),
  or simply a ``.csv``/``.parquet``/``.arrow`` file, recognised by its suffix.

A task reads named columns (:class:`TableColumns`): CoSENT ``sentence1``, ``sentence2``,
``label``; KgCLUE ``question``, ``answer``; triple extraction ``text``, ``spo_list``. A table whose
columns are named otherwise is mapped onto them (``columns={"sentence1": "text_a"}``, or
``--columns sentence1=text_a`` on the command line). A bad row is named by its number, as a bad
line is by the line readers; bytes that are not UTF-8 in a file ``datasets`` was asked to load
are named by file and line, which ``datasets`` itself does not say.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

#: ``datasets.load_dataset`` builders a source may name before a colon.
BUILDERS = ("json", "csv", "text", "parquet", "arrow")
#: Suffixes that mean a table file without a builder named.
SUFFIX_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def _is_table_object(source) -> bool:
    if not hasattr(source, "column_names"):
        return False
    import datasets
    return isinstance(source, (datasets.Dataset, datasets.IterableDataset))


def _builder_and_pattern(text: str) -> Tuple[Optional[str], str]:
    builder, colon, rest = text.partition(":")
    if colon and builder in BUILDERS:
        return builder, rest
    return SUFFIX_BUILDERS.get(os.path.splitext(text)[1].lower()), text


def is_table_source(source) -> bool:
    """Whether ``source`` is read as a table (see the module's list) rather than a line file."""
    if _is_table_object(source):
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source)
    return os.path.isdir(text) or _builder_and_pattern(text)[0] is not None


def describe_source(source) -> str:
    """How errors name a source: its path, or a table's columns and size."""
    if not _is_table_object(source):
        return os.fspath(source)
    size = getattr(source, "num_rows", None)
    rows = f"{size} rows, " if size is not None else ""
    return f"<table: {rows}columns {', '.join(source.column_names or ['?'])}>"


def table_files(source) -> List[str]:
    """The files a ``builder:pattern`` source names, sorted; an error if there are none."""
    builder, pattern = _builder_and_pattern(os.fspath(source))
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no data file matches {pattern!r} (for datasets' {builder} "
                                "loader)")
    return files


def load_table(source, streaming: bool = False):
    """``source`` as a ``datasets`` table (``IterableDataset`` with ``streaming``, which reads
    files a batch at a time and never holds them)."""
    import datasets

    if _is_table_object(source):
        if streaming and isinstance(source, datasets.Dataset):
            return source.to_iterable_dataset()
        return source
    text = os.fspath(source)
    if os.path.isdir(text):
        table = datasets.load_from_disk(text)
        if isinstance(table, datasets.DatasetDict):
            raise ValueError(f"{text} holds the splits {sorted(table)}: give one of them, e.g. "
                             f"{os.path.join(text, sorted(table)[0])}")
        return table.to_iterable_dataset() if streaming else table
    builder, _ = _builder_and_pattern(text)
    files = table_files(text)
    if builder in TEXT_BUILDERS:
        for path in files:
            check_utf8(path)
    try:
        return datasets.load_dataset(builder, data_files=files, split="train",
                                     streaming=streaming)
    except Exception as error:
        raise ValueError(f"datasets' {builder} loader could not read {', '.join(files)}: "
                         f"{type(error).__name__}: {error}") from error


#: Loaders of text files. pyarrow's JSON reader keeps bytes that are not UTF-8 in its strings
#: and fails only when a row is read, and no loader says which line held them.
TEXT_BUILDERS = ("json", "csv", "text")


def check_utf8(path, block: int = 1 << 24) -> None:
    """Refuse a file that is not UTF-8, naming the line and column of the first bad byte.

    The whole file is decoded in blocks (C speed, constant memory); only a file that fails is
    read again line by line to find where."""
    import codecs

    from bert4x.training.readers import numbered_lines

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(block):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        return
    except UnicodeDecodeError:
        pass
    for _ in numbered_lines(path):  # raises at the first line holding a bad byte
        pass


def parse_column_pair(item: str) -> Tuple[str, str]:
    """``"sentence1=text_a"`` (one pair of the ``--columns`` option) as
    ``("sentence1", "text_a")``: the task's column name, then the table's."""
    ours, equals, theirs = item.partition("=")
    if not equals or not ours.strip() or not theirs.strip():
        raise ValueError(f"--columns takes NAME=COLUMN pairs, got {item!r}")
    return ours.strip(), theirs.strip()


@dataclasses.dataclass(frozen=True)
class TableColumns:
    """The columns a task reads from a table, and where the table keeps them.

    ``mapping`` maps a task's column name to the table's (unmapped names are looked up as they
    are). ``optional`` columns become None when the table lacks them.
    """

    task: str
    required: Tuple[str, ...]
    optional: Tuple[str, ...] = ()
    mapping: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        known = (*self.required, *self.optional)
        unknown = sorted(set(self.mapping) - set(known))
        if unknown:
            raise ValueError(f"the {self.task} task reads no column named {', '.join(unknown)}; "
                             f"its columns are {', '.join(known)}")

    def with_mapping(self, mapping: Mapping[str, str]) -> "TableColumns":
        return dataclasses.replace(self, mapping=dict(mapping))

    def where(self, table_columns: Sequence[str]) -> Dict[str, Optional[str]]:
        """Each task column's name in a table with ``table_columns`` (None: an absent optional
        one); a missing required column is an error naming it, the task and the way out."""
        located = {}
        for name in (*self.required, *self.optional):
            column = self.mapping.get(name, name)
            if column in table_columns:
                located[name] = column
            elif name in self.required:
                mapped = f" (mapped from {name!r})" if column != name else ""
                raise ValueError(
                    f"the table has no column {column!r}{mapped}, which the {self.task} task "
                    f"needs; its columns are {', '.join(table_columns)}. Map one with "
                    f"--columns {name}=COLUMN (columns={{{name!r}: 'COLUMN'}})")
            else:
                located[name] = None
        return located

    def rows(self, table) -> Iterator[Tuple[int, dict]]:
        """``(row number from 1, {task column: value})`` for each row of ``table``."""
        located = None
        if table.column_names is not None:
            located = self.where(table.column_names)
        from bert4x.training.readers import DataError

        rows = iter(table)
        for number in itertools.count(1):
            try:
                row = next(rows)
            except StopIteration:
                return
            except UnicodeDecodeError as error:  # a table made from bytes that are not UTF-8
                raise DataError(describe_source(table), number, f"not UTF-8 text ({error})",
                                unit="row ") from None
            if located is None:  # a stream that learns its columns from its first row
                located = self.where(list(row))
            yield number, {name: None if column is None else row[column]
                           for name, column in located.items()}


def tokenize_table(table, tokenizer, text_columns: Sequence[str], maxlen: Optional[int] = None,
                   num_proc: Optional[int] = None, batch_size: int = 1000, cache: bool = True):
    """``table`` with ``{column}_ids`` (``[CLS] … [SEP]``, cut to ``maxlen``) for each of
    ``text_columns`` and ``length``, the longest of them per row: what
    :class:`~bert4x.training.data.BucketedBatches` buckets on (``lengths=table["length"]``)
    without reading a row.

    It runs as ``Dataset.map(batched=True, num_proc=num_proc)`` with the tokenizer's Rust
    batch path. A table on disk keeps the result in a cache file beside its own, keyed by the
    tokenizer and settings, so tokenising it again reads that file instead (``cache=False``
    tokenises anyway)."""
    def encode(batch):
        encoded = {f"{column}_ids": tokenizer.encode_batch(batch[column], maxlen=maxlen)[0]
                   for column in text_columns}
        encoded["length"] = [max(map(len, row)) for row in zip(*encoded.values())]
        return encoded

    missing = [column for column in text_columns if column not in table.column_names]
    if missing:
        raise ValueError(f"the table has no column {', '.join(map(repr, missing))} to "
                         f"tokenise; its columns are {', '.join(table.column_names)}")
    return table.map(encode, batched=True, batch_size=batch_size, num_proc=num_proc,
                     load_from_cache_file=cache, desc="tokenising")
