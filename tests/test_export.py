"""Export: every family and every task head, as a SavedModel (loaded back by
``tf.saved_model.load``) and as ONNX (run by ONNX Runtime), gives the Keras model's outputs;
the SavedModel's in-graph tokenizer gives our tokenizer's ids on real Chinese text."""

import json

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.cli import main as bert4x_main
from bert4x.export import (TextSignature, export_model, export_saved_model, output_names,
                           run_onnx, run_saved_model)
from bert4x.tokenizers import Tokenizer
from bert4x.training import sequence_padding
from pretrained import CHINESE_BERT_VOCAB, chinese_texts
from tests.references import least_cosine, random_batch

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="SavedModel and tf2onnx export trace TF graphs")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

CONFIG = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=32)
FAMILIES = {"bert": {}, "roformer": {}, "roformer_v2": {},
            "gau_alpha": dict(attention_key_size=8, hidden_act="swish"),
            "flash": dict(attention_key_size=8, hidden_act="swish", chunk_size=4)}


def keras_outputs(model, inputs):
    outputs = model.predict(inputs, verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return dict(zip(output_names(model), (keras.ops.convert_to_numpy(o) for o in outputs)))


def assert_exports_match(model, inputs, directory, atol=1e-4):
    """Both exported forms of ``model`` against Keras on ``inputs`` (a dict by export name)."""
    written = export_model(model, directory)
    expected = keras_outputs(model, list(inputs.values()))
    for runner, path in ((run_saved_model, written["saved_model"]), (run_onnx, written["onnx"])):
        outputs = runner(path, inputs)
        assert sorted(outputs) == sorted(expected), runner.__name__
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name], value, atol=atol,
                                       err_msg=f"{runner.__name__} {name}")
    return written


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_exports_with_its_heads(family, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_transformer_model({**CONFIG, **FAMILIES[family]}, model=family, with_mlm=True)
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [9, 5, 7])
    written = assert_exports_match(model, {"token_ids": token_ids, "segment_ids": segment_ids},
                                   tmp_path)
    description = json.loads(open(written["description"]).read())
    assert description["inputs"] == {"token_ids": ["int32", [None, None]],
                                     "segment_ids": ["int32", [None, None]]}
    # Another batch and length through the same files: the axes are free.
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [3, 12, 12, 2, 1], seed=1)
    inputs = {"token_ids": token_ids, "segment_ids": segment_ids}
    expected = keras_outputs(model, [token_ids, segment_ids])["output"]
    np.testing.assert_allclose(run_onnx(written["onnx"], inputs)["output"], expected, atol=1e-4)


@pytest.mark.parametrize("application", ["unilm", "lm"])
def test_seq2seq_and_language_models_export(application, tmp_path):
    keras.utils.set_random_seed(1)
    model = build_transformer_model(CONFIG, model="roformer", application=application,
                                    with_mlm="linear")
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [8, 6])
    assert_exports_match(model, {"token_ids": token_ids, "segment_ids": segment_ids}, tmp_path)


def test_the_text_signature_tokenizes_like_our_tokenizer_on_real_text(tmp_path):
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    keras.utils.set_random_seed(2)
    model = build_transformer_model({**CONFIG, "vocab_size": tokenizer.vocab_size},
                                    with_pool=True)
    export_saved_model(model, tmp_path / "sm", text=TextSignature(tokenizer, maxlen=24))
    import tensorflow as tf

    serve_text = tf.saved_model.load(str(tmp_path / "sm")).signatures["serve_text"]
    texts = chinese_texts()[::20] + [
        "Hello WORLD, Café naïve ＡＢＣ ２０２６年，全角标点！", "  多个   空格\t制表符\n换行  ",
        "emoji 😀 and control\x00\x1f chars", "ǅ Ⅻ ﬁ Straße İstanbul", "a" * 150, "長文" * 40]
    for start in range(0, len(texts), 512):
        chunk = texts[start:start + 512]
        expected = sequence_padding(tokenizer.encode_batch(chunk, maxlen=24)[0])
        got = serve_text(text=tf.constant(chunk))["token_ids"].numpy()
        mismatched = [chunk[i] for i in np.nonzero((got != expected).any(axis=1))[0]]
        assert not mismatched, mismatched[:5]
    ids, segments = tokenizer.encode_batch(texts[:7], maxlen=24)
    ids = sequence_padding(ids)
    np.testing.assert_allclose(
        serve_text(text=tf.constant(texts[:7]))["output"].numpy(),
        keras.ops.convert_to_numpy(model.predict([ids, np.zeros_like(ids)], verbose=0)),
        atol=1e-5)


def test_a_model_with_other_inputs_exports_without_the_text_signature(tmp_path):
    keras.utils.set_random_seed(3)
    backbone = build_transformer_model(CONFIG)
    subject = keras.Input((2,), dtype="int32", name="Input-Subject")
    picked = keras.ops.take_along_axis(backbone.output, subject[:, :, None], axis=1)
    model = keras.Model([*backbone.inputs, subject], keras.layers.Flatten()(picked))
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [6, 4])
    written = assert_exports_match(
        model, {"token_ids": token_ids, "segment_ids": segment_ids,
                "subject": np.array([[0, 2], [1, 3]], "int32")}, tmp_path)
    assert json.loads(open(written["description"]).read())["text_signature"] is None
    with pytest.raises(ValueError, match="serve_text feeds token and segment ids"):
        export_saved_model(model, tmp_path / "again",
                           text=TextSignature(Tokenizer(CHINESE_BERT_VOCAB), 16))
    with pytest.raises(ValueError, match="formats must be some of"):
        export_model(model, tmp_path / "x", formats=["tflite"])


def test_cli_exports_a_keras_file(tmp_path, capsys):
    keras.utils.set_random_seed(4)
    model = build_transformer_model({**CONFIG, "vocab_size": 21128}, with_pool=True)
    model.save(tmp_path / "model.keras")
    assert bert4x_main(["export", "--model", str(tmp_path / "model.keras"), "--vocab",
                        str(CHINESE_BERT_VOCAB), "--maxlen", "16", "--output",
                        str(tmp_path / "out")]) == 0
    assert "model.onnx" in capsys.readouterr().out
    description = json.loads((tmp_path / "out" / "export.json").read_text())
    assert description["text_signature"] == "serve_text" and description["maxlen"] == 16
    assert (tmp_path / "out" / "vocab.txt").read_text().splitlines()[101] == "[CLS]"
    assert bert4x_main(["export", "--model", str(tmp_path / "model.keras"), "--format",
                        "onnx_int8", "--output", str(tmp_path / "int8")]) == 0
    assert sorted(path.name for path in (tmp_path / "int8").iterdir()) == [
        "export.json", "model.int8.onnx", "model.onnx"]
    with pytest.raises(SystemExit, match="--work-dir RUN"):
        bert4x_main(["export", "--output", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="needs both --vocab and --maxlen"):
        bert4x_main(["export", "--model", str(tmp_path / "model.keras"), "--vocab",
                     str(CHINESE_BERT_VOCAB), "--output", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="go with --model"):
        bert4x_main(["export", "--work-dir", str(tmp_path), "--maxlen", "16", "--output",
                     str(tmp_path / "none")])
    assert bert4x_main(["export", "--work-dir", str(tmp_path), "--output",
                        str(tmp_path / "none")]) == 2
    assert "holds no task run" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["cosent", "gplinker", "pointer_cln", "kgclue"])
def test_every_task_run_exports_its_inference_model(task, tmp_path):
    from tasks.exports import exportable
    from tests.task_runs import cosent_run, kgclue_run, triples_run

    run = tmp_path / "run"
    if task == "cosent":
        cosent_run(run)
    elif task == "kgclue":
        kgclue_run(run, questions=20)
    else:
        triples_run(run, kind=task)
    model = exportable(run).model
    token_ids, segment_ids = random_batch(21128, [10, 4])
    inputs = {"token_ids": token_ids, "segment_ids": segment_ids}
    if task == "pointer_cln":
        inputs["subject"] = np.array([[1, 3], [0, 0]], "int32")
    assert bert4x_main(["export", "--work-dir", str(run), "--output", str(tmp_path / "out")]) == 0
    description = json.loads((tmp_path / "out" / "export.json").read_text())
    assert description["task"] == ("triples" if task in ("gplinker", "pointer_cln") else task)
    expected = keras_outputs(model, list(inputs.values()))
    for runner, path in ((run_saved_model, tmp_path / "out" / "saved_model"),
                         (run_onnx, tmp_path / "out" / "model.onnx")):
        outputs = runner(path, inputs)
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name], value, atol=1e-4,
                                       err_msg=f"{task} {runner.__name__} {name}")


def test_a_kgclue_export_decodes_greedily_and_by_beam_under_the_kb_tree_in_the_graph(tmp_path):
    import tensorflow as tf

    from bert4x.generation import AutoRegressiveDecoder
    from pretrained import KGCLUE_DIR
    from tasks.exports import export_run
    from tasks.kgclue.data import read_questions
    from tasks.kgclue.task import MODEL_WEIGHTS, load_trained
    from tests.task_runs import kgclue_run

    run = kgclue_run(tmp_path / "run", questions=300)
    settings, model, tokenizer, kb = load_trained(run)
    # Every weight random (N(0, 0.3)), the export reading them from the run's file.
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save_weights(run / MODEL_WEIGHTS)
    export_run(run, tmp_path / "out", formats=["saved_model"])
    signatures = tf.saved_model.load(str(tmp_path / "out" / "saved_model")).signatures
    decoder = AutoRegressiveDecoder(model, end_id=tokenizer.sep_id, min_ends=3,
                                    max_new_tokens=settings.key_maxlen)
    questions = [q.question for q in read_questions(KGCLUE_DIR / "dev.json").examples[:6]]
    prefixes = [tokenizer.encode(q, maxlen=settings.question_maxlen)[0] for q in questions]
    prefixes += [rng.integers(1, tokenizer.vocab_size, size=n).tolist() for n in (3, 7, 12)]
    for ids in prefixes:
        greedy = decoder.greedy(ids, constraint=kb.trie)
        (beam,) = decoder.beam_search(ids, beam_size=3, num_results=1, constraint=kb.trie)
        for name, expected in (("generate_greedy", greedy), ("generate_beam", beam)):
            outputs = signatures[name](token_ids=tf.constant([ids], tf.int32))
            assert outputs["generated"].numpy()[0].tolist() == expected.tokens, (name, ids)
            assert bool(outputs["finished"].numpy()[0]) == expected.finished
            assert outputs["log_prob"].numpy()[0] == pytest.approx(expected.log_prob, abs=1e-3)
            assert kb.lookup(expected.tokens)  # the tree admits only KB keys
        assert beam.log_prob > greedy.log_prob  # the beam finds what greedy misses
        # ... and the tree decides: free decoding of the same prefix goes elsewhere.
        assert decoder.greedy(ids).tokens != greedy.tokens


@pytest.mark.parametrize("family", ["bert", "gau_alpha"])
def test_the_int8_onnx_file_runs_int8_matmuls_and_keeps_the_float_outputs(family, tmp_path):
    import onnx

    keras.utils.set_random_seed(2)
    model = build_transformer_model({**CONFIG, **FAMILIES[family]}, model=family)
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [9, 5, 7])
    written = export_model(model, tmp_path, formats=["onnx_int8"])
    assert sorted(written) == ["description", "onnx", "onnx_int8"]
    float_weights, int8_weights = (weight_matmuls(onnx.load(written[name]).graph)
                                   for name in ("onnx", "onnx_int8"))
    assert int8_weights["MatMul"] == 0 and int8_weights["MatMulInteger"] == \
        float_weights["MatMul"] > 0, (float_weights, int8_weights)
    expected = keras_outputs(model, [token_ids, segment_ids])["output"]
    outputs = run_onnx(written["onnx_int8"], {"token_ids": token_ids,
                                              "segment_ids": segment_ids})["output"]
    assert least_cosine(outputs, expected) >= 0.99
    assert np.abs(outputs - expected).max() > 1e-4  # quantized, not the float file again


def weight_matmuls(graph):
    """How many float (MatMul) and int8 (MatMulInteger) matmuls take a stored weight: the
    activation-by-activation ones of attention stay float in both files."""
    import collections

    stored = {tensor.name for tensor in graph.initializer}
    return collections.Counter(node.op_type for node in graph.node
                               if node.op_type in ("MatMul", "MatMulInteger")
                               and set(node.input) & stored)
