"""Autoregressive generation: greedy / beam / sampling with a key/value cache, and the compact
token-id prefix tree used to constrain it, and the entropy normalisation sampling can use."""

from bert4x.generation.decoding import AutoRegressiveDecoder, Hypothesis
from bert4x.generation.entropy import entropy_power, normalize_entropy
from bert4x.generation.trie import Trie

__all__ = ["AutoRegressiveDecoder", "Hypothesis", "Trie", "entropy_power", "normalize_entropy"]
