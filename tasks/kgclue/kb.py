"""The knowledge base as a prefix tree over ``subject [SEP] predicate [SEP] sense [SEP]`` ids.

Each key's values are its triples (``full subject \\t predicate \\t object``) in file order, so
a key with several objects keeps them all; answers use the first, as the reference does. Keys
use the task's tokenizer, so the tree constrains exactly the sequences the model generates.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Sequence

from tqdm.auto import tqdm

from bert4x.generation import Trie
from bert4x.training import iter_records
from tasks.kgclue.data import KB_COLUMNS, Triple, parse_kb_record, split_sense

#: Keys are tokenised in chunks through the fast batch tokenizer.
CHUNK = 10000


def key_ids(tokenizer, subjects: Sequence[str], senses: Sequence[str],
            predicates: Sequence[str]) -> List[List[int]]:
    """``name [SEP] predicate [SEP] sense [SEP]`` token ids for each triple."""
    pieces = [tokenizer.encode_batch(list(texts))[0] for texts in (subjects, predicates, senses)]
    sep = tokenizer.sep_id
    return [[*name[1:-1], sep, *predicate[1:-1], sep, *sense[1:-1], sep]
            for name, predicate, sense in zip(*pieces)]


def triple_value(triple: Triple) -> str:
    return "\t".join((triple.full_subject, triple.predicate, triple.object))


def value_triple(value: str) -> Triple:
    subject, predicate, obj = value.split("\t")
    name, sense = split_sense(subject)
    return Triple(name, sense, predicate, obj)


class KnowledgeBase:
    """A :class:`~bert4x.generation.Trie` of the KB's keys with the triples as values."""

    def __init__(self, trie: Trie):
        self.trie = trie

    @classmethod
    def build(cls, triples: Iterable[Triple], tokenizer, progress: bool = False,
              total=None) -> "KnowledgeBase":
        trie = Trie(vocab_size=tokenizer.vocab_size)
        chunk: List[Triple] = []

        def flush():
            keys = key_ids(tokenizer, [t.subject for t in chunk], [t.sense for t in chunk],
                           [t.predicate for t in chunk])
            for key, triple in zip(keys, chunk):
                trie.add(key, triple_value(triple))
            chunk.clear()

        for triple in tqdm(triples, desc="indexing KB", unit=" triples", total=total,
                           disable=not progress):
            chunk.append(triple)
            if len(chunk) == CHUNK:
                flush()
        if chunk:
            flush()
        return cls(trie.build())

    @classmethod
    def from_file(cls, path, tokenizer, on_error: str = "skip", progress: bool = True,
                  columns=None):
        """Stream a ``subject \\t predicate \\t object`` file (or a table with
        :data:`~tasks.kgclue.data.KB_COLUMNS`) into the tree; returns the KB and the skipped
        lines ``[(line, reason)]``."""
        skipped = []
        triples = iter_records(path, parse_kb_record, fields=3, on_error=on_error,
                               skipped=skipped, table=KB_COLUMNS.with_mapping(columns or {}))
        kb = cls.build(triples, tokenizer, progress=progress)
        if len(kb) == 0:
            raise ValueError(f"{path}: no usable triples ({len(skipped)} malformed lines)")
        return kb, skipped

    def __len__(self):
        return len(self.trie)

    def lookup(self, ids: Sequence[int]) -> List[Triple]:
        """The triples stored under a generated key ([] when it is not a key)."""
        return [value_triple(value) for value in self.trie.get(ids, default=[])]

    def save(self, directory) -> str:
        return self.trie.save(directory)

    @classmethod
    def load(cls, directory) -> "KnowledgeBase":
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"KB index not found: {directory} (build it with "
                                    "`bert4x kgclue build-kb`)")
        return cls(Trie.load(directory))
