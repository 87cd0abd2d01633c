"""CoSENT task: loss against its formula and sentence-transformers, pooling, readers, search,
and the command line on user checkpoints in the Google and HF formats."""

import json
import os

import keras
import numpy as np
import pytest
import torch

from bert4x import build_transformer_model
from bert4x.cli import main as bert4x_main
from bert4x.training import DataError
from pretrained import CHINESE_BERT_VOCAB, STSB_ZH_DIR
from tasks.cosent.data import NLI_LABELS, read_nli_triples, read_pairs
from tasks.cosent.model import build_encoder, cosent_loss
from tasks.cosent.task import Settings, build_sentence_encoder, spearman
from tasks.cosent.vectors import VectorIndex

TINY = dict(vocab_size=21128, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64)


def cosent_double_loop(labels, cosines, scale=20.0):
    """The formula as written: log(1 + Σ over ordered pairs of exp(λ(cos_j − cos_i)))."""
    total = 1.0
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] > labels[j]:
                total += np.exp(scale * (cosines[j] - cosines[i]))
    return np.log(total)


@pytest.mark.parametrize("seed", range(5))
def test_cosent_loss_equals_the_formula_and_sentence_transformers(seed):
    from sentence_transformers.losses import CoSENTLoss as Reference

    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 17))
    labels = rng.integers(0, 4, size).astype("float32")  # graded labels with ties
    cosines = rng.uniform(-1, 1, size).astype("float32")
    ours = float(cosent_loss(labels, cosines))
    assert ours == pytest.approx(cosent_double_loop(labels, cosines.astype("float64")),
                                 rel=1e-5, abs=1e-5)
    u = torch.tensor(rng.normal(size=(size, 8)), dtype=torch.float32)
    v = torch.tensor(rng.normal(size=(size, 8)), dtype=torch.float32)
    reference = Reference.__new__(Reference)
    torch.nn.Module.__init__(reference)
    reference.scale, reference.similarity_fct = 20.0, torch.nn.functional.cosine_similarity
    expected = reference.compute_loss_from_embeddings([u, v], torch.tensor(labels)).item()
    cos = torch.nn.functional.cosine_similarity(u, v).numpy()
    assert float(cosent_loss(labels, cos)) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_cosent_loss_of_a_batch_without_ordered_pairs_is_zero():
    assert float(cosent_loss(np.ones(4), np.array([0.1, 0.9, -0.3, 0.5]))) == pytest.approx(0.0)


def test_poolings_ignore_padding_and_follow_their_definitions():
    keras.utils.set_random_seed(0)
    backbone = build_transformer_model(TINY, with_pool=True)
    ids = np.array([[101, 2769, 4263, 102, 0, 0]])
    segments = np.zeros_like(ids)
    pooled = backbone.predict([ids, segments], verbose=0)
    sequence, first = keras.Model(backbone.inputs, [
        backbone.get_layer(f"Transformer-{index}-FeedForward-Norm").output for index in (1, 0)
    ]).predict([ids, segments], verbose=0)
    expected = {"cls": sequence[0, 0], "mean": sequence[0, :4].mean(0),
                "first-last-avg": ((first[0, :4] + sequence[0, :4]) / 2).mean(0),
                "pooler": pooled[0]}
    for pooling, vector in expected.items():
        encoder = build_encoder(backbone, pooling)
        np.testing.assert_allclose(encoder.predict([ids, segments], verbose=0)[0], vector,
                                   atol=1e-5)
        if pooling != "cls":  # more padding changes nothing
            wider = np.pad(ids, [(0, 0), (0, 3)])
            np.testing.assert_allclose(
                encoder.predict([wider, np.zeros_like(wider)], verbose=0)[0], vector, atol=1e-5)
    with pytest.raises(ValueError, match="with_pool"):
        build_encoder(build_transformer_model(TINY), "pooler")
    with pytest.raises(ValueError, match="pooling must be"):
        build_encoder(backbone, "max")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_readers_accept_tsv_jsonl_nli_and_report_bad_lines(tmp_path):
    pairs = read_pairs(write(tmp_path / "a.tsv", "我爱你\t我喜欢你\t4\n\n他走了\t天晴了\t0\n"),
                       label_range=(0, 5)).examples
    assert [(p.first, p.label) for p in pairs] == [("我爱你", 4.0), ("他走了", 0.0)]
    jsonl = write(tmp_path / "b.jsonl", json.dumps(
        {"sentence1": "一", "sentence2": "二", "label": "entailment"}, ensure_ascii=False) + "\n")
    assert read_pairs(jsonl, label_names=NLI_LABELS).examples[0].label == 2.0
    triples = read_nli_triples(write(tmp_path / "c.tsv", "甲\t乙\t丙\n")).examples
    assert [(p.second, p.label) for p in triples] == [("乙", 1.0), ("丙", 0.0)]

    cases = {
        "": "no usable records",
        "一\t二\t1\n一\t二\n": r"bad.tsv:2: expected 3 tab-separated fields, found 2",
        "一\t二\t7\n": r"bad.tsv:1: label 7 is outside the declared range \[0, 5\]",
        "一\t \t1\n": r"bad.tsv:1: sentence 2 is empty",
        "一\t二\t高\n": r"bad.tsv:1: label '高' is not a number",
    }
    for content, message in cases.items():
        with pytest.raises(DataError, match=message):
            read_pairs(write(tmp_path / "bad.tsv", content), label_range=(0, 5))
    skipped = read_pairs(write(tmp_path / "bad.tsv", "一\t二\t1\n一\t二\n"), on_error="skip")
    assert len(skipped) == 1 and skipped.skipped[0][0] == 2


def test_long_pairs_are_truncated_and_vectors_are_unit_length(tmp_path):
    config = write(tmp_path / "config.json", json.dumps(TINY))
    encoder = build_sentence_encoder(Settings(config=str(config), vocab=str(CHINESE_BERT_VOCAB),
                                              maxlen=16))
    long_text = "今天天气很好，" * 200
    assert max(len(ids) for ids in encoder.token_ids([long_text, "短句"])) == 16
    vectors = encoder.encode([long_text, "短句", "一个人在弹吉他。"], batch_size=2,
                             progress=False)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Length-sorted batching returns vectors in input order.
    np.testing.assert_allclose(vectors[2], encoder.encode(["一个人在弹吉他。"], progress=False)[0],
                               atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        encoder.encode(["好", " "])
    with pytest.raises(TypeError, match="list of texts"):
        encoder.encode("好")


def test_vector_index_search_is_exact_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype("float32")
    texts = [f"text {i}" for i in range(50)]
    index = VectorIndex(vectors, texts)
    queries = rng.normal(size=(3, 8)).astype("float32")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for query, hits in zip(queries, index.search(queries, k=4)):
        expected = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:4]
        assert [i for i, _, _ in hits] == expected.tolist()
        assert [t for _, _, t in hits] == [texts[i] for i in expected]
    loaded = VectorIndex.load(index.save(tmp_path / "index"))
    for before, after in zip(index.search(queries, k=4), loaded.search(queries, k=4)):
        assert [hit[0] for hit in before] == [hit[0] for hit in after]
        np.testing.assert_allclose([hit[1] for hit in before], [hit[1] for hit in after],
                                   atol=1e-6)
    with pytest.raises(FileNotFoundError, match="vectors.npy"):
        VectorIndex.load(tmp_path)


@pytest.fixture(scope="module")
def sts_sample(tmp_path_factory):
    """A few real STS-B-zh lines: 64 to train on, 32 to evaluate, 20 texts to search."""
    directory = tmp_path_factory.mktemp("sts")
    lines = (STSB_ZH_DIR / "train.data").read_text(encoding="utf-8").splitlines()
    write(directory / "train.tsv", "\n".join(lines[:64]) + "\n")
    write(directory / "dev.tsv", "\n".join(lines[64:96]) + "\n")
    write(directory / "corpus.txt", "\n".join(line.split("\t")[0] for line in lines[:20]) + "\n")
    return directory


def user_checkpoint(directory, fmt):
    """A tiny BERT with a pooler written as a user would download it."""
    keras.utils.set_random_seed(3)
    built = build_transformer_model(TINY, with_pool=True, return_keras_model=False)
    os.makedirs(directory, exist_ok=True)
    config = write(directory / "bert_config.json", json.dumps(TINY))
    if fmt == "google":
        checkpoint = built.save_google_checkpoint(str(directory / "bert_model.ckpt"))
    else:
        checkpoint = built.export_huggingface(directory / "hf")
    return str(config), str(checkpoint)


@pytest.mark.parametrize("fmt,optimizer", [("google", []), ("hf", ["--optimizer", "amos"])])
def test_cli_fine_tunes_a_user_checkpoint_end_to_end(tmp_path, sts_sample, fmt, optimizer,
                                                     capsys):
    config, checkpoint = user_checkpoint(tmp_path / "ckpt", fmt)
    run = str(tmp_path / "run")
    assert bert4x_main(["cosent", "train", "--config", config, "--checkpoint", checkpoint,
                        "--vocab", str(CHINESE_BERT_VOCAB), "--pooling", "pooler",
                        "--train", str(sts_sample / "train.tsv"),
                        "--dev", str(sts_sample / "dev.tsv"), "--epochs", "1",
                        "--batch-size", "16", "--label-range", "0", "5",
                        "--work-dir", run, *optimizer]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    recorded = (tmp_path / "run" / "training_settings.json").read_text()
    assert ('"zeta"' in recorded) == bool(optimizer)  # Amos' own setting: its config
    assert set(results) == {"untrained", "cosent"} and -100 <= results["cosent"]["dev"] <= 100
    assert bert4x_main(["cosent", "evaluate", "--work-dir", run,
                        "--data", str(sts_sample / "dev.tsv")]) == 0
    assert f"{results['cosent']['dev']:.2f}" in capsys.readouterr().out
    index = str(tmp_path / "index")
    assert bert4x_main(["cosent", "encode", "--work-dir", run,
                        "--input", str(sts_sample / "corpus.txt"), "--output", index]) == 0
    first_text = (sts_sample / "corpus.txt").read_text(encoding="utf-8").splitlines()[0]
    capsys.readouterr()
    assert bert4x_main(["cosent", "search", "--work-dir", run, "--index", index,
                        "--query", first_text, "-k", "2"]) == 0
    assert f"1. 1.0000  {first_text}" in capsys.readouterr().out


def test_cli_reports_bad_data_with_file_and_line(tmp_path, sts_sample, capsys):
    bad = write(tmp_path / "bad.tsv", "一\t二\t1\n一\t二\t9\n")
    config = write(tmp_path / "config.json", json.dumps(TINY))
    assert bert4x_main(["cosent", "train", "--config", str(config), "--vocab",
                        str(CHINESE_BERT_VOCAB), "--train", str(bad), "--dev",
                        str(sts_sample / "dev.tsv"), "--label-range", "0", "5",
                        "--work-dir", str(tmp_path / "run")]) == 2
    assert "bad.tsv:2: label 9 is outside the declared range [0, 5]" in capsys.readouterr().err
    assert bert4x_main(["cosent", "evaluate", "--work-dir", str(tmp_path / "none"),
                        "--data", str(bad)]) == 2
    assert "cosent.json missing" in capsys.readouterr().err


def test_spearman_of_a_perfect_ranking_is_100(tmp_path):
    class Stub:  # a "similarity" that reproduces the labels exactly
        def similarity(self, first, second, progress):
            return np.array([float(len(a)) for a in first])

    pairs = read_pairs(write(tmp_path / "p.tsv", "一\tx\t1\n一二\tx\t2\n一二三\tx\t3\n")).examples
    assert spearman(Stub(), pairs) == pytest.approx(100.0)


def test_a_work_dir_holding_a_run_from_another_checkpoint_is_refused(tmp_path):
    """train() would resume the old run and report its scores as the new one's."""
    config = str(write(tmp_path / "config.json", json.dumps(TINY)))
    first = Settings(config=config, vocab=str(CHINESE_BERT_VOCAB), checkpoint=str(tmp_path / "a"))
    first.save(tmp_path / "run")
    first.save(tmp_path / "run")  # the same run again: resuming it is fine
    second = Settings(config=config, vocab=str(CHINESE_BERT_VOCAB), checkpoint=str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"already holds a run with other settings \(checkpoint: "
                                         r".*a' there, .*b' now\)"):
        second.save(tmp_path / "run")
    assert Settings.load(tmp_path / "run") == first
