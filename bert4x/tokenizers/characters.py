"""Character classes and text normalisation of BERT's basic tokenizer, with origins kept.

The rules follow the normaliser of HF ``tokenizers`` (``BertNormalizer`` + ``BertPreTokenizer``),
so that the pure-Python path and the fast path split text identically:

* characters of Unicode category ``C*`` (control, format, unassigned, private use) are removed,
  except tab, newline and carriage return, which count as whitespace;
* with lower-casing, accents are stripped (canonical decomposition, then combining marks dropped);
* CJK ideographs and punctuation always form words of their own.

Every normalised character remembers the index of the original character it came from, which is
what makes exact character offsets possible.
"""

from __future__ import annotations

import unicodedata
from typing import List, Tuple

#: CJK Unified Ideographs blocks that BERT splits into single characters.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def is_cjk_character(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """ASCII symbols count as punctuation too (``$``, ``+``, ``^``...), as in BERT."""
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_removed(ch: str) -> bool:
    """NUL, the replacement character and category C* characters other than tab/newline/CR,
    except unassigned ones (Cn): HF ``tokenizers`` keeps those as word characters, and a code
    point that Python's Unicode tables do not know yet may be a letter in newer ones."""
    if ch in "\t\n\r":
        return False
    category = unicodedata.category(ch)
    return ch == "\ufffd" or (category.startswith("C") and category != "Cn")


def is_whitespace(ch: str) -> bool:
    return ch in "\t\n\r" or ch.isspace()


def normalize_character(ch: str, lowercase: bool) -> str:
    """The normalised form of one character: possibly empty, possibly several characters."""
    if is_removed(ch):
        return ""
    if is_whitespace(ch):
        return " "
    if not lowercase:
        return ch
    decomposed = unicodedata.normalize("NFD", ch)
    return "".join(c.lower() for c in decomposed if unicodedata.category(c) != "Mn")


def normalize_with_origins(text: str, lowercase: bool) -> Tuple[str, List[int]]:
    """Normalised text plus, for each of its characters, the index of its original character."""
    pieces, origins = [], []
    for index, ch in enumerate(text):
        normal = normalize_character(ch, lowercase)
        pieces.append(normal)
        origins.extend([index] * len(normal))
    return "".join(pieces), origins


def split_words(text: str) -> List[Tuple[int, int]]:
    """Spans of the basic tokenizer's words in normalised ``text``.

    Whitespace separates words; each punctuation character and each CJK ideograph is a word.
    """
    spans, start = [], None
    for index, ch in enumerate(text):
        if ch == " ":
            if start is not None:
                spans.append((start, index))
                start = None
        elif is_punctuation(ch) or is_cjk_character(ch):
            if start is not None:
                spans.append((start, index))
                start = None
            spans.append((index, index + 1))
        elif start is None:
            start = index
    if start is not None:
        spans.append((start, len(text)))
    return spans
