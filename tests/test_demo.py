"""``bert4x demo``: every task runs on the embedded model, scores its method against its
baselines, shows what it produced, and lands in one table and plot."""

import json
import math
import re

import pytest

from tasks.demo import (SEARCH_QUERIES, TASKS, TRIPLES_HELD_OUT, Budget, memorised_triples,
                        run_demo, triples_data, triples_split)

# GPLinker finds no triple at all before about its 13th epoch, and the demo must show some.
TINY = Budget(cosent_train=64, cosent_test=64, kgclue_train=64, kgclue_test=8, triples_epochs=15,
              shown=2)
BASELINES = {"cosent": ["CoSENT", "Sentence-BERT", "no fine-tuning"],
             "kgclue": ["prefix tree", "free decoding"],
             "triples": ["GPLinker", "memorised triples"]}


def test_tiny_demo_scores_each_method_against_its_baselines_and_shows_its_output(tmp_path):
    messages = []
    results = run_demo(str(tmp_path), budget=TINY, log=messages.append)
    assert [r.task for r in results] == [t.name for t in TASKS]
    for result in results:
        assert list(result.scores) == BASELINES[result.task]
        assert all(math.isfinite(value) for value in result.scores.values())
        assert result.seconds > 0
    cosent, kgclue, triples = results
    assert all(-100 <= value <= 100 for value in cosent.scores.values())  # Spearman ×100
    assert all(0 <= value <= 100 for r in (kgclue, triples) for value in r.scores.values())

    # What each task produced: a search result, a KgCLUE answer with its KB path, triples.
    cosent_lines = "\n".join(cosent.examples)
    for query in SEARCH_QUERIES:
        hits = cosent_lines.split(f"query: {query}\n", 1)[1].splitlines()[:3]
        assert all(re.fullmatch(r" {4}-?[01]\.\d{3}  \S.*", hit) for hit in hits), hits
    answers = [line for line in kgclue.examples if "KB path:" in line]
    assert len(answers) == TINY.shown
    assert all(re.search(r"A: (.+)   KB path: .+ → .+ → \1   (right|wrong)$", line)
               for line in answers), answers
    triple_lines = [line for line in triples.examples if line.startswith("    (")]
    assert triple_lines, triples.examples
    assert all(re.fullmatch(r" {4}\(.+, .+, .+\)   (right|wrong)", line)
               for line in triple_lines), triple_lines

    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    rows = table.splitlines()
    assert rows[0].startswith("| task | metric | method | baselines")
    assert rows[2].startswith(f"| cosent | test Spearman ×100 | CoSENT "
                              f"{cosent.scores['CoSENT']:.2f} | Sentence-BERT ")
    assert "semantic search" in table and "KB path:" in table
    assert messages[-1] == "\n".join(rows[:2 + len(TASKS)])
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [row["scores"] for row in saved] == [r.scores for r in results]
    assert [row["examples"] for row in saved] == [r.examples for r in results]
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("cosent/cosent", "cosent/sbert", "kgclue", "triples"):
        assert (tmp_path / run / "metrics.jsonl").exists()  # each run kept its directory
    assert_the_demo_runs_can_be_served(tmp_path)


def assert_the_demo_runs_can_be_served(demo_dir):
    """What the guide promises: ``bert4x serve`` on the demo's fine-tuned runs."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tasks.serving import build_app

    app = build_app([demo_dir / "cosent" / "cosent", demo_dir / "triples", demo_dir / "kgclue"])
    with TestClient(app) as client:
        for path, body in (("/encode", {"texts": ["今天天气很好"]}),
                           ("/extract", {"text": "《红楼梦》的作者是曹雪芹。"}),
                           ("/answer", {"question": "红楼梦的作者是谁？"})):
            response = client.post(path, json=body)
            assert response.status_code == 200, (path, response.text)
        assert client.post("/answer", json={"question": "红楼梦的作者是谁？"}).json()["in_kb"]


def test_the_search_queries_are_not_in_the_corpus_searched():
    from pretrained import STSB_ZH_DIR
    from tasks.cosent.data import read_pairs

    corpus = {text for pair in read_pairs(STSB_ZH_DIR / "test.data").examples
              for text in (pair.first, pair.second)}
    assert not set(SEARCH_QUERIES) & corpus


def test_the_memorised_triples_baseline_finds_known_triples_whose_entities_occur():
    train, _ = triples_split()
    known = train[0].triples[0]
    text = f"据说{known.subject}和{known.object}有关。"
    assert known in memorised_triples(train, [text])[0]
    assert memorised_triples(train, ["没有任何实体的句子。"]) == [[]]


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match=r"unknown demo task\(s\) \['ner'\]"):
        run_demo("unused", tasks=["cosent", "ner"])


def test_triples_row_describes_the_split_it_trains_and_scores_on():
    train, held_out = triples_split()
    assert len(held_out) == TRIPLES_HELD_OUT
    assert not {e.text for e in train} & {e.text for e in held_out}
    assert triples_data(Budget(triples_epochs=7)) == (
        f"DuIE-format samples: {len(train)} train texts, 7 epochs; "
        f"{TRIPLES_HELD_OUT} held-out texts")
