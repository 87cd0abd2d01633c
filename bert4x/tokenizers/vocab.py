"""Reading, simplifying and writing WordPiece vocabularies.

A vocabulary file holds one token per line; the line number is the token id.  Lines are split on
``\\n`` only: the Chinese BERT vocabulary contains U+2028 (LINE SEPARATOR) as a token, which
``str.splitlines`` would wrongly treat as a line break.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from bert4x.files import not_utf8
from bert4x.tokenizers.characters import is_cjk_character, is_punctuation

VocabSource = Union[str, os.PathLike, Mapping[str, int]]

#: Tokens a simplified vocabulary starts with when the caller names none.
DEFAULT_STARTSWITH = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab_file(path: Union[str, os.PathLike]) -> Dict[str, int]:
    """Token -> id from a vocabulary file; duplicate or empty entries are errors naming the line."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    token_dict: Dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        token = line[:-1] if line.endswith("\r") else line
        where = not_utf8(token)
        if where:
            raise ValueError(f"{path}:{number}: not UTF-8 text ({where})")
        if token == "":
            raise ValueError(f"{path}:{number}: empty vocabulary entry")
        if token in token_dict:
            raise ValueError(f"{path}:{number}: token {token!r} already on line "
                             f"{token_dict[token] + 1}")
        token_dict[token] = len(token_dict)
    if not token_dict:
        raise ValueError(f"{path}: the vocabulary file is empty")
    return token_dict


def as_token_dict(vocab: VocabSource) -> Dict[str, int]:
    """Accept a path or a token -> id mapping; ids must be exactly 0..n-1."""
    if isinstance(vocab, Mapping):
        token_dict = dict(vocab)
        if sorted(token_dict.values()) != list(range(len(token_dict))):
            raise ValueError("vocabulary ids must be exactly 0..n-1, each used once")
        return token_dict
    return read_vocab_file(vocab)


def can_be_produced(token: str) -> bool:
    """Whether basic tokenisation + WordPiece can ever output ``token``.

    CJK ideographs and punctuation always stand alone as words, so a multi-character entry that
    contains one (``##的``, ``[unused1]``, ``<S>``) can never come out of the tokenizer.
    """
    if len(token) == 1:
        return True
    stem = token[2:] if token.startswith("##") else token
    return not any(is_cjk_character(c) or is_punctuation(c) for c in stem)


def load_vocab(dict_path: VocabSource, simplified: bool = False,
               startswith: Optional[Sequence[str]] = None
               ) -> Union[Dict[str, int], Tuple[Dict[str, int], List[int]]]:
    """Read a vocabulary; with ``simplified=True`` also drop entries no text can produce.

    Returns ``token_dict``, or with ``simplified=True`` ``(token_dict, keep_tokens)``: the new
    vocabulary (``startswith`` tokens first, then the kept entries in their original order) and,
    for each new id, the original id, which is what ``build_transformer_model(keep_tokens=...)``
    uses to slice the embedding matrix. ``dict_path`` (bert4keras' name) is a vocabulary file
    or a token -> id mapping.
    """
    token_dict = as_token_dict(dict_path)
    if not simplified:
        return token_dict
    startswith = DEFAULT_STARTSWITH if startswith is None else tuple(startswith)
    absent = [token for token in startswith if token not in token_dict]
    if absent:
        raise ValueError(f"startswith tokens missing from the vocabulary: {absent}")
    kept: Dict[str, int] = {}
    keep_tokens: List[int] = []
    ordered = list(startswith) + sorted(token_dict, key=token_dict.__getitem__)
    for token in ordered:
        if token in kept or (token not in startswith and not can_be_produced(token)):
            continue
        kept[token] = len(kept)
        keep_tokens.append(token_dict[token])
    return kept, keep_tokens


def save_vocab(token_dict: Mapping[str, int], path: Union[str, os.PathLike]) -> None:
    """Write a vocabulary file whose line numbers are the ids."""
    tokens: Iterable[str] = sorted(token_dict, key=token_dict.__getitem__)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("".join(token + "\n" for token in tokens))
