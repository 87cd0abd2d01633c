"""bert4keras' ``snippets`` names, so that ``from bert4keras.snippets import X`` becomes
``from bert4x.snippets import X``.

The padding is :func:`bert4x.training.sequence_padding` and the decoder subclass API is
:mod:`bert4x.generation.subclass_api`; what is here is bert4keras' batch generator protocol,
made to work with Keras 3 ``fit``, Viterbi decoding for CRF taggers, and small helpers.
"""

from __future__ import annotations

import builtins
import multiprocessing
import multiprocessing.dummy
from typing import List, Optional

import keras
import numpy as np

from bert4x.files import LineCheckedText
from bert4x.generation.subclass_api import AutoRegressiveDecoder
from bert4x.training.data import sequence_padding

__all__ = ["AutoRegressiveDecoder", "DataGenerator", "ViterbiDecoder", "open", "parallel_apply",
           "sequence_padding", "text_segmentate", "to_array", "truncate_sequences"]


def open(name, mode="r", encoding=None, errors="strict", indexable=False):
    """Python's ``open`` (bert4keras' wrapper existed for Python 2), except that a UTF-8 text
    file read with strict errors names the file and line of a byte that is not UTF-8. Its
    ``indexable`` random access into large files is not offered: read such a corpus through
    :mod:`bert4x.training` readers instead."""
    if indexable:
        raise NotImplementedError("open(..., indexable=...) is not supported by bert4x; read "
                                  "the file line by line, or load it into a list first")
    utf8 = (encoding or "utf-8").lower().replace("_", "-") in ("utf-8", "utf8")
    if mode in ("r", "rt") and utf8 and errors == "strict":
        return LineCheckedText(name)
    return builtins.open(name, mode, encoding=encoding, errors=errors)


_WORKER = {}


def _start_worker(func, seeds):
    _WORKER["func"] = func
    if not seeds.empty():
        np.random.seed(seeds.get())


def _apply_in_worker(item):
    return _WORKER["func"](item)


def parallel_apply(func, iterable, workers, max_queue_size, callback=None, dummy=False,
                   random_seeds=True, unordered=True):
    """``func`` over ``iterable`` in ``workers`` processes (threads with ``dummy``).

    Returns the results (in input order unless ``unordered``), or, with ``callback``, calls it
    on each result as it arrives. ``func`` may be a closure or lambda: it reaches the workers
    when they start (forked processes), never pickled; items and results are pickled.
    ``max_queue_size`` only sizes the chunks sent to the workers: the pool reads ``iterable``
    ahead of the results, so give it a list or a generator that fits in memory.
    ``random_seeds``: True gives each worker a fresh NumPy seed, a list gives one seed per
    worker, False leaves NumPy's state as forked.
    """
    pool_module = multiprocessing.dummy if dummy else multiprocessing.get_context("fork")
    seeds = pool_module.Queue()
    seed_list = [None] * workers if random_seeds is True else list(random_seeds or [])
    for seed in seed_list:
        seeds.put(seed)
    with pool_module.Pool(workers, _start_worker, (func, seeds)) as pool:
        mapper = pool.imap_unordered if unordered or callback is not None else pool.imap
        results = mapper(_apply_in_worker, iterable,
                         chunksize=max(1, max_queue_size // (4 * workers)))
        if callback is None:
            return list(results)
        for result in results:
            callback(result)
        return None


def to_array(*args):
    """Each argument as a NumPy array (one array for one argument)."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(args) == 1 else arrays


def truncate_sequences(maxlen: int, indices, *sequences) -> List[list]:
    """Pop items from the longest of ``sequences`` (in place) until their total length is at
    most ``maxlen``; ``indices`` says which item each sequence loses (``-1``: its last, a list:
    one index per sequence). Empty sequences are dropped from the result, as in bert4keras."""
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    while sum(len(s) for s in sequences) > maxlen:
        longest = int(np.argmax([len(s) for s in sequences]))
        sequences[longest].pop(indices[longest])
    return sequences


def text_segmentate(text: str, maxlen: int, seps: str = "\n", strips: Optional[str] = None
                    ) -> List[str]:
    """Split ``text`` into pieces of at most ``maxlen`` characters where possible, cutting at
    the first separator of ``seps`` first, then at the next ones inside pieces still too long
    (a piece with no separator left stays whole). Each piece keeps its separator."""
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    pieces = text.split(seps[0])
    texts, current = [], ""
    for number, piece in enumerate(pieces):
        if current and piece and len(current) + len(piece) > maxlen - 1:
            texts.extend(text_segmentate(current, maxlen, seps[1:], strips))
            current = ""
        current += piece if number + 1 == len(pieces) else piece + seps[0]
    if current:
        texts.extend(text_segmentate(current, maxlen, seps[1:], strips))
    return texts


class DataGenerator:
    """bert4keras' batch generator: subclass it and write ``__iter__(self, random=False)``,
    which walks :meth:`sample` and yields ``(inputs, targets)`` batches (``targets`` may be
    ``None`` for models whose loss is a layer).

    ``model.fit(generator.forfit(), steps_per_epoch=len(generator))`` works as in bert4keras.
    Keras 3 fixes a generator's tensor shapes from its first two batches, so a third batch of
    another padded length would fail; under TensorFlow :meth:`forfit` therefore hands Keras a
    ``tf.data.Dataset`` whose axes may vary, except a last axis that is a feature axis (float
    arrays) or a label column (size 1).
    """

    def __init__(self, data, batch_size: int = 32, buffer_size: Optional[int] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data, self.batch_size = data, batch_size
        self.steps = -(-len(data) // batch_size) if hasattr(data, "__len__") else None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        if self.steps is None:
            raise TypeError("this DataGenerator reads an iterable of unknown length; give "
                            "fit() steps_per_epoch yourself")
        return self.steps

    def sample(self, random: bool = False):
        """``(is_last, item)`` for each item of the data, shuffled when ``random`` (through a
        ``buffer_size`` buffer when the data has no length)."""
        if not random:
            items = iter(self.data)
        elif self.steps is not None:
            items = (self.data[i] for i in np.random.permutation(len(self.data)))
        else:
            items = self._buffer_shuffled()
        try:
            current = next(items)
        except StopIteration:
            raise ValueError("DataGenerator has no data") from None
        for following in items:
            yield False, current
            current = following
        yield True, current

    def _buffer_shuffled(self):
        buffer = []
        for item in self.data:
            buffer.append(item)
            if len(buffer) > self.buffer_size:
                yield buffer.pop(np.random.randint(len(buffer)))
        while buffer:
            yield buffer.pop(np.random.randint(len(buffer)))

    def __iter__(self, random: bool = False):
        raise NotImplementedError("subclass DataGenerator and write __iter__(self, random=False)")

    def _batches(self, random: bool):
        while True:
            for inputs, *rest in self.__iter__(random):
                targets = rest[0] if rest else None
                yield (_for_model(inputs),) if targets is None else (_for_model(inputs),
                                                                     _for_model(targets))

    def _inputs(self, random: bool):
        while True:
            for inputs, *_ in self.__iter__(random):
                yield (_for_model(inputs),)

    def forfit(self, random: bool = True):
        """Endless ``(inputs, targets)`` batches for ``fit`` (reshuffled each pass when
        ``random``)."""
        return _for_keras(lambda: self._batches(random))

    def fortest(self, random: bool = False):
        """Endless input batches for ``predict(..., steps=len(generator))``."""
        return _for_keras(lambda: self._inputs(random))

    def to_dataset(self, types, shapes, names=None, padded_batch: bool = False):
        """A ``tf.data.Dataset`` of the items ``__iter__`` yields, batched by ``batch_size``
        (padded to the longest with ``padded_batch``), as bert4keras' ``to_dataset``:
        ``types``/``shapes`` describe one item, e.g. ``(("int32", "int32"), "int32")`` and
        ``(([None], [None]), [1])``; ``names`` turns items into dicts keyed by those names
        (one name, a list of names, or one list per part of the item)."""
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError("to_dataset builds a tf.data.Dataset, which needs the "
                                      "TensorFlow backend; use forfit() on other backends")
        import tensorflow as tf

        wrap = _named(names)
        types, shapes = wrap(_nested_tuples(types)), wrap(_nested_tuples(shapes))

        def items():
            while True:
                for item in self.__iter__(True):
                    yield wrap(_for_model(item))

        if padded_batch:
            dataset = tf.data.Dataset.from_generator(items, output_types=types)
            return dataset.padded_batch(self.batch_size, shapes)
        dataset = tf.data.Dataset.from_generator(items, output_types=types,
                                                 output_shapes=shapes)
        return dataset.batch(self.batch_size)


def _nested_tuples(structure):
    """Lists inside ``types``/``shapes`` as tuples, except a shape's own list of sizes."""
    if isinstance(structure, (list, tuple)) and structure and \
            all(isinstance(s, (int, type(None))) for s in structure):
        return list(structure)
    if isinstance(structure, (list, tuple)):
        return tuple(_nested_tuples(s) for s in structure)
    return structure


def _named(names):
    """How an item becomes dicts under ``names`` (bert4keras' three forms), or stays as is."""
    if names is None:
        return lambda item: item
    if isinstance(names, str):
        return lambda item: {names: item}
    if isinstance(names[0], str):
        return lambda item: dict(zip(names, item))
    return lambda item: tuple(dict(zip(keys, values)) for keys, values in zip(names, item))


def _for_keras(make_batches):
    """What Keras 3 reads without fixing padded lengths from the first batches: under
    TensorFlow a ``tf.data.Dataset`` with variable axes, elsewhere the generator itself (the
    JAX and PyTorch trainers take each batch as it comes)."""
    if keras.backend.backend() != "tensorflow":
        return make_batches()
    import tensorflow as tf

    first = next(make_batches())
    lengths = _padded_lengths(first[0])
    signature = keras.tree.map_structure(lambda a: _variable_spec(a, lengths), first)
    return tf.data.Dataset.from_generator(make_batches, output_signature=signature)


def _padded_lengths(inputs) -> set:
    """The padded lengths of a batch: axis 1 of its integer (token-like) input arrays,
    leaving out label columns fed as inputs ([batch, 1])."""
    return {np.shape(a)[1] for a in keras.tree.flatten(inputs)
            if np.ndim(a) >= 2 and np.shape(a)[1] > 1
            and np.issubdtype(np.asarray(a).dtype, np.integer)}


def _for_model(arrays):
    """A batch part as Keras 2 handed it to a model: lists (``[token_ids, segment_ids]``, one
    label array per output) become the tuples Keras 3 and ``tf.data`` want, and float64
    arrays (NumPy's default) become ``floatx``, as Keras 2 cast them to its float32
    placeholders; a loss or metric would otherwise mix float64 labels with float32 scores."""
    if isinstance(arrays, (list, tuple)):
        return tuple(_for_model(a) for a in arrays)
    if isinstance(arrays, np.ndarray) and arrays.dtype == np.float64:
        return arrays.astype(keras.config.floatx())
    return arrays


def _variable_spec(array, padded_lengths):
    import tensorflow as tf

    array = np.asarray(array)
    shape = [None] * array.ndim
    # The last axis keeps its size when it is a feature axis (one-hot labels, vectors) or a
    # label column ([batch, 1]): losses need those sizes, padding never changes them. It
    # varies when it is as long as the padded inputs: an [n, n] span matrix, say.
    if array.ndim >= 2 and (np.issubdtype(array.dtype, np.floating) or array.shape[-1] == 1) \
            and array.shape[-1] not in padded_lengths:
        shape[-1] = array.shape[-1]
    return tf.TensorSpec(shape, tf.as_dtype(array.dtype))


class ViterbiDecoder:
    """The best tag path under transition scores ``trans`` [tags, tags] (a CRF's
    ``layer.trans``, as NumPy), optionally restricted to paths that start with a tag in
    ``starts`` and end with a tag in ``ends``. Subclass and add a ``recognize(text)`` that
    calls :meth:`decode`, as bert4keras' NER examples do."""

    def __init__(self, trans, starts=None, ends=None):
        self.trans = np.asarray(trans)
        self.num_labels = len(self.trans)
        labels = range(self.num_labels)
        self.non_starts = [] if starts is None else [i for i in labels if i not in starts]
        self.non_ends = [] if ends is None else [i for i in labels if i not in ends]

    def decode(self, nodes):
        """Tag ids [n] of the best path through per-position tag scores ``nodes`` [n, tags]."""
        nodes = np.array(nodes, dtype=float)
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(f"nodes must be [length, {self.num_labels}] tag scores, got shape "
                             f"{nodes.shape}")
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        scores, backpointers = nodes[0], []
        for emission in nodes[1:]:
            candidates = scores[:, None] + self.trans + emission[None]
            backpointers.append(candidates.argmax(axis=0))
            scores = candidates.max(axis=0)
        path = [int(scores.argmax())]
        for pointers in reversed(backpointers):
            path.append(int(pointers[path[-1]]))
        return np.array(path[::-1])
