"""``bert4x demo``: every task runs on the embedded model, scores its method against its
baselines, shows what it produced, and lands in one table and plot."""

import json
import math
import re
import subprocess
import sys

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


def test_the_demo_fine_tunes_a_model_directory_given_to_it(tmp_path):
    """``bert4x demo --model-dir``: the same recipes on another model, e.g. one grown by
    ``bert4x enlarge``; its family comes from config.json."""
    from bert4x import build_transformer_model
    from pretrained.registry import DEFAULT_DIR, model_directory

    model_dir = tmp_path / "small"
    config = json.loads((DEFAULT_DIR / "config.json").read_text(encoding="utf-8"))
    config.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, embedding_size=32)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    build_transformer_model(config_file, model="roformer", with_mlm=True,
                            return_keras_model=False).export_huggingface(model_dir)
    (model_dir / "vocab.txt").write_bytes((DEFAULT_DIR / "vocab.txt").read_bytes())
    options = model_directory(model_dir)
    assert options == {"config": str(model_dir / "config.json"), "checkpoint": str(model_dir),
                       "vocab": str(model_dir / "vocab.txt"), "model": "roformer"}

    messages = []
    results = run_demo(str(tmp_path / "demo"), tasks=["cosent"], log=messages.append,
                       budget=Budget(cosent_train=32, cosent_test=32, shown=1), model=options)
    assert messages[0] == f"[cosent] fine-tuning {model_dir} ..."
    saved = json.loads((tmp_path / "demo/cosent/cosent/cosent.json").read_text())
    assert saved["config"] == options["config"] and saved["checkpoint"] == str(model_dir)
    assert all(math.isfinite(value) for value in results[0].scores.values())


def test_a_model_directory_that_is_not_one_is_named(tmp_path):
    from pretrained.registry import DEFAULT_DIR, default_model, model_directory

    assert model_directory(DEFAULT_DIR) == default_model()
    with pytest.raises(FileNotFoundError, match="is not a model directory: config.json, "
                                                "vocab.txt missing"):
        model_directory(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama', which is not a bert4x family"):
        model_directory(tmp_path)
    assert model_directory(tmp_path, "bert")["model"] == "bert"


@pytest.mark.parametrize("arguments, message", [
    (["--model", "bert"], "--model names the family of --model-dir's model"),
    (["--model-dir", "no/such/dir"], "no/such/dir is not a model directory"),
])
def test_demo_command_line_refuses_a_bad_model_choice_with_a_message(arguments, message):
    result = subprocess.run([sys.executable, "-m", "bert4x.cli", "demo", *arguments],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
