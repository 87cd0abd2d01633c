"""The HF ``tokenizers`` (Rust) backend: same splits and offsets as the Python path, much faster.

Only the word-piece stage runs in Rust; special tokens and truncation are added by
:class:`~bert4x.tokenizers.wordpiece.Tokenizer` itself, so both paths share that logic exactly.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, normalizers, pre_tokenizers

from bert4x.tokenizers.pieces import Pieces


def build_backend(token_dict: Dict[str, int], do_lower_case: bool, unk_token: str,
                  max_input_chars_per_word: int) -> RustTokenizer:
    backend = RustTokenizer(models.WordPiece(
        vocab=dict(token_dict), unk_token=unk_token,
        max_input_chars_per_word=max_input_chars_per_word))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return backend


def batch_pieces(backend: RustTokenizer, texts: Sequence[str]) -> List[Pieces]:
    encodings = backend.encode_batch(list(texts), add_special_tokens=False)
    return [Pieces(e.ids, e.offsets) for e in encodings]
