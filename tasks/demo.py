"""``bert4x demo``: each task doing its job on real data, against a baseline that means
something for that task, in minutes and with no network.

* CoSENT: test Spearman of CoSENT, of the Sentence-BERT objective trained the same way, and of
  the encoder with no fine-tuning; then a semantic search over the test sentences.
* KgCLUE: the score of beam search under the knowledge base's prefix tree and of the same model
  decoding freely; then a few test questions with the answer, its KB path and whether it is
  right.
* Triples: GPLinker's F1 on held-out texts, against copying the training set's triples (what
  a model that memorised its training data would find); then two held-out texts with the
  triples extracted, each marked right or wrong.

Every task fine-tunes the shipped ``roformer_zh_tiny``, or the model directory given (one that
``pretrain --export`` or ``bert4x enlarge`` wrote: the same recipes then compare models).
Results go to one table (printed, and written as ``results.md`` / ``results.json`` with the
examples) and a bar chart (``results.png``). The budgets keep the demo within minutes on 2 CPU cores; the task READMEs
report full-budget numbers, and the model card compares the embedded model with random weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from bert4x.files import atomic_path

TRIPLES_HELD_OUT = 30  # texts of the second DuIE-format sample that no demo run trains on
#: Queries for the semantic search: paraphrases in the style of the STS-B sentences, none of
#: them in the corpus searched (the test split's sentences).
SEARCH_QUERIES = ("一名男子正在弹奏吉他。", "一个女人正在切番茄。", "一只小狗在草坪上奔跑。")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much data and training each task gets, and how many examples it shows (tests
    shrink it)."""

    cosent_train: int = 512
    cosent_test: int = 1361
    kgclue_train: int = 3072
    kgclue_epochs: int = 1
    kgclue_batch: int = 8
    kgclue_learning_rate: float = 1e-3
    kgclue_test: int = 100
    triples_epochs: int = 15
    shown: int = 3


@dataclasses.dataclass
class Result:
    """One task's row: its method's score, its baselines' scores (``scores``, method first),
    the time it took, its data and budget, and what it produced (``examples``, printable
    lines)."""

    task: str
    metric: str
    scores: Dict[str, float]
    seconds: float
    data: str
    examples: List[str]

    @property
    def method(self) -> str:
        return next(iter(self.scores))


def _subset(items: Sequence, count: int, seed: int = 0) -> list:
    """A fixed random sample (the shipped files are sorted by source, not shuffled)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:count]


def _mark(right: bool) -> str:
    return "right" if right else "wrong"


# CoSENT ----------------------------------------------------------------------------------------

def cosent_demo(options: dict, work_dir: str, budget: Budget) -> Tuple[dict, List[str]]:
    """Test Spearman ×100 of CoSENT, Sentence-BERT (one epoch each on the same sample of the
    train split) and no fine-tuning; then the nearest test sentences to a few queries."""
    from pretrained import STSB_ZH_DIR
    from tasks.cosent.data import read_pairs
    from tasks.cosent.task import Settings, build_sentence_encoder, spearman, train_encoder
    from tasks.cosent.vectors import VectorIndex

    train = _subset(read_pairs(STSB_ZH_DIR / "train.data").examples, budget.cosent_train)
    dev = _subset(read_pairs(STSB_ZH_DIR / "valid.data").examples, 200)
    test = read_pairs(STSB_ZH_DIR / "test.data").examples[:budget.cosent_test]
    settings = Settings(**options, pooling="mean", maxlen=64)
    scores, encoders = {}, {}
    for name, objective in (("CoSENT", "cosent"), ("Sentence-BERT", "sbert")):
        encoders[name] = train_encoder(dataclasses.replace(settings, objective=objective),
                                       train, dev, os.path.join(work_dir, objective), epochs=1,
                                       batch_size=32, learning_rate=1e-4, verbose=0)
        scores[name] = spearman(encoders[name], test)
    scores["no fine-tuning"] = spearman(build_sentence_encoder(settings), test)

    corpus = sorted({text for pair in test for text in (pair.first, pair.second)})
    encoder = encoders["CoSENT"]
    index = VectorIndex(encoder.encode(corpus, progress=False), corpus)
    hits = index.search(encoder.encode(list(SEARCH_QUERIES), progress=False), k=3)
    examples = [f"semantic search over the {len(corpus)} test sentences (CoSENT encoder):"]
    for query, found in zip(SEARCH_QUERIES, hits):
        examples.append(f"  query: {query}")
        examples += [f"    {cosine:.3f}  {text}" for _, cosine, text in found]
    return scores, examples


# KgCLUE ----------------------------------------------------------------------------------------

def kgclue_demo(options: dict, work_dir: str, budget: Budget) -> Tuple[dict, List[str]]:
    """KgCLUE score ×100 ((EM + F1) / 2) on test_public questions with and without the prefix
    tree of the sub-KB of every answer triple in train + dev + test_public; then a few of those
    questions answered with their KB path. Batches of 8 at a peak rate of 1e-3 learned the most
    in this budget (docs/experiments.md has the settings tried)."""
    from pretrained import KGCLUE_DIR
    from bert4x.tokenizers import Tokenizer
    from tasks.kgclue.data import answer_triples, read_questions
    from tasks.kgclue.kb import KnowledgeBase
    from tasks.kgclue.task import Answerer, Settings, evaluate, train_seq2seq

    splits = {name: read_questions(KGCLUE_DIR / f"{name}.json").examples
              for name in ("train", "dev", "test_public")}
    tokenizer = Tokenizer(options["vocab"])
    kb_dir = os.path.join(work_dir, "kb")
    kb = KnowledgeBase.build(answer_triples(q for qs in splits.values() for q in qs), tokenizer)
    kb.save(kb_dir)
    settings = Settings(**options, kb=kb_dir)
    model = train_seq2seq(settings, _subset(splits["train"], budget.kgclue_train),
                          splits["dev"], work_dir, epochs=budget.kgclue_epochs,
                          batch_size=budget.kgclue_batch,
                          learning_rate=budget.kgclue_learning_rate, dev_limit=20, verbose=0)
    test = splits["test_public"][:budget.kgclue_test]
    answerers = {"prefix tree": Answerer(model, tokenizer, kb, settings, beam_size=3),
                 "free decoding": Answerer(model, tokenizer, kb, settings, beam_size=3,
                                           constrained=False)}
    scores = {name: 100 * evaluate(answerer, test, progress=False)["score"]
              for name, answerer in answerers.items()}
    examples = [f"the first {budget.shown} test questions, answered under the prefix tree:"]
    for question in test[:budget.shown]:
        triple, _ = answerers["prefix tree"].generate(question.question)
        examples.append(f"  Q: {question.question}")
        if triple is None:
            examples.append("    no KB key generated: wrong")
            continue
        right = triple.object == question.answer.object
        examples.append(f"    A: {triple.object}   KB path: {triple.full_subject} → "
                        f"{triple.predicate} → {triple.object}   {_mark(right)}")
        if not right:
            examples.append(f"    gold: {question.answer.answer()}")
    return scores, examples


# Triples ---------------------------------------------------------------------------------------

def triples_split():
    """``(train, held_out)`` DuIE-format examples: the last ``TRIPLES_HELD_OUT`` texts of the
    second shipped sample are held out, every other shipped text trains."""
    from tasks.triple_extraction import MORE_SAMPLE, SAMPLE, SAMPLE_SCHEMA
    from tasks.triple_extraction.data import read_duie, read_schema

    schema = read_schema(SAMPLE_SCHEMA)
    more = read_duie(MORE_SAMPLE, schema).examples
    return read_duie(SAMPLE, schema).examples + more[:-TRIPLES_HELD_OUT], more[-TRIPLES_HELD_OUT:]


def memorised_triples(train, texts: Sequence[str]) -> List[list]:
    """The baseline: every training triple whose subject and object both occur in the text."""
    known = {triple for example in train for triple in example.triples}
    return [[t for t in sorted(known, key=str) if t.subject in text and t.object in text]
            for text in texts]


def triples_demo(options: dict, work_dir: str, budget: Budget) -> Tuple[dict, List[str]]:
    """Micro F1 ×100 on the held-out texts of ``triples_split``: GPLinker (best epoch chosen
    by training-set F1) and the memorised-triples baseline; then two held-out texts."""
    from tasks.triple_extraction import SAMPLE_SCHEMA
    from tasks.triple_extraction.metrics import triple_scores
    from tasks.triple_extraction.task import Settings, train_extractor

    train, held_out = triples_split()
    settings = Settings(**options, schema=str(SAMPLE_SCHEMA), kind="gplinker")
    extractor = train_extractor(settings, train, train, work_dir, epochs=budget.triples_epochs,
                                batch_size=4, learning_rate=1e-3, verbose=0)
    texts, gold = [e.text for e in held_out], [e.triples for e in held_out]
    found = extractor.extract(texts)
    scores = {"GPLinker": 100 * triple_scores(found, gold)["all"]["f1"],
              "memorised triples": 100 * triple_scores(memorised_triples(train, texts),
                                                       gold)["all"]["f1"]}
    examples = ["two held-out texts, with the triples GPLinker extracted:"]
    for text, predicted, expected in list(zip(texts, found, gold))[:2]:
        examples.append(f"  {text}")
        examples += [f"    ({t.subject}, {t.predicate}, {t.object})   {_mark(t in expected)}"
                     for t in predicted] or ["    (no triple found)"]
        examples += [f"    missed: ({t.subject}, {t.predicate}, {t.object})"
                     for t in expected if t not in predicted]
    return scores, examples


def triples_data(budget: Budget) -> str:
    train, held_out = triples_split()
    return (f"DuIE-format samples: {len(train)} train texts, {budget.triples_epochs} epochs; "
            f"{len(held_out)} held-out texts")


# The demo --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    metric: str
    data: Callable[[Budget], str]
    run: Callable[[dict, str, Budget], Tuple[dict, List[str]]]


TASKS = (
    Task("cosent", "test Spearman ×100",
         lambda b: f"STS-B-zh: {b.cosent_train} train pairs, 1 epoch; {b.cosent_test} test pairs",
         cosent_demo),
    Task("kgclue", "test score ×100",
         lambda b: f"KgCLUE: {b.kgclue_train} train questions, {b.kgclue_epochs} epoch, batch "
                   f"{b.kgclue_batch}; first {b.kgclue_test} test_public questions, beam 3",
         kgclue_demo),
    Task("triples", "held-out F1 ×100", triples_data, triples_demo),
)


def run_demo(work_dir: str, tasks: Sequence[str] = tuple(t.name for t in TASKS),
             budget: Budget = Budget(), log=print, model: Optional[dict] = None) -> List[Result]:
    """Run each task on ``model`` (task options as :func:`pretrained.registry.model_directory`
    gives them; default the embedded model); write and return the table."""
    from pretrained.registry import default_model

    model = model or default_model()
    unknown = set(tasks) - {t.name for t in TASKS}
    if unknown:
        raise ValueError(f"unknown demo task(s) {sorted(unknown)}; choose from "
                         f"{[t.name for t in TASKS]}")
    results = []
    for task in (t for t in TASKS if t.name in tasks):
        run_dir = os.path.join(work_dir, task.name)
        shutil.rmtree(run_dir, ignore_errors=True)  # each demo run starts fresh
        log(f"[{task.name}] fine-tuning {model['checkpoint']} ...")
        started = time.perf_counter()
        scores, examples = task.run(model, run_dir, budget)
        result = Result(task.name, task.metric, scores, time.perf_counter() - started,
                        task.data(budget), examples)
        log(f"[{task.name}] {task.metric}: " + ", ".join(
            f"{name} {score:.2f}" for name, score in scores.items()) +
            f" ({result.seconds:.0f} s)")
        log("\n".join(examples) + "\n")
        results.append(result)
    write_results(work_dir, results)
    log(results_table(results))
    return results


def results_table(results: Sequence[Result]) -> str:
    lines = ["| task | metric | method | baselines | time (s) | data and budget |",
             "|---|---|---|---|---|---|"]
    for r in results:
        baselines = "; ".join(f"{name} {score:.2f}" for name, score in r.scores.items()
                              if name != r.method)
        lines.append(f"| {r.task} | {r.metric} | {r.method} {r.scores[r.method]:.2f} | "
                     f"{baselines} | {r.seconds:.0f} | {r.data} |")
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
            for r in results:
                handle.write(f"\n## {r.task}\n\n```\n" + "\n".join(r.examples) + "\n```\n")
    plot_results(results, os.path.join(work_dir, "results.png"))


def plot_results(results: Sequence[Result], path: str) -> None:
    """One panel per task: its method's bar beside its baselines'."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(results), figsize=(3.6 * len(results), 3.4),
                                   squeeze=False)
    for axis, result in zip(axes[0], results):
        names, values = list(result.scores), list(result.scores.values())
        colours = ["tab:blue"] + ["tab:gray"] * (len(names) - 1)
        bars = axis.bar(range(len(names)), values, color=colours)
        axis.set_xticks(range(len(names)), [name.replace(" ", "\n") for name in names])
        axis.bar_label(bars, fmt="%.1f")
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_title(result.task)
        axis.set_ylabel(result.metric)
        top = max(max(values) * 1.2, 1)
        axis.set_ylim(min(min(values) * 1.2, 0), top)
    figure.suptitle("bert4x demo: each task's method (blue) against its baselines")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
