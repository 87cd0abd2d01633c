"""The unit both tokenizer paths produce: token ids and their spans in the original text."""

from typing import List, NamedTuple, Tuple


class Pieces(NamedTuple):
    """Word pieces of one text, without special tokens; ``offsets[i]`` is ``(start, end)``."""

    ids: List[int]
    offsets: List[Tuple[int, int]]

    def __len__(self):
        return len(self.ids)

    def head(self, count: int) -> "Pieces":
        return Pieces(self.ids[:count], self.offsets[:count])

    def tail(self, count: int) -> "Pieces":
        start = max(len(self.ids) - count, 0)
        return Pieces(self.ids[start:], self.offsets[start:])
