"""BERT's WordPiece tokenizer with exact character offsets.

Two paths give identical ids and offsets: a pure-Python one (the readable reference, and the
base the jieba word-level tokenizer extends) and HF ``tokenizers`` for batches.  Either way the
text is first split into *pieces* (token id + span in the original text); special tokens,
truncation and segment ids are then added here, once, for both.
"""

from __future__ import annotations

import functools
from typing import Iterable, List, Optional, Sequence, Tuple

from bert4x.tokenizers.characters import (
    is_cjk_character, normalize_character, normalize_with_origins, split_words,
)
from bert4x.tokenizers.pieces import Pieces
from bert4x.tokenizers.vocab import VocabSource, as_token_dict

TRUNCATIONS = ("longest_first", "only_first", "only_second")
Span = Tuple[int, int]


class Tokenizer:
    """WordPiece tokenizer for BERT-family vocabularies.

    ``encode(first, second=None, maxlen=None)`` returns ``(token_ids, segment_ids)`` as bert4keras
    does; ``return_offsets=True`` adds each token's ``(start, end)`` span in its own text
    (``(0, 0)`` for special tokens), which is what span-extraction tasks need.
    """

    def __init__(self, vocab: VocabSource, do_lower_case: bool = True, unk_token: str = "[UNK]",
                 cls_token: str = "[CLS]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 mask_token: str = "[MASK]", max_input_chars_per_word: int = 100,
                 fast: bool = True):
        self.token_to_id = as_token_dict(vocab)
        self.id_to_token = {i: t for t, i in self.token_to_id.items()}
        absent = [t for t in (unk_token, cls_token, sep_token, pad_token)
                  if t not in self.token_to_id]
        if absent:
            raise ValueError(f"the vocabulary lacks the special tokens {absent}")
        self.do_lower_case = do_lower_case
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.max_input_chars_per_word = max_input_chars_per_word
        self.special_ids = {self.token_to_id[t] for t in (cls_token, sep_token, pad_token)}
        if mask_token in self.token_to_id:
            self.special_ids.add(self.token_to_id[mask_token])
        self._wordpiece = functools.lru_cache(maxsize=1 << 16)(self._split_word)
        self._backend = None
        if fast:
            from bert4x.tokenizers.fast import build_backend
            self._backend = build_backend(self.token_to_id, do_lower_case, unk_token,
                                          max_input_chars_per_word)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.token_to_id)

    def _id_of(self, token: str) -> int:
        return self.token_to_id[token]

    pad_id = property(lambda self: self._id_of(self.pad_token))
    unk_id = property(lambda self: self._id_of(self.unk_token))
    cls_id = property(lambda self: self._id_of(self.cls_token))
    sep_id = property(lambda self: self._id_of(self.sep_token))

    @property
    def mask_id(self) -> int:
        if self.mask_token not in self.token_to_id:
            raise ValueError(f"the vocabulary has no mask token {self.mask_token!r}")
        return self.token_to_id[self.mask_token]

    # bert4keras' names, which its scripts read directly.
    _token_start_id = property(lambda self: self.cls_id)
    _token_end_id = property(lambda self: self.sep_id)
    _token_pad_id = property(lambda self: self.pad_id)
    _token_unk_id = property(lambda self: self.unk_id)
    _token_mask_id = property(lambda self: self.mask_id)
    _vocab_size = property(lambda self: self.vocab_size)

    def tokens_to_ids(self, tokens: Iterable[str]) -> List[int]:
        unk = self.unk_id
        return [self.token_to_id.get(t, unk) for t in tokens]

    def ids_to_tokens(self, ids: Iterable[int]) -> List[str]:
        try:
            return [self.id_to_token[int(i)] for i in ids]
        except KeyError as error:
            raise ValueError(f"token id {error.args[0]} is outside the vocabulary "
                             f"[0, {self.vocab_size})") from None

    # ------------------------------------------------------------------ splitting
    def pieces(self, text: str) -> Pieces:
        """Word pieces of ``text`` (no special tokens), by the pure-Python path."""
        _check_text(text)
        normal, origins = normalize_with_origins(text, self.do_lower_case)
        ids, offsets = [], []
        for start, end in self._word_spans(normal):
            for token_id, a, b in self._wordpiece(normal[start:end]):
                ids.append(token_id)
                offsets.append((origins[start + a], origins[start + b - 1] + 1))
        return Pieces(ids, offsets)

    def batch_pieces(self, texts: Sequence[str]) -> List[Pieces]:
        """Word pieces of many texts: the Rust backend when there is one."""
        for text in texts:
            _check_text(text)
        if self._backend is None:
            return [self.pieces(text) for text in texts]
        from bert4x.tokenizers.fast import batch_pieces
        return batch_pieces(self._backend, texts)

    def _word_spans(self, normal: str) -> List[Span]:
        """Where the words of normalised text are; the word-level tokenizer overrides this."""
        return split_words(normal)

    def _split_word(self, word: str) -> Tuple[Tuple[int, int, int], ...]:
        """Greedy longest-match-first WordPiece; a word with any unmatched part is one [UNK]."""
        if len(word) > self.max_input_chars_per_word:
            return ((self.unk_id, 0, len(word)),)
        result, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                candidate = word[start:end] if start == 0 else "##" + word[start:end]
                if candidate in self.token_to_id:
                    result.append((self.token_to_id[candidate], start, end))
                    break
                end -= 1
            if end == start:
                return ((self.unk_id, 0, len(word)),)
            start = end
        return tuple(result)

    # ------------------------------------------------------------------ encoding
    def encode(self, first: str, second: Optional[str] = None, maxlen: Optional[int] = None,
               truncation: str = "longest_first", return_offsets: bool = False,
               truncate_from: str = "right", pattern: str = "S*E*E"):
        """``(token_ids, segment_ids)`` of ``[CLS] first [SEP] (second [SEP])``.

        ``maxlen`` counts the special tokens; longer inputs are truncated by ``truncation``:
        ``longest_first`` (one token at a time from the longer text), ``only_first`` or
        ``only_second``, from the end (``truncate_from="right"``) or the start (``"left"``).
        ``pattern`` is bert4keras' argument; only its default layout exists here.
        """
        if pattern != "S*E*E":
            raise ValueError(f"pattern={pattern!r} is not supported: bert4x encodes pairs as "
                             "[CLS] first [SEP] second [SEP] (bert4keras' default 'S*E*E')")
        pieces = self.pieces(first), None if second is None else self.pieces(second)
        return self._assemble(*pieces, maxlen, truncation, return_offsets, truncate_from)

    def encode_batch(self, firsts: Sequence[str], seconds: Optional[Sequence[str]] = None,
                     maxlen: Optional[int] = None, truncation: str = "longest_first",
                     return_offsets: bool = False, truncate_from: str = "right"):
        """``encode`` for many texts at once (fast path); returns lists of per-text results."""
        firsts = _as_text_list(firsts, "firsts")
        first_pieces = self.batch_pieces(firsts)
        if seconds is None:
            second_pieces = [None] * len(firsts)
        else:
            seconds = _as_text_list(seconds, "seconds")
            if len(seconds) != len(firsts):
                raise ValueError(f"{len(firsts)} first texts but {len(seconds)} second texts")
            second_pieces = self.batch_pieces(seconds)
        encoded = [self._assemble(a, b, maxlen, truncation, return_offsets, truncate_from)
                   for a, b in zip(first_pieces, second_pieces)]
        columns = 3 if return_offsets else 2
        return tuple([row[c] for row in encoded] for c in range(columns))

    def _assemble(self, first: Pieces, second: Optional[Pieces], maxlen: Optional[int],
                  truncation: str, return_offsets: bool, truncate_from: str = "right"):
        if maxlen is not None:
            first, second = _truncate(first, second, maxlen, truncation, truncate_from)
        cls_id, sep_id, none = self.cls_id, self.sep_id, (0, 0)
        token_ids = [cls_id, *first.ids, sep_id]
        segment_ids = [0] * len(token_ids)
        offsets = [none, *first.offsets, none] if return_offsets else None
        if second is not None:
            token_ids += [*second.ids, sep_id]
            segment_ids += [1] * (len(second) + 1)
            if return_offsets:
                offsets += [*second.offsets, none]
        return (token_ids, segment_ids, offsets) if return_offsets else (token_ids, segment_ids)

    def tokenize(self, text: str, maxlen: Optional[int] = None) -> List[str]:
        """Token strings of ``[CLS] text [SEP]``."""
        return self.ids_to_tokens(self.encode(text, maxlen=maxlen)[0])

    # ------------------------------------------------------------------ back to text
    def rematch(self, text: str, tokens: Sequence[str]) -> List[List[int]]:
        """For each token, the indices of the characters of ``text`` it came from.

        ``tokens`` must be this tokenizer's output for ``text`` (possibly truncated, with or
        without special tokens); special tokens map to ``[]``, ``[UNK]`` to its whole word.
        """
        pieces = self.pieces(text)
        mapping, position = [], 0
        for index, token in enumerate(tokens):
            if self.token_to_id.get(token) in self.special_ids:
                mapping.append([])
                continue
            if position >= len(pieces) or self.id_to_token[pieces.ids[position]] != token:
                raise ValueError(f"token {index} ({token!r}) is not what this tokenizer makes "
                                 f"of the text at that point")
            mapping.append(list(range(*pieces.offsets[position])))
            position += 1
        return mapping

    def decode(self, token_ids: Iterable[int]) -> str:
        """Readable text: CJK characters joined directly, ``##`` pieces glued, words spaced."""
        tokens = self.ids_to_tokens(i for i in token_ids if int(i) not in self.special_ids)
        text = ""
        for token in tokens:
            if token.startswith("##") and len(token) > 2:
                text += token[2:]
            elif text and _needs_space(text[-1], token[0]):
                text += " " + token
            else:
                text += token
        return text

    def normalize(self, text: str) -> str:
        """The text the tokenizer actually splits (cleaned, maybe lower-cased, accents stripped)."""
        return "".join(normalize_character(ch, self.do_lower_case) for ch in text)


def _needs_space(previous: str, following: str) -> bool:
    """A space goes between two word-like characters that are not CJK, and after , ; : ! ?"""
    def wordlike(ch):
        return ch.isalnum() and not is_cjk_character(ch) and ord(ch) < 0x3000
    return wordlike(following) and (wordlike(previous) or previous in ",;:!?.")


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")


def _as_text_list(texts, name: str) -> List[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of texts, not a single str; "
                        "use encode() for one text")
    return list(texts)


def _truncate(first: Pieces, second: Optional[Pieces], maxlen: int, truncation: str,
              truncate_from: str = "right", specials: Tuple[int, int] = (2, 3)
              ) -> Tuple[Pieces, Optional[Pieces]]:
    """Cut the texts so that they and their special tokens (``specials``: how many for one
    text and for a pair) fit ``maxlen``."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if truncate_from not in ("right", "left"):
        raise ValueError(f"truncate_from must be 'right' or 'left', got {truncate_from!r}")
    keep = Pieces.head if truncate_from == "right" else Pieces.tail
    specials, texts = (specials[0], 1) if second is None else (specials[1], 2)
    budget = maxlen - specials
    if budget < texts:
        # Fewer would silently encode a text as nothing at all ([CLS] [SEP]).
        raise ValueError(f"maxlen={maxlen} leaves no room for text: {specials} special tokens "
                         f"plus at least one token per text need maxlen >= {specials + texts}")
    if second is None:
        if truncation == "only_second":
            raise ValueError("truncation='only_second' needs a second text")
        return keep(first, budget), None
    excess = len(first) + len(second) - budget
    if excess <= 0:
        return first, second
    if truncation == "only_first":
        if excess > len(first):
            raise ValueError(f"maxlen={maxlen}: the second text alone is too long for "
                             "truncation='only_first'")
        return keep(first, len(first) - excess), second
    if truncation == "only_second":
        if excess > len(second):
            raise ValueError(f"maxlen={maxlen}: the first text alone is too long for "
                             "truncation='only_second'")
        return first, keep(second, len(second) - excess)
    keep_first, keep_second = len(first), len(second)
    for _ in range(excess):
        if keep_first >= keep_second:
            keep_first -= 1
        else:
            keep_second -= 1
    return keep(first, keep_first), keep(second, keep_second)

