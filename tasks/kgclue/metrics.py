"""The official KgCLUE score: exact match and LCS-F1 on the object, and their mean."""

from __future__ import annotations

from typing import Sequence, Tuple


def lcs_length(first: Sequence, second: Sequence) -> int:
    """Length of the longest common subsequence (not necessarily contiguous)."""
    if len(first) < len(second):
        first, second = second, first
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for j, other in enumerate(second, start=1):
            current.append(previous[j - 1] + 1 if item == other
                           else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def f1_similarity(predicted: str, gold: str) -> float:
    """2·LCS / (len predicted + len gold); 0 when both are empty, as the official script."""
    if not predicted and not gold:
        return 0.0
    return 2.0 * lcs_length(predicted, gold) / (len(predicted) + len(gold))


def score(predicted: Sequence[str], gold: Sequence[str]) -> Tuple[float, float, float]:
    """(EM, F1, (EM + F1) / 2) averaged over the pairs, each in [0, 1]."""
    if len(predicted) != len(gold) or not gold:
        raise ValueError(f"need as many predictions as gold answers (> 0), got "
                         f"{len(predicted)} and {len(gold)}")
    exact = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
    f1 = sum(f1_similarity(p, g) for p, g in zip(predicted, gold)) / len(gold)
    return exact, f1, (exact + f1) / 2
