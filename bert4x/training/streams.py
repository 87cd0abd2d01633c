"""Batches from a corpus too large to hold: a ``datasets.IterableDataset`` read as it trains.

The corpus is an endless stream of passes; pass ``p`` reads the source shuffled by
``(seed, p)`` (``IterableDataset.shuffle``: shard order, then a buffer). Each source row becomes
zero or more examples (``examples_of``: tokenise a text and cut it into windows). Epoch ``e`` is
examples ``[e·E, (e+1)·E)`` of that stream, ``E = steps_per_epoch · batch_size``, bucketed by
length inside chunks as :class:`~bert4x.training.data.BucketedBatches` does. So the batches of
an epoch depend only on ``(seed, e)``: a resumed run reads the stream again up to where its
epoch starts and sees the batches the interrupted run would have seen. Memory holds one chunk,
the shuffle buffer and what the caller keeps, whatever the corpus size.

Sharding: worker ``index`` of ``count`` reads its own part of each pass
(``datasets.distributed.split_dataset_by_node``: whole files when they divide evenly among
the workers, else every ``count``-th row of the shuffled stream), and forms its own batches of
``batch_size / count`` examples.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from bert4x.training.data import EpochBatches
from bert4x.training.readers import numbered_lines
from bert4x.training.tables import load_table


class StreamedBatches(EpochBatches):
    """``steps_per_epoch`` padded batches an epoch from ``source`` (an ``IterableDataset``, or
    any table :func:`~bert4x.training.tables.load_table` opens, streamed), see the module's
    description.

    ``examples_of(row) -> iterable of examples`` (default: the row itself), ``length(example)``
    the size to bucket on, ``collate``/``seeded_collate``/``shard`` as for
    :class:`~bert4x.training.data.EpochBatches` (``batch_size`` is the global batch).
    """

    def __init__(self, source, batch_size: int, steps_per_epoch: int, collate: Callable,
                 examples_of: Optional[Callable[[dict], Iterable]] = None,
                 length: Callable = len, seed: int = 0, bucket_batches: int = 32,
                 buffer_size: int = 10_000, **kwargs):
        super().__init__(batch_size, collate, seed, **kwargs)
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        self.source = load_table(source, streaming=True)
        self.steps_per_epoch = steps_per_epoch
        self.examples_of = examples_of or (lambda row: (row,))
        self.length = length
        self.bucket_batches = bucket_batches
        self.buffer_size = buffer_size
        workers = 1 if self.shard is None else self.shard[1]
        self.local_batch_size = batch_size // workers
        self._stream: Optional[Iterator] = None
        self._stream_position = 0  # examples of the stream read so far
        self._restart()

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._restart()

    def __len__(self):
        return self.steps_per_epoch

    def __getitem__(self, index):
        """Batch ``index`` of the current epoch. Keras asks for them in order (and for batch 0
        twice, to learn the shapes); any other order replays the epoch from its start."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of an epoch of {len(self)}")
        if index == self._served - 1:
            return self._last
        if index < self._served:
            self._restart()
        while self._served <= index:
            examples = next(self._epoch)
            self._served += 1
        self._last = self._collated(examples, index)
        return self._last

    def _restart(self) -> None:
        self._epoch = self._epoch_batches(self.epoch)
        self._served, self._last = 0, None

    def _epoch_batches(self, epoch: int) -> Iterator[List]:
        """The epoch's local batches, as lists of examples, in training order."""
        size = self.steps_per_epoch * self.local_batch_size
        stream = self._stream_from(epoch * size)
        chunk = self.local_batch_size * self.bucket_batches
        for number, start in enumerate(range(0, size, chunk)):
            part = list(itertools.islice(stream, min(chunk, size - start)))
            self._stream_position += len(part)
            part.sort(key=self.length)  # stable: equal lengths keep stream order
            batches = [part[i:i + self.local_batch_size]
                       for i in range(0, len(part), self.local_batch_size)]
            order = np.random.default_rng([self.seed, epoch, number]).permutation(len(batches))
            for i in order:
                yield batches[i]

    def _stream_from(self, position: int) -> Iterator:
        """The example stream from ``position`` on: the open one when it is there already
        (the next epoch of an uninterrupted run), else a new one read up to it (a resume)."""
        if self._stream is None or self._stream_position != position:
            self._stream = self._examples()
            for _ in itertools.islice(self._stream, position):
                pass
            self._stream_position = position
        return self._stream

    def _examples(self) -> Iterator:
        for number in itertools.count():
            found = False
            for row in self._pass(number):
                for example in self.examples_of(row):
                    found = True
                    yield example
            if not found:
                raise ValueError("the stream gave no examples in a whole pass: the corpus is "
                                 "empty, or every row was too short to use")

    def _pass(self, number: int):
        """Pass ``number`` over the source: shuffled by ``(seed, number)``, then this worker's
        part of it."""
        stream = self.source.shuffle(seed=self.seed, buffer_size=self.buffer_size)
        stream.set_epoch(number)  # datasets seeds the pass with seed + number
        if self.shard is not None:
            from datasets.distributed import split_dataset_by_node
            stream = split_dataset_by_node(stream, rank=self.shard[0],
                                           world_size=self.shard[1])
        return stream


def text_stream(paths: Iterable[str], skip_every: Optional[int] = None) -> "datasets.IterableDataset":
    """An ``IterableDataset`` of ``{"text": line}`` over text files, one text per line, read by
    :func:`~bert4x.training.readers.numbered_lines` (a byte that is not UTF-8 is named by file
    and line). One shard per file, so that workers can split the files among them.
    ``skip_every=n`` leaves out every ``n``-th line of each file (counted from the first), the
    texts a run holds out."""
    import datasets

    paths = [str(path) for path in paths]
    if not paths:
        raise ValueError("no corpus files given")
    return datasets.IterableDataset.from_generator(
        _file_texts, gen_kwargs=dict(paths=paths, skip_every=skip_every or 0))


def held_out_texts(paths: Iterable[str], every: int, limit: int) -> List[str]:
    """Every ``every``-th line of each file (those :func:`text_stream` skips), at most
    ``limit`` of them in all: the evaluation texts, the only part of a corpus held in memory."""
    held_out = (line for number, line in _texts_by_place(paths) if number % every == 0)
    return list(itertools.islice(held_out, limit))


def _file_texts(paths: List[str], skip_every: int):
    for number, line in _texts_by_place(paths):
        if not skip_every or number % skip_every:
            yield {"text": line}


def _texts_by_place(paths: Iterable[str]) -> Iterator[Tuple[int, str]]:
    """``(place in its file from 0, text)`` for the non-blank lines of each file in turn: the
    place decides whether a text is held out."""
    for path in paths:
        for place, (_, line) in enumerate(numbered_lines(path)):
            yield place, line
