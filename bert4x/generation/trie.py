"""A compact prefix tree over token-id sequences, in flat NumPy arrays.

The KgCLUE reference kept its 20.6M knowledge-base keys in a Python dict-of-dicts (~30 GB of
RAM). Here the tree is four arrays, with nodes numbered breadth-first so each node's children are
consecutive and sorted by token:

* ``tokens[node]``: the token on the edge into ``node`` (-1 for the root, node 0);
* ``first_child[node] .. first_child[node + 1]``: the node's children;
* ``terminal_nodes`` (sorted) and ``value_offsets``: which nodes end a key, and where their
  values start in the value list (a key may carry several values, kept in insertion order);
* ``value_bytes`` / ``value_bounds``: the values as one UTF-8 blob with offsets.

Keys are collected by :meth:`Trie.add` and the arrays are built in one vectorised pass at the
first query or save (sort the keys, then walk them depth by depth). A saved trie is a directory
of ``.npy`` files that :meth:`Trie.load` memory-maps, so opening a large index is instant and
its pages are shared between processes.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from bert4x.files import atomic_path

FORMAT_VERSION = 1
ARRAYS = ("tokens", "first_child", "terminal_nodes", "value_offsets", "value_bytes",
          "value_bounds")
_MISSING = object()


class Trie:
    """Prefix tree over sequences of non-negative token ids, with optional string values.

    ``add(key, value=None)`` any number of times (repeated keys collect their values in order),
    then query: ``next_tokens(prefix)``, ``get(key)``, ``key in trie``, ``keys(prefix)``,
    ``len(trie)``; ``save(directory)`` and ``Trie.load(directory)``. Adding after the first query
    is refused: the arrays are immutable. Token ids up to 65534 are stored in 2 bytes while
    building; pass ``vocab_size`` for larger vocabularies.
    """

    def __init__(self, vocab_size: Optional[int] = None):
        wide = vocab_size is not None and vocab_size > 65535
        self._token_dtype = np.dtype(">u4" if wide else ">u2")
        self._max_token = (2 ** 32 - 2) if wide else 65534
        self._pending_keys: List[bytes] = []
        self._pending_values: List[Optional[bytes]] = []
        self._arrays = None

    # Building ---------------------------------------------------------------------------------
    def add(self, key: Sequence[int], value: Optional[str] = None) -> None:
        if self._arrays is not None:
            raise RuntimeError("this trie is built (queried, saved or loaded) and is immutable; "
                               "add every key before using it")
        key = np.asarray(key, dtype="int64")
        if key.ndim != 1 or key.size == 0:
            raise ValueError("a trie key must be a non-empty sequence of token ids")
        if key.min() < 0 or key.max() > self._max_token:
            raise ValueError(f"token ids must be in [0, {self._max_token}], got "
                             f"{key.min()}..{key.max()}; pass vocab_size for larger ids")
        if value is not None and not isinstance(value, str):
            raise TypeError(f"trie values are strings, got {type(value).__name__}")
        # Stored as token + 1 so that 0 marks the end of a key once keys are padded.
        self._pending_keys.append((key + 1).astype(self._token_dtype).tobytes())
        self._pending_values.append(None if value is None else value.encode("utf-8"))

    def build(self) -> "Trie":
        """Turn the added keys into the flat arrays (done automatically on first use)."""
        if self._arrays is None:
            self._arrays = _build_arrays(self._pending_keys, self._pending_values,
                                         self._token_dtype)
            self._pending_keys, self._pending_values = [], []
        return self

    @property
    def arrays(self) -> dict:
        return self.build()._arrays

    # Queries ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of distinct keys."""
        return len(self.arrays["terminal_nodes"])

    def next_tokens(self, prefix: Sequence[int]) -> np.ndarray:
        """The sorted tokens that may follow ``prefix`` (empty when ``prefix`` is a key with no
        extension). A prefix that leads nowhere is a KeyError: a constrained decoder never
        produces one, so it signals a bug in the caller."""
        self._check_not_empty()
        node = self._walk(prefix)
        if node < 0:
            raise KeyError(f"prefix {list(prefix)} is not in the trie")
        start, stop = self._children(node)
        return np.asarray(self.arrays["tokens"][start:stop], dtype="int64")

    def get(self, key: Sequence[int], default=_MISSING) -> List[str]:
        """The values stored with ``key`` in insertion order ([] when added without values)."""
        index = self._terminal_index(key)
        if index < 0:
            if default is _MISSING:
                raise KeyError(f"{list(key)} is not a key of the trie")
            return default
        arrays = self.arrays
        first, last = arrays["value_offsets"][index], arrays["value_offsets"][index + 1]
        bounds, blob = arrays["value_bounds"], arrays["value_bytes"]
        return [bytes(blob[bounds[i]:bounds[i + 1]]).decode("utf-8") for i in range(first, last)]

    def __contains__(self, key) -> bool:
        return self._terminal_index(key) >= 0

    def keys(self, prefix: Sequence[int] = ()) -> Iterator[Tuple[int, ...]]:
        """Every key that starts with ``prefix``, in token order (depth first)."""
        node = self._walk(prefix) if len(self) else -1
        if node < 0:
            return
        terminals = self.arrays["terminal_nodes"]
        stack = [(node, tuple(int(t) for t in prefix))]
        while stack:
            node, key = stack.pop()
            position = np.searchsorted(terminals, node)
            if position < len(terminals) and terminals[position] == node and key:
                yield key
            start, stop = self._children(node)
            tokens = self.arrays["tokens"]
            stack.extend((child, key + (int(tokens[child]),))
                         for child in range(stop - 1, start - 1, -1))

    # Storage ----------------------------------------------------------------------------------
    def save(self, directory) -> str:
        """Write the arrays as ``.npy`` files plus ``trie.json`` (written last, atomically)."""
        os.makedirs(directory, exist_ok=True)
        arrays = self.arrays
        for name in ARRAYS:
            with atomic_path(os.path.join(directory, f"{name}.npy")) as path:
                np.save(path, arrays[name])
        meta = {"format": "bert4x-trie", "version": FORMAT_VERSION, "keys": len(self),
                "nodes": int(len(arrays["tokens"])), "token_dtype": self._token_dtype.str}
        with atomic_path(os.path.join(directory, "trie.json")) as path:
            with open(path, "w") as handle:
                json.dump(meta, handle)
        return str(directory)

    @classmethod
    def load(cls, directory, mmap: bool = True) -> "Trie":
        """Open a saved trie; with ``mmap`` the arrays stay on disk and are paged in on use."""
        meta_path = os.path.join(directory, "trie.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{directory} is not a saved bert4x trie (no trie.json)")
        with open(meta_path) as handle:
            meta = json.load(handle)
        if meta.get("format") != "bert4x-trie" or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: not a bert4x trie of format version "
                             f"{FORMAT_VERSION}: {meta}")
        trie = cls(vocab_size=2 ** 32 if meta["token_dtype"] == ">u4" else None)
        trie._arrays = {name: np.load(os.path.join(directory, f"{name}.npy"),
                                      mmap_mode="r" if mmap else None) for name in ARRAYS}
        if len(trie._arrays["tokens"]) != meta["nodes"]:
            raise ValueError(f"{directory}: tokens.npy has {len(trie._arrays['tokens'])} nodes, "
                             f"trie.json says {meta['nodes']}; the save was incomplete")
        return trie

    # Internals --------------------------------------------------------------------------------
    def _check_not_empty(self):
        if len(self) == 0:
            raise ValueError("the trie is empty: add keys before querying or decoding with it")

    def _children(self, node: int) -> Tuple[int, int]:
        first_child = self.arrays["first_child"]
        return int(first_child[node]), int(first_child[node + 1])

    def _walk(self, prefix) -> int:
        """The node reached by ``prefix`` from the root, or -1."""
        tokens = self.arrays["tokens"]
        node = 0
        for token in prefix:
            start, stop = self._children(node)
            position = start + int(np.searchsorted(tokens[start:stop], token))
            if position == stop or tokens[position] != token:
                return -1
            node = position
        return node

    def _terminal_index(self, key) -> int:
        if len(key) == 0 or len(self) == 0:
            return -1
        node = self._walk(key)
        terminals = self.arrays["terminal_nodes"]
        position = int(np.searchsorted(terminals, node))
        return position if node >= 0 and position < len(terminals) and \
            terminals[position] == node else -1


def _smallest_int(values: np.ndarray) -> np.ndarray:
    return values.astype("int32" if values.size == 0 or values.max() < 2 ** 31 else "int64")


def _build_arrays(keys: List[bytes], values: List[Optional[bytes]], token_dtype) -> dict:
    """The flat arrays for ``keys`` (big-endian token+1 bytes), in one pass per depth."""
    count = len(keys)
    if count == 0:
        return {"tokens": np.full(1, -1, "int32"), "first_child": np.ones(2, "int32"),
                "terminal_nodes": np.zeros(0, "int32"), "value_offsets": np.zeros(1, "int32"),
                "value_bytes": np.zeros(0, "uint8"), "value_bounds": np.zeros(1, "int32")}
    width = token_dtype.itemsize
    depth = max(len(key) for key in keys) // width
    # Fixed-width byte strings sort exactly like zero-padded token sequences (shorter first).
    packed = np.array(keys, dtype=f"S{depth * width}")
    order = np.argsort(packed, kind="stable")
    matrix = packed[order].view(token_dtype).reshape(count, depth)
    del packed

    lengths = (matrix != 0).sum(axis=1)
    differs = np.zeros(count, dtype=bool)  # key i's prefix so far differs from key i-1's
    differs[0] = True
    node_of_key = np.zeros(count, dtype="int64")
    terminal = np.zeros(count, dtype="int64")
    tokens, child_counts = [np.full(1, -1, "int32")], []
    level_start, next_id = 0, 1
    for level in range(depth):
        column = matrix[:, level]
        differs[1:] |= column[1:] != column[:-1]
        present = column != 0
        starts = differs & present
        new_ids = next_id + np.cumsum(starts) - 1
        parents = node_of_key[starts]
        level_size = next_id - level_start
        child_counts.append(np.bincount(parents - level_start, minlength=level_size))
        tokens.append((column[starts].astype("int64") - 1).astype("int32"))
        ends_here = lengths == level + 1
        node_of_key = np.where(present, new_ids, node_of_key)
        terminal[ends_here] = node_of_key[ends_here]
        level_start, next_id = next_id, next_id + int(starts.sum())
    child_counts.append(np.zeros(next_id - level_start, dtype="int64"))
    first_child = np.concatenate([[1], 1 + np.cumsum(np.concatenate(child_counts))])

    # Values grouped by terminal node, each group in insertion order.
    by_node = np.argsort(terminal, kind="stable")
    original = order[by_node]
    has_value = np.fromiter((values[i] is not None for i in original), dtype=bool, count=count)
    terminal_nodes, first = np.unique(terminal[by_node], return_index=True)
    values_before = np.concatenate([[0], np.cumsum(has_value)])
    value_offsets = np.concatenate([values_before[first], [values_before[-1]]])
    encoded = [values[i] for i, keep in zip(original, has_value) if keep]
    value_bounds = np.concatenate([[0], np.cumsum([len(v) for v in encoded], dtype="int64")])
    return {
        "tokens": np.concatenate(tokens),
        "first_child": _smallest_int(first_child),
        "terminal_nodes": _smallest_int(terminal_nodes),
        "value_offsets": _smallest_int(value_offsets),
        "value_bytes": np.frombuffer(b"".join(encoded), dtype="uint8"),
        "value_bounds": _smallest_int(value_bounds),
    }
