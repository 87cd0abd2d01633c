"""``bert4x demo``: what the embedded model buys on each task, in minutes and with no network.

For every task the demo fine-tunes the shipped ``roformer_zh_tiny`` and, as the baseline to
beat, the same architecture from random weights: same data, steps, learning rate and seed. Both
are scored on data neither saw in training, and the results go to one table (printed, and
written as ``results.md`` / ``results.json``) and a bar chart (``results.png``). The budgets
keep the six runs within ten minutes on 2 CPU cores; the task READMEs report the
full-budget numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from typing import Callable, Dict, List, Sequence

from bert4x.files import atomic_path

INITIALISATIONS = ("pretrained", "random init")
TRIPLES_HELD_OUT = 30  # texts of the second DuIE-format sample that no demo run trains on


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much data and training each task gets (tests shrink it)."""

    cosent_train: int = 512
    cosent_test: int = 1361
    kgclue_train: int = 2048
    kgclue_test: int = 100
    triples_epochs: int = 15


@dataclasses.dataclass
class Result:
    """One task's row: the headline metric for both initialisations, plus context."""

    task: str
    metric: str
    scores: Dict[str, float]
    seconds: Dict[str, float]
    data: str


def _subset(items: Sequence, count: int, seed: int = 0) -> list:
    """A fixed random sample (the shipped files are sorted by source, not shuffled)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:count]


def cosent_score(options: dict, work_dir: str, budget: Budget) -> float:
    """Test Spearman ×100 on STS-B-zh after one CoSENT epoch on a sample of its train split."""
    from pretrained import STSB_ZH_DIR
    from tasks.cosent.data import read_pairs
    from tasks.cosent.task import Settings, spearman, train_encoder

    train = _subset(read_pairs(STSB_ZH_DIR / "train.data").examples, budget.cosent_train)
    dev = _subset(read_pairs(STSB_ZH_DIR / "valid.data").examples, 200)
    test = read_pairs(STSB_ZH_DIR / "test.data").examples[:budget.cosent_test]
    settings = Settings(**options, pooling="mean", maxlen=64, objective="cosent")
    encoder = train_encoder(settings, train, dev, work_dir, epochs=1, batch_size=32,
                            learning_rate=1e-4, verbose=0)
    return spearman(encoder, test)


def kgclue_score(options: dict, work_dir: str, budget: Budget) -> float:
    """KgCLUE score ×100 ((EM + F1) / 2) on test_public questions, constrained by the sub-KB of
    every answer triple in train + dev + test_public, after one epoch on a train sample."""
    from pretrained import KGCLUE_DIR
    from bert4x.tokenizers import Tokenizer
    from tasks.kgclue.data import answer_triples, read_questions
    from tasks.kgclue.kb import KnowledgeBase
    from tasks.kgclue.task import Answerer, Settings, evaluate, train_seq2seq

    splits = {name: read_questions(KGCLUE_DIR / f"{name}.json").examples
              for name in ("train", "dev", "test_public")}
    kb_dir = os.path.join(work_dir, "kb")
    kb = KnowledgeBase.build(answer_triples(q for qs in splits.values() for q in qs),
                             Tokenizer(options["vocab"]))
    kb.save(kb_dir)
    settings = Settings(**options, kb=kb_dir)
    model = train_seq2seq(settings, _subset(splits["train"], budget.kgclue_train),
                          splits["dev"], work_dir, epochs=1, batch_size=32,
                          learning_rate=5e-4, dev_limit=20, verbose=0)
    answerer = Answerer(model, Tokenizer(settings.vocab), kb, settings, beam_size=3)
    return 100 * evaluate(answerer, splits["test_public"][:budget.kgclue_test],
                          progress=False)["score"]


def triples_split():
    """``(train, held_out)`` DuIE-format examples: the last ``TRIPLES_HELD_OUT`` texts of the
    second shipped sample are held out, every other shipped text trains."""
    from tasks.triple_extraction import MORE_SAMPLE, SAMPLE, SAMPLE_SCHEMA
    from tasks.triple_extraction.data import read_duie, read_schema

    schema = read_schema(SAMPLE_SCHEMA)
    more = read_duie(MORE_SAMPLE, schema).examples
    return read_duie(SAMPLE, schema).examples + more[:-TRIPLES_HELD_OUT], more[-TRIPLES_HELD_OUT:]


def triples_score(options: dict, work_dir: str, budget: Budget) -> float:
    """Micro F1 ×100 of GPLinker on the held-out texts of ``triples_split`` (best epoch chosen
    by training-set F1)."""
    from tasks.triple_extraction import SAMPLE_SCHEMA
    from tasks.triple_extraction.task import Settings, train_extractor

    train, held_out = triples_split()
    settings = Settings(**options, schema=str(SAMPLE_SCHEMA), kind="gplinker")
    extractor = train_extractor(settings, train, train, work_dir, epochs=budget.triples_epochs,
                                batch_size=4, learning_rate=1e-3, verbose=0)
    return 100 * extractor.evaluate(held_out)["all"]["f1"]


def triples_data(budget: Budget) -> str:
    train, held_out = triples_split()
    return (f"DuIE-format samples: {len(train)} train texts, {budget.triples_epochs} epochs; "
            f"{len(held_out)} held-out texts")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    metric: str
    data: Callable[[Budget], str]
    score: Callable[[dict, str, Budget], float]


TASKS = (
    Task("cosent", "test Spearman ×100",
         lambda b: f"STS-B-zh: {b.cosent_train} train pairs, 1 epoch; {b.cosent_test} test pairs",
         cosent_score),
    Task("kgclue", "test score ×100",
         lambda b: f"KgCLUE: {b.kgclue_train} train questions, 1 epoch; first "
                   f"{b.kgclue_test} test_public questions, constrained beam 3",
         kgclue_score),
    Task("triples", "held-out F1 ×100", triples_data, triples_score),
)


def run_demo(work_dir: str, tasks: Sequence[str] = tuple(t.name for t in TASKS),
             budget: Budget = Budget(), log=print) -> List[Result]:
    """Run each task for both initialisations; write and return the table."""
    from pretrained.registry import default_model

    unknown = set(tasks) - {t.name for t in TASKS}
    if unknown:
        raise ValueError(f"unknown demo task(s) {sorted(unknown)}; choose from "
                         f"{[t.name for t in TASKS]}")
    results = []
    for task in (t for t in TASKS if t.name in tasks):
        result = Result(task.name, task.metric, {}, {}, task.data(budget))
        for initialisation in INITIALISATIONS:
            options = default_model()
            if initialisation == "random init":
                options["checkpoint"] = None
            run_dir = os.path.join(work_dir, task.name, initialisation.replace(" ", "_"))
            shutil.rmtree(run_dir, ignore_errors=True)  # each demo run starts fresh
            log(f"[{task.name}] fine-tuning from {initialisation} ...")
            started = time.perf_counter()
            result.scores[initialisation] = task.score(options, run_dir, budget)
            result.seconds[initialisation] = time.perf_counter() - started
            log(f"[{task.name}] {initialisation}: {task.metric} "
                f"{result.scores[initialisation]:.2f} ({result.seconds[initialisation]:.0f} s)")
        results.append(result)
    write_results(work_dir, results)
    log("\n" + results_table(results))
    return results


def results_table(results: Sequence[Result]) -> str:
    lines = ["| task | metric | pretrained | random init | time (s) | data and budget |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.task} | {r.metric} | {r.scores['pretrained']:.2f} | "
                     f"{r.scores['random init']:.2f} | {sum(r.seconds.values()):.0f} | {r.data} |")
    return "\n".join(lines)


def write_results(work_dir: str, results: Sequence[Result]) -> None:
    os.makedirs(work_dir, exist_ok=True)
    with atomic_path(os.path.join(work_dir, "results.json")) as path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump([dataclasses.asdict(r) for r in results], handle, indent=1,
                      ensure_ascii=False)
    with atomic_path(os.path.join(work_dir, "results.md")) as path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(results_table(results) + "\n")
    plot_results(results, os.path.join(work_dir, "results.png"))


def plot_results(results: Sequence[Result], path: str) -> None:
    """One pair of bars per task: pretrained vs random initialisation."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(results), figsize=(3.2 * len(results), 3.2),
                                   squeeze=False)
    for axis, result in zip(axes[0], results):
        values = [result.scores[i] for i in INITIALISATIONS]
        bars = axis.bar(INITIALISATIONS, values, color=["tab:blue", "tab:gray"])
        axis.bar_label(bars, fmt="%.1f")
        axis.set_title(result.task)
        axis.set_ylabel(result.metric)
        axis.set_ylim(0, max(max(values) * 1.2, 1))
    figure.suptitle("bert4x demo: embedded roformer_zh_tiny vs random init, same budget")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
