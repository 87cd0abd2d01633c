"""Word-level tokenizer for word-based checkpoints (e.g. the word RoFormer): jieba first.

The normalised text is segmented by jieba; a word found in the vocabulary stays one token, any
other word goes through BERT's basic split and WordPiece, i.e. usually falls back to characters.
"""

from __future__ import annotations

import logging
from typing import List

import jieba

from bert4x.tokenizers.characters import split_words
from bert4x.tokenizers.vocab import VocabSource
from bert4x.tokenizers.wordpiece import Span, Tokenizer


class WordTokenizer(Tokenizer):
    """``Tokenizer`` with jieba pre-segmentation; always uses the Python path.

    ``hmm=False`` matches how word-level Chinese checkpoints were pre-trained (dictionary words
    only, no HMM-guessed new words); ``user_dict`` adds a jieba user dictionary file.
    """

    def __init__(self, vocab: VocabSource, do_lower_case: bool = True, hmm: bool = False,
                 user_dict: str = None, **kwargs):
        kwargs["fast"] = False
        super().__init__(vocab, do_lower_case=do_lower_case, **kwargs)
        self.hmm = hmm
        self._segmenter = jieba.Tokenizer()
        jieba.setLogLevel(logging.WARNING)
        if user_dict is not None:
            self._segmenter.load_userdict(user_dict)

    def _word_spans(self, normal: str) -> List[Span]:
        spans: List[Span] = []
        for word, start, end in self._segmenter.tokenize(normal, HMM=self.hmm):
            if word in self.token_to_id and not word.isspace():
                spans.append((start, end))
            else:
                spans.extend((start + a, start + b) for a, b in split_words(word))
        return spans
