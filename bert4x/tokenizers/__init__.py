"""Tokenizers: BERT WordPiece with offsets (Python and Rust paths), jieba word level,
SentencePiece (T5, mT5, ALBERT), vocabularies."""

from bert4x.tokenizers.pieces import Pieces
from bert4x.tokenizers.sentence_piece import SpTokenizer
from bert4x.tokenizers.vocab import load_vocab, read_vocab_file, save_vocab
from bert4x.tokenizers.word import WordTokenizer
from bert4x.tokenizers.wordpiece import TRUNCATIONS, Tokenizer

__all__ = ["Pieces", "SpTokenizer", "TRUNCATIONS", "Tokenizer", "WordTokenizer", "load_vocab",
           "read_vocab_file", "save_vocab"]
