"""SentencePiece models (T5, mT5, ALBERT releases) behind the interface of :class:`Tokenizer`.

The ``sentencepiece`` package does the splitting; this module only adds what bert4x's tokenizers
share: ``encode`` to ``(token_ids, segment_ids)`` with markers around each text, truncation to
``maxlen``, checked inputs, and ``decode`` that leaves the markers out.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

from bert4x.tokenizers.pieces import Pieces
from bert4x.tokenizers.wordpiece import _as_text_list, _check_text, _truncate


_NOT_GIVEN = object()


class SpTokenizer:
    """A SentencePiece model as a bert4x tokenizer.

    By default each text is its pieces followed by ``</s>``, with no start token: HF's T5
    tokenizer, and bert4keras' ``SpTokenizer(path, token_start=None, token_end="</s>")`` as its
    T5 examples build it. ``start`` / ``end`` name other markers (``"[CLS]"`` / ``"[SEP]"`` for
    ALBERT releases), or None for none. A pair is ``start first end second end``, its second
    text in segment 1.
    """

    def __init__(self, model_path, start: Optional[str] = None, end: Optional[str] = "</s>",
                 token_start=_NOT_GIVEN, token_end=_NOT_GIVEN):
        import sentencepiece

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
        self.processor = sentencepiece.SentencePieceProcessor(model_file=os.fspath(model_path))
        # bert4keras' argument names, when given (None included), win over ours.
        start = start if token_start is _NOT_GIVEN else token_start
        end = end if token_end is _NOT_GIVEN else token_end
        self.start_id = None if start is None else self._marker_id(start)
        self.end_id = None if end is None else self._marker_id(end)
        self.pad_id = self.processor.pad_id()
        self.unk_id = self.processor.unk_id()

    def _marker_id(self, token: str) -> int:
        token_id = self.processor.piece_to_id(token)
        if token_id == self.processor.unk_id() and token != self.processor.id_to_piece(token_id):
            raise ValueError(f"the SentencePiece model has no piece {token!r} to use as a "
                             "marker; pass start=/end= pieces it has, or None")
        return token_id

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def token_to_id(self, token: str) -> int:
        return self.processor.piece_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        return self.processor.id_to_piece(int(token_id))

    def pieces(self, text: str) -> Pieces:
        _check_text(text)
        ids = self.processor.encode(text)
        return Pieces(ids, [(0, 0)] * len(ids))

    def encode(self, first: str, second: Optional[str] = None, maxlen: Optional[int] = None,
               truncation: str = "longest_first", truncate_from: str = "right"):
        """``(token_ids, segment_ids)``; ``maxlen`` counts the markers (see
        :meth:`Tokenizer.encode` for ``truncation`` and ``truncate_from``)."""
        pieces = self.pieces(first), None if second is None else self.pieces(second)
        return self._assemble(*pieces, maxlen, truncation, truncate_from)

    def encode_batch(self, firsts: Sequence[str], seconds: Optional[Sequence[str]] = None,
                     maxlen: Optional[int] = None, truncation: str = "longest_first",
                     truncate_from: str = "right"):
        """``encode`` for many texts; returns the lists of token ids and of segment ids."""
        firsts = _as_text_list(firsts, "firsts")
        seconds = [None] * len(firsts) if seconds is None else _as_text_list(seconds, "seconds")
        if len(seconds) != len(firsts):
            raise ValueError(f"{len(firsts)} first texts but {len(seconds)} second texts")
        encoded = [self.encode(a, b, maxlen, truncation, truncate_from)
                   for a, b in zip(firsts, seconds)]
        return [ids for ids, _ in encoded], [segments for _, segments in encoded]

    def _assemble(self, first: Pieces, second: Optional[Pieces], maxlen, truncation,
                  truncate_from):
        start = [] if self.start_id is None else [self.start_id]
        end = [] if self.end_id is None else [self.end_id]
        if maxlen is not None:
            specials = (len(start) + len(end), len(start) + 2 * len(end))
            first, second = _truncate(first, second, maxlen, truncation, truncate_from,
                                      specials)
        token_ids = [*start, *first.ids, *end]
        segment_ids = [0] * len(token_ids)
        if second is not None:
            token_ids += [*second.ids, *end]
            segment_ids += [1] * (len(second) + len(end))
        return token_ids, segment_ids

    def tokenize(self, text: str, maxlen: Optional[int] = None) -> List[str]:
        """The pieces of ``text`` with its markers, as strings."""
        return [self.id_to_token(i) for i in self.encode(text, maxlen=maxlen)[0]]

    def decode(self, token_ids: Iterable[int]) -> str:
        """The text of ``token_ids``, markers, padding and control pieces left out."""
        ids = [int(i) for i in token_ids]
        return self.processor.decode([i for i in ids if 0 <= i < self.vocab_size
                                      and not self.processor.is_control(i)
                                      and not self.processor.is_unused(i)])
