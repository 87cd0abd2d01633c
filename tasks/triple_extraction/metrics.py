"""Exact-match triple precision / recall / F1 (micro), overall and per predicate."""

from __future__ import annotations

from collections import Counter
from typing import Dict, Sequence

from tasks.triple_extraction.data import Triple


def _prf(correct: int, predicted: int, gold: int) -> Dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "correct": correct, "predicted": predicted, "gold": gold}


def triple_scores(predicted: Sequence[Sequence[Triple]], gold: Sequence[Sequence[Triple]]):
    """``{"all": {...}, "per_predicate": {predicate: {...}}}``; each text's triples are sets."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold examples")
    counts = {"correct": Counter(), "predicted": Counter(), "gold": Counter()}
    for found, truth in zip(predicted, gold):
        found, truth = set(found), set(truth)
        for name, triples in (("correct", found & truth), ("predicted", found),
                              ("gold", truth)):
            counts[name].update(t.predicate for t in triples)
    predicates = sorted(set(counts["predicted"]) | set(counts["gold"]))
    total = {name: sum(counter.values()) for name, counter in counts.items()}
    return {"all": _prf(total["correct"], total["predicted"], total["gold"]),
            "per_predicate": {p: _prf(counts["correct"][p], counts["predicted"][p],
                                      counts["gold"][p]) for p in predicates}}


def format_scores(scores) -> str:
    """A table: overall first, then each predicate."""
    rows = [("ALL", scores["all"])] + list(scores["per_predicate"].items())
    lines = [f"{'predicate':<12} {'P':>6} {'R':>6} {'F1':>6} {'gold':>5}"]
    lines += [f"{name:<12} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} "
              f"{s['gold']:5d}" for name, s in rows]
    return "\n".join(lines)
