"""Under the JAX and PyTorch backends a model builds, matches TensorFlow, and a bad id is an
error naming it, never a clamp: JAX gathers clamp out-of-range indices and returned plausible
vectors for token 50 of a 40-token vocabulary, and PyTorch could not build BERT at all (the
position check ran on the made-up sizes of Keras' shape inference). Runs in a subprocess,
since the Keras backend is fixed when Keras is first imported."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert4x import build_transformer_model

CONFIG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=16)
PROGRAM = """
import json, sys
import numpy as np
from bert4x import build_transformer_model
from bert4x.input_checks import failed_check_message
config, weights = json.loads(sys.argv[1]), sys.argv[2]
results = {}
for name, ids, segments in [("valid", [[1, 5, 2]], [[0, 1, 1]]),
                            ("token", [[1, 50, 2]], [[0, 0, 0]]),
                            ("segment", [[1, 5, 2]], [[0, 2, 0]]),
                            ("position", [[1] * 20], [[0] * 20])]:
    model = build_transformer_model(config)  # a fresh model: Keras' JAX predict loop leaves
    model.load_weights(weights)              # a model unusable after an error inside it
    try:
        results[name] = model.predict([np.array(ids), np.array(segments)], verbose=0).tolist()
    except Exception as error:
        results[name] = failed_check_message(error) or f"{type(error).__name__}: {error}"
print("RESULT " + json.dumps(results))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bad_ids_are_errors_and_valid_ones_match_tensorflow(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} not installed")
    model = build_transformer_model(CONFIG)
    weights = str(tmp_path / "model.weights.h5")
    model.save_weights(weights)
    done = subprocess.run([sys.executable, "-c", PROGRAM, json.dumps(CONFIG), weights],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, KERAS_BACKEND=backend))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.rsplit("RESULT ", 1)[1])
    assert results["token"] == ("Embedding-Token: an input id is negative or >= the "
                                "vocabulary size 40")
    assert results["segment"] == ("Embedding-Segment: an input id is negative or >= the "
                                  "vocabulary size 2")
    assert results["position"] == ("Embedding-Position: sequence is longer than "
                                   "max_position_embeddings=16")
    expected = model.predict([np.array([[1, 5, 2]]), np.array([[0, 1, 1]])], verbose=0)
    np.testing.assert_allclose(results["valid"], expected, atol=1e-5)


def test_a_google_checkpoint_without_tensorflow_is_one_clear_error(tmp_path):
    """JAX and PyTorch users may not have TensorFlow; its absence must not surface as a
    ModuleNotFoundError from deep in the loader."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax not installed")
    program = ("import sys; sys.modules['tensorflow'] = None\n"
               "from bert4x.checkpoints.readers import CheckpointError, open_checkpoint\n"
               "try:\n    open_checkpoint(sys.argv[1])\n"
               "except CheckpointError as error:\n    print('ERROR', error)\n")
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path / "bert_model.ckpt")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert done.returncode == 0, done.stderr[-2000:]
    message = done.stdout.split("ERROR ", 1)[1]
    assert "needs TensorFlow" in message and "bert4x convert --to-hf" in message


def test_export_on_another_backend_is_one_clear_error(tmp_path):
    """SavedModel and ONNX export trace TF graphs; on JAX the command says so in one line."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax not installed")
    program = ("import sys, keras\n"
               "from bert4x import build_transformer_model\n"
               "from bert4x.cli import main\n"
               "build_transformer_model(dict(vocab_size=30, hidden_size=8, num_hidden_layers=1, "
               "num_attention_heads=2, intermediate_size=8)).save(sys.argv[1])\n"
               "sys.exit(main(['export', '--model', sys.argv[1], '--output', sys.argv[2]]))\n")
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path / "model.keras"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("bert4x export: a SavedModel export needs the TensorFlow backend "
            "(KERAS_BACKEND=tensorflow); this process runs 'jax'") in done.stderr
    assert "Traceback" not in done.stderr


TRAINING_PROGRAM = """
import json, sys
import numpy as np
from bert4x.training import WarmupDecay, build_optimizer
from tasks.triple_extraction import SAMPLE, SAMPLE_SCHEMA
from tasks.triple_extraction.data import read_duie, read_schema
from tasks.triple_extraction.task import Extractor, Settings
config, vocab, weights_prefix, mode = sys.argv[1:5]
examples = read_duie(SAMPLE, read_schema(SAMPLE_SCHEMA)).examples[:8]
results = {}
for kind in ("gplinker", "pointer_cln"):
    extractor = Extractor(Settings(config=config, vocab=vocab, schema=str(SAMPLE_SCHEMA),
                                   kind=kind, maxlen=64, head_size=8))
    model, weights = extractor.model, f"{weights_prefix}-{kind}.weights.h5"
    if mode == "save":
        model.train_model.save_weights(weights)
    else:
        model.train_model.load_weights(weights)
    labelled = model.training_examples(extractor.label(examples))
    batches = [model.collate(labelled[:4]), model.collate(labelled[4:8])]
    model.train_model.compile(loss=model.losses, optimizer=build_optimizer(
        WarmupDecay(1e-3, 6, warmup_steps=2), weight_decay=0.01))
    losses = [float(model.train_model.train_on_batch(*batches[step % 2], return_dict=True)["loss"])
              for step in range(6)]
    outputs = model.train_model.predict_on_batch(batches[0][0])
    results[kind] = dict(losses=losses, outputs=[np.asarray(o).tolist() for o in outputs])
print("RESULT " + json.dumps(results))
"""


def _train_triples_on(backend, config, weights_prefix, mode):
    from pretrained import CHINESE_BERT_VOCAB

    done = subprocess.run([sys.executable, "-c", TRAINING_PROGRAM, config,
                           str(CHINESE_BERT_VOCAB), weights_prefix, mode],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, KERAS_BACKEND=backend))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.rsplit("RESULT ", 1)[1])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_steps_of_both_extractors_equal_tensorflow(backend, tmp_path):
    """Six AdamW steps (warm-up, decay, weight decay) of both triple extractors from the same
    weights on the same batches give TensorFlow's losses and outputs: the tasks' losses, their
    gradients and the optimizer agree across backends, so a task that learns more slowly on
    one backend is following another random initialisation or dropout stream, not a fault.
    Weights are not compared element by element: Adam's first steps move a weight by about
    the learning rate whatever its gradient's size, so gradients at rounding level (seen: 81
    of 14,112 in one kernel) may step either way. Weight decay has its own test, on every
    backend (tests/test_training.py)."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} not installed")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(CONFIG, vocab_size=21128, max_position_embeddings=64,
                                      hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)))
    prefix = str(tmp_path / "start")
    expected = _train_triples_on("tensorflow", str(config), prefix, "save")
    results = _train_triples_on(backend, str(config), prefix, "load")
    for kind, result in results.items():
        losses = expected[kind]["losses"]
        assert losses[-1] < losses[1], f"{kind} did not learn: {losses}"
        np.testing.assert_allclose(result["losses"], losses, rtol=1e-5, err_msg=kind)
        for output, reference in zip(result["outputs"], expected[kind]["outputs"]):
            np.testing.assert_allclose(output, reference, atol=5e-4, rtol=1e-4, err_msg=kind)
