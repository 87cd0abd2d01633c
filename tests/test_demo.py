"""``bert4x demo``: every task runs for both initialisations and lands in one table and plot."""

import json
import math

import pytest

from tasks.demo import (INITIALISATIONS, TASKS, TRIPLES_HELD_OUT, Budget, run_demo,
                        triples_data, triples_split)

TINY = Budget(cosent_train=64, cosent_test=64, kgclue_train=64, kgclue_test=8, triples_epochs=1)


def test_tiny_demo_writes_a_row_per_task_with_both_initialisations(tmp_path):
    messages = []
    results = run_demo(str(tmp_path), budget=TINY, log=messages.append)
    assert [r.task for r in results] == [t.name for t in TASKS]
    for result in results:
        assert set(result.scores) == set(INITIALISATIONS) == set(result.seconds)
        assert all(math.isfinite(value) for value in result.scores.values())
        assert all(seconds > 0 for seconds in result.seconds.values())
    assert -100 <= results[0].scores["pretrained"] <= 100  # a Spearman correlation ×100
    assert all(0 <= r.scores[i] <= 100 for r in results[1:] for i in INITIALISATIONS)

    table = (tmp_path / "results.md").read_text(encoding="utf-8").splitlines()
    assert len(table) == 2 + len(TASKS) and table[0].startswith("| task | metric | pretrained")
    assert table[2].startswith(f"| cosent | test Spearman ×100 | "
                               f"{results[0].scores['pretrained']:.2f} |")
    assert messages[-1].strip() == "\n".join(table)
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [row["scores"] for row in saved] == [r.scores for r in results]
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for task in TASKS:  # each run kept its own directory (settings, metrics, weights)
        assert (tmp_path / task.name / "pretrained" / "metrics.jsonl").exists()
        assert (tmp_path / task.name / "random_init" / "metrics.jsonl").exists()
    assert_the_demo_runs_can_be_served(tmp_path)


def assert_the_demo_runs_can_be_served(demo_dir):
    """What the README promises: ``bert4x serve`` on the demo's fine-tuned runs."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tasks.serving import build_app

    app = build_app([demo_dir / task.name / "pretrained" for task in TASKS])
    with TestClient(app) as client:
        for path, body in (("/encode", {"texts": ["今天天气很好"]}),
                           ("/extract", {"text": "《红楼梦》的作者是曹雪芹。"}),
                           ("/answer", {"question": "红楼梦的作者是谁？"})):
            response = client.post(path, json=body)
            assert response.status_code == 200, (path, response.text)
        assert client.post("/answer", json={"question": "红楼梦的作者是谁？"}).json()["in_kb"]


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
