"""``--precision`` on the task commands and ``precision=`` on the task loaders: a finished run
loads at bfloat16 or int8, its model really computes so, and it still answers like float32.

The runs are tiny and untrained (``tests/task_runs.py``); what a trained model's metrics lose is
measured by ``benchmarks/task_precision.py`` (docs/experiments.md)."""

import json

import keras
import numpy as np
import pytest

from bert4x.cli import main as bert4x_main
from pretrained import KGCLUE_DIR
from tests.task_runs import cosent_run, kgclue_run, triples_run

TEXTS = ["今天天气很好。", "姚明出生于上海。", "《晴天》是周杰伦演唱的歌曲。"]


def dense_layers(model):
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))]


def computes_at(model, precision) -> bool:
    """Every dense layer computes in bfloat16 (bf16) or holds int8 kernels (int8)."""
    dense = dense_layers(model)
    if precision == "bf16":
        return bool(dense) and all(layer.compute_dtype == "bfloat16" for layer in dense)
    return bool(dense) and all(layer.quantization_mode == "int8" for layer in dense)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"cosent": str(cosent_run(root / "cosent")),
            "kgclue": str(kgclue_run(root / "kgclue", questions=20)),
            "triples": str(triples_run(root / "triples"))}


@pytest.mark.parametrize("precision,floor", [("bf16", 0.999), ("int8", 0.99)])
def test_a_cosent_run_encodes_alike_at_each_precision(runs, precision, floor):
    from tasks.cosent.task import load_trained_encoder

    expected = load_trained_encoder(runs["cosent"]).encode(TEXTS, progress=False)
    encoder = load_trained_encoder(runs["cosent"], precision)
    assert computes_at(encoder.encoder, precision)
    vectors = encoder.encode(TEXTS, progress=False)
    assert vectors.dtype == np.float32
    assert np.min(np.sum(vectors * expected, axis=1)) >= floor  # unit vectors: their cosine
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_kgclue_and_triples_runs_load_and_answer_at_each_precision(runs, precision):
    from tasks.kgclue.task import Answerer, load_trained as load_kgclue
    from tasks.triple_extraction.task import load_trained as load_triples

    settings, model, tokenizer, kb = load_kgclue(runs["kgclue"], precision)
    assert computes_at(model, precision)
    triple, tokens = Answerer(model, tokenizer, kb, settings, beam_size=2).generate(TEXTS[0])
    assert triple is not None and triple in kb.lookup(tokens)  # the prefix tree still holds
    extractor = load_triples(runs["triples"], precision)
    assert computes_at(extractor.model.train_model, precision)
    assert len(extractor.extract(TEXTS)) == len(TEXTS)


def test_the_commands_take_precision(runs, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b}\t{label}\n" for a, b, label in
                             [(TEXTS[0], TEXTS[1], 0), (TEXTS[1], TEXTS[2], 1),
                              (TEXTS[0], TEXTS[2], 2), (TEXTS[2], TEXTS[2], 5)]),
                     encoding="utf-8")
    scores = {}
    for precision in ("fp32", "bf16", "int8"):
        assert bert4x_main(["cosent", "evaluate", "--work-dir", runs["cosent"],
                            "--data", str(pairs), "--precision", precision]) == 0
        scores[precision] = float(capsys.readouterr().out.split(":")[-1])
    assert scores["bf16"] == scores["fp32"] and scores["int8"] == scores["fp32"]
    questions = "\n".join((KGCLUE_DIR / "train.json").read_text(encoding="utf-8")
                          .splitlines()[:2]) + "\n"
    (tmp_path / "questions.json").write_text(questions, encoding="utf-8")
    assert bert4x_main(["kgclue", "evaluate", "--work-dir", runs["kgclue"], "--data",
                        str(tmp_path / "questions.json"), "--beam-size", "1",
                        "--precision", "int8"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 2
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert bert4x_main(["triples", "predict", "--work-dir", runs["triples"], "--input",
                        str(tmp_path / "texts.txt"), "--output", str(tmp_path / "spo.json"),
                        "--precision", "bf16"]) == 0
    assert len((tmp_path / "spo.json").read_text(encoding="utf-8").splitlines()) == 3


def test_an_unknown_precision_is_refused_by_the_option(runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bert4x_main(["cosent", "encode", "--work-dir", runs["cosent"], "--input", "x",
                     "--output", "y", "--precision", "fp16"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fp16' (choose from" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"precision='fp16' is not one of"):
        from tasks.cosent.task import load_trained_encoder
        load_trained_encoder(runs["cosent"], "fp16")


def test_a_run_trains_in_mixed_bf16_and_loads_at_every_precision(tmp_path, capsys):
    """``train --precision bf16``: the encoder computes in bfloat16 while it trains, the run
    saves float32 weights like any other (so it loads at every precision), and int8, which
    cannot train, is refused by the option and by the library."""
    from pretrained import CHINESE_BERT_VOCAB, STSB_ZH_DIR
    from tasks.cosent.task import Settings, load_trained_encoder, train_encoder
    from tests.task_runs import TINY

    lines = (STSB_ZH_DIR / "train.data").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(lines[:48]) + "\n", encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    run = str(tmp_path / "run")
    command = ["cosent", "train", "--config", str(tmp_path / "config.json"), "--vocab",
               str(CHINESE_BERT_VOCAB), "--random-init", "--train", str(tmp_path / "train.tsv"),
               "--dev", str(tmp_path / "train.tsv"), "--epochs", "1", "--batch-size", "16",
               "--maxlen", "32", "--work-dir", run]
    with pytest.raises(SystemExit):
        bert4x_main(command + ["--precision", "int8"])
    error = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'int8'" in error and "bf16" in error
    settings = Settings(config=str(tmp_path / "config.json"), vocab=str(CHINESE_BERT_VOCAB),
                        checkpoint=None, maxlen=32)
    with pytest.raises(ValueError, match="precision='int8' is for inference"):
        train_encoder(settings, [], [], run, precision="int8")
    assert bert4x_main(command + ["--precision", "bf16"]) == 0
    for precision in ("fp32", "bf16", "int8"):
        encoder = load_trained_encoder(run, precision)
        assert precision == "fp32" or computes_at(encoder.encoder, precision)
        assert encoder.encode(TEXTS, progress=False).shape[0] == 3
    assert keras.config.dtype_policy().name == "float32"
