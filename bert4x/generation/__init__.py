"""Autoregressive generation: greedy / beam / sampling with a key/value cache, and the compact
token-id prefix tree used to constrain it."""

from bert4x.generation.decoding import AutoRegressiveDecoder, Hypothesis
from bert4x.generation.trie import Trie

__all__ = ["AutoRegressiveDecoder", "Hypothesis", "Trie"]
