"""Lossless enlargement: wider and deeper models that compute what the original does."""

import zlib

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.models.enlarge import block_plan, enlarge_model, enlarged_config

CONFIG = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
              max_position_embeddings=64)


def randomised(built):
    """Every weight random, norms included, so no lossless step can hide behind a default."""
    for variable in built.model.weights:
        rng = np.random.default_rng(zlib.crc32(variable.path.encode()))
        scale = 0.5 if len(variable.shape) == 1 else 0.3
        centre = 1.0 if variable.path.endswith("gamma") else 0.0
        variable.assign((centre + rng.normal(0, scale, variable.shape)).astype("float32"))
    return built


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 60, (3, 20))
    ids[1, 14:] = 0  # padding
    return [ids, rng.integers(0, 2, ids.shape)]


def hidden_and_mlm(built):
    model = built.model
    last = model.get_layer(f"Transformer-{built.config.num_hidden_layers - 1}-"
                           + ("GatedAttentionUnit" if built.model_name == "gau_alpha"
                              else "FeedForward") + "-Norm").output
    return keras.Model(model.inputs, [last, model.output]).predict(inputs(), verbose=0)


@pytest.mark.parametrize("family", ["bert", "roformer", "roformer_v2", "gau_alpha"])
@pytest.mark.parametrize("width,layers", [(2, None), (1, 5), (3, 4)])
def test_enlarged_models_compute_what_the_original_does(family, width, layers):
    keras.utils.set_random_seed(0)
    original = randomised(build_transformer_model(
        CONFIG, model=family, application="lm", with_mlm=True, return_keras_model=False))
    bigger = enlarge_model(original, width=width, layers=layers)
    assert bigger.config.hidden_size == 16 * width
    assert bigger.config.num_hidden_layers == (layers or 2)
    hidden, probs = hidden_and_mlm(original)
    wide_hidden, wide_probs = hidden_and_mlm(bigger)
    np.testing.assert_allclose(wide_probs, probs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(wide_hidden, np.tile(hidden, (1, 1, width)), atol=1e-4, rtol=0)
    assert np.abs(probs - probs.mean(-1, keepdims=True)).max() > 1e-3  # not a flat output


def test_new_blocks_are_spread_over_the_stack_and_enlarging_never_shrinks():
    assert block_plan(4, 8) == [(0, False), (0, True), (1, False), (1, True), (2, False),
                                (2, True), (3, False), (3, True)]
    assert [new for _, new in block_plan(4, 6)].count(True) == 2
    config = build_transformer_model(CONFIG, return_keras_model=False).config
    with pytest.raises(ValueError, match="cannot remove blocks"):
        enlarged_config(config, layers=1)
    with pytest.raises(ValueError, match="whole factor"):
        enlarged_config(config, width=1.5)
    with pytest.raises(ValueError, match="cannot be enlarged"):
        enlarge_model(build_transformer_model(CONFIG, model="nezha", return_keras_model=False),
                      width=2)


def test_the_enlarge_command_writes_a_model_that_loads_and_matches(tmp_path, capsys):
    from bert4x.cli import main as bert4x_main

    original = randomised(build_transformer_model(
        CONFIG, model="roformer", with_mlm=True, return_keras_model=False))
    source = tmp_path / "source"
    original.export_huggingface(source)
    (source / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    target = tmp_path / "bigger"
    assert bert4x_main(["enlarge", "--config", str(source / "config.json"), "--checkpoint",
                        str(source), "--model", "roformer", "--with-mlm", "--width", "2",
                        "--layers", "3", "--to-hf", str(target)]) == 0
    assert "enlarged 2×16 to 3×32 (4 heads, intermediate 48)" in capsys.readouterr().out
    assert (target / "vocab.txt").read_text(encoding="utf-8").startswith("[PAD]")
    reloaded = build_transformer_model(str(target / "config.json"), str(target),
                                       model="roformer", with_mlm=True, return_keras_model=False)
    np.testing.assert_allclose(reloaded.model.predict(inputs(), verbose=0),
                               original.model.predict(inputs(), verbose=0), atol=1e-5, rtol=0)
    with pytest.raises(SystemExit, match="bert4x enlarge: give --to-hf DIR"):
        bert4x_main(["enlarge", "--config", str(source / "config.json"), "--checkpoint",
                     str(source), "--model", "roformer", "--width", "2"])
