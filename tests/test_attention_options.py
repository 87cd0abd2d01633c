"""Research attention options against NumPy transcriptions of their formulas, their properties,
how they compose, serialisation and bad input."""

import zlib

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4x import CheckpointError, ConfigError, build_transformer_model
from bert4x.layers import GatedAttentionUnit, MultiHeadAttention, apply_rotary_2d
from bert4x.layers.attention import entropy_invariant_factor
from tests.numpy_reference import encode, random_weights
from tests.references import random_batch, write_google_checkpoint

# Long enough that the entropy-invariant key count passes its floor of 16 for some rows.
LENGTHS = [40, 9, 23]
OPTION_SETS = {
    "talking_heads": dict(talking_heads=True),
    "realformer": dict(residual_attention_scores=True),
    "entropy": dict(attention_scale="entropy_invariant"),
    "rope_2d": dict(rope="2d"),
    "all_composed": dict(talking_heads=True, residual_attention_scores=True,
                         attention_scale="entropy_invariant"),
    "all_composed_2d": dict(talking_heads=True, residual_attention_scores=True,
                            attention_scale="entropy_invariant", rope="2d"),
    # Length extrapolation, anchored at 16 tokens so that the 23- and 40-token rows pass it.
    "log_n": dict(attention_scale="log_n", attention_scale_length=16),
    "entropy_at_16": dict(attention_scale="entropy_invariant", attention_scale_length=16),
    "ntk": dict(rope="1d", rope_ntk_factor=4.0),
    "ntk_log_n": dict(rope="1d", rope_base=500.0, rope_ntk_factor=8.0, attention_scale="log_n",
                      attention_scale_length=16),
}
#: The RoPE base each option set rotates with: base · factor^(d/(d−2)), d = 8 (key size).
NTK_BASES = {"ntk": 10000.0 * 4.0 ** (8 / 6), "ntk_log_n": 500.0 * 8.0 ** (8 / 6)}


def grid_positions(batch, length, seed):
    """(x, y) per token, as for a table or image patches: row-major cells of a 5-wide grid,
    shifted by a random offset per example."""
    rng = np.random.default_rng(seed)
    cells = np.arange(length)
    grid = np.stack([cells % 5, cells // 5], axis=-1).astype("float32")
    return grid[None] + rng.integers(0, 7, (batch, 1, 2)).astype("float32")


@pytest.mark.parametrize("family", ["roformer", "bert"])
@pytest.mark.parametrize("options", sorted(OPTION_SETS))
@pytest.mark.parametrize("application", ["encoder", "lm"])
def test_options_match_numpy_formulas(family, options, application, tmp_path):
    overrides = OPTION_SETS[options]
    hidden, layers, heads, key_size, head_size, intermediate, vocab = 24, 3, 3, 8, 6, 30, 40
    weights = random_weights(family, vocab, hidden, layers, heads, key_size, head_size,
                             intermediate, seed=1)
    prefix = write_google_checkpoint(str(tmp_path / "model.ckpt"), weights)
    config = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=intermediate,
                  max_position_embeddings=64, key_size=key_size, head_size=head_size)
    talking = overrides.get("talking_heads", False)
    built = build_transformer_model(config, prefix, model=family, with_mlm=True,
                                    application=application, return_keras_model=False,
                                    allow_missing=talking, **overrides)
    rng = np.random.default_rng(2)
    mixing = {}
    if talking:  # not in any checkpoint format: random values set directly
        assert set(built.load_report.missing) == {
            f"Transformer-{i}-MultiHeadSelfAttention/{m}"
            for i in range(layers) for m in ("logits_mixing", "probs_mixing")}
        for i in range(layers):
            layer = built.model.get_layer(f"Transformer-{i}-MultiHeadSelfAttention")
            mixing[i] = (np.eye(heads) + rng.normal(0, 0.3, (heads, heads)),
                         np.eye(heads) + rng.normal(0, 0.3, (heads, heads)))
            layer.logits_mixing.assign(mixing[i][0].astype("float32"))
            layer.probs_mixing.assign(mixing[i][1].astype("float32"))
    token_ids, segment_ids = random_batch(vocab, LENGTHS, seed=3)
    inputs = [token_ids, segment_ids]
    positions = None
    if overrides.get("rope") == "2d":
        positions = grid_positions(len(LENGTHS), token_ids.shape[1], seed=4)
        inputs.append(positions)
    model = built.model
    last_norm = model.get_layer(f"Transformer-{layers - 1}-FeedForward-Norm").output
    hidden_out, probs = keras.Model(model.inputs, [last_norm, model.output]).predict(
        inputs, verbose=0)
    numpy_options = dict(talking_heads=mixing or None,
                         residual_scores=overrides.get("residual_attention_scores", False),
                         entropy_invariant=overrides.get("attention_scale") == "entropy_invariant",
                         log_n=overrides.get("attention_scale") == "log_n",
                         scale_length=overrides.get("attention_scale_length", 512),
                         rope_base=NTK_BASES.get(options))
    for row, length in enumerate(LENGTHS):
        if positions is not None:
            numpy_options["positions_2d"] = positions[row, :length]
        expected_hidden, expected_probs = encode(
            weights, token_ids[row, :length], segment_ids[row, :length], family, heads, key_size,
            head_size, causal=application == "lm", options=numpy_options)
        np.testing.assert_allclose(hidden_out[row, :length], expected_hidden, atol=1e-4, rtol=0)
        np.testing.assert_allclose(probs[row, :length], expected_probs, atol=1e-5, rtol=0)


def sharpen(model):
    """Random weights large enough that attention is far from uniform; the same values for the
    same weight path whatever options the model was built with."""
    for variable in model.weights:
        rng = np.random.default_rng(zlib.crc32(variable.path.encode()))
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model


def test_each_option_changes_the_output():
    """The parity test above would pass vacuously if an option were ignored by both sides."""
    config = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=20, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    token_ids, segment_ids = random_batch(30, [30, 12], seed=0)
    inputs = [token_ids, segment_ids]

    def output(**overrides):
        model = sharpen(build_transformer_model(config, model="roformer", **overrides))
        for layer in model.layers:
            if isinstance(layer, MultiHeadAttention) and layer.talking_heads:
                layer.logits_mixing.assign(np.array([[1.0, 0.5], [0.2, 1.0]], "float32"))
        extra = [grid_positions(2, 30, 0)] if overrides.get("rope") == "2d" else []
        return model.predict(inputs + extra, verbose=0)

    plain = output()
    for name, overrides in OPTION_SETS.items():
        assert np.abs(output(**overrides) - plain).max() > 1e-3, name


@settings(max_examples=40, deadline=None)
@given(offset=st.tuples(st.integers(-50, 50), st.integers(-50, 50)),
       shift=st.tuples(st.integers(-80, 80), st.integers(-80, 80)), seed=st.integers(0, 10_000))
def test_2d_rope_scores_depend_only_on_the_relative_offset(offset, shift, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(2, 1, 1, 1, 8)).astype("float32")

    def score(p_q, p_k):
        rq = keras.ops.convert_to_numpy(apply_rotary_2d(q, np.array([[p_q]], "float32")))
        rk = keras.ops.convert_to_numpy(apply_rotary_2d(k, np.array([[p_k]], "float32")))
        return float((rq * rk).sum())

    base = np.array([3.0, 7.0])
    reference = score(base, base + offset)
    moved = score(base + shift, base + shift + np.array(offset))
    assert moved == pytest.approx(reference, abs=1e-3)


def test_2d_rope_distinguishes_rows_from_columns():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 1, 1, 1, 8)).astype("float32")
    rotate = lambda x, p: keras.ops.convert_to_numpy(apply_rotary_2d(x, np.array([[p]], "float32")))  # noqa
    along_x = float((rotate(q, [0, 0]) * rotate(k, [2, 0])).sum())
    along_y = float((rotate(q, [0, 0]) * rotate(k, [0, 2])).sum())
    assert abs(along_x - along_y) > 1e-3


def test_entropy_invariant_scale_is_the_usual_scale_at_512_keys():
    assert float(entropy_invariant_factor(512)) == pytest.approx(1.0)
    assert float(entropy_invariant_factor(1024)) == pytest.approx(10 / 9)
    assert float(entropy_invariant_factor(4)) == float(entropy_invariant_factor(16))
    x = np.random.default_rng(0).normal(size=(1, 512, 16)).astype("float32")
    layers = [MultiHeadAttention(2, 8, attention_scale=scale, name="a")
              for scale in ("sqrt", "entropy_invariant")]
    layers[0].build(x.shape)
    layers[1].build(x.shape)
    layers[1].set_weights(layers[0].get_weights())
    mask = np.ones((1, 1, 1, 512), bool)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layers[1](x, attention_mask=mask)),
                               keras.ops.convert_to_numpy(layers[0](x, attention_mask=mask)),
                               atol=1e-5)


def test_realformer_first_layer_equals_plain_attention():
    config = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=20, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = sharpen(build_transformer_model(config, model="roformer"))
    real = sharpen(build_transformer_model(config, model="roformer",
                                           residual_attention_scores=True))
    inputs = list(random_batch(30, [9, 5], seed=1))

    def layer_outputs(model):
        names = [f"Transformer-{i}-FeedForward-Norm" for i in range(2)]
        probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
        return probe.predict(inputs, verbose=0)

    (plain_0, plain_1), (real_0, real_1) = layer_outputs(plain), layer_outputs(real)
    np.testing.assert_allclose(real_0, plain_0, atol=1e-6)
    assert np.abs(real_1 - plain_1).max() > 1e-3


@pytest.mark.parametrize("options", sorted(OPTION_SETS))
def test_models_with_options_round_trip_through_keras_files(options, tmp_path):
    config = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=20)
    model = build_transformer_model(config, model="roformer", with_mlm=True,
                                    **OPTION_SETS[options])
    inputs = list(random_batch(30, [9, 5], seed=1))
    if OPTION_SETS[options].get("rope") == "2d":
        inputs.append(grid_positions(2, 9, 1))
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.predict(inputs, verbose=0),
                                  model.predict(inputs, verbose=0))


def test_bad_options_give_clear_errors(tmp_path):
    config = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=20)
    with pytest.raises(ConfigError, match="'rope' must be one of"):
        build_transformer_model(config, rope="3d")
    with pytest.raises(ConfigError, match="'attention_scale' must be one of"):
        build_transformer_model(config, attention_scale="log")
    with pytest.raises(ConfigError, match="'talking_heads' must be true or false"):
        build_transformer_model(config, talking_heads="yes")
    with pytest.raises(ValueError, match="key size divisible by 4, got 6"):
        build_transformer_model(dict(config, hidden_size=12), rope="2d")
    layer = MultiHeadAttention(2, 8, rope="2d", name="needs_positions")
    with pytest.raises(ValueError, match="rope='2d' needs positions"):
        layer(np.zeros((1, 3, 16), "float32"))
    built = build_transformer_model(config, model="roformer", talking_heads=True,
                                    return_keras_model=False)
    with pytest.raises(CheckpointError, match=r"cannot express \['talking_heads'\]"):
        built.export_huggingface(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="has no place for"):
        built.save_google_checkpoint(str(tmp_path / "ckpt"))


@pytest.mark.parametrize("layer_class, options", [
    (MultiHeadAttention, dict(heads=2, head_size=4, rope="1d")),
    (GatedAttentionUnit, dict(units=8, key_size=4)),
], ids=["multi_head", "gau"])
def test_a_layer_stepped_through_its_cache_equals_its_causal_call(layer_class, options):
    """A user's own decoder: a cache in ``cache_shapes()``' layout (``None`` is the slot axis),
    fed one token per call, gives the causal call's outputs and comes back in that layout."""
    length, slots = 5, 8
    x = np.random.default_rng(0).normal(size=(1, length, 6)).astype("float32")
    layer = layer_class(**options)
    causal = np.tril(np.ones((length, length), bool))[None, None]
    full = keras.ops.convert_to_numpy(layer(x, attention_mask=causal))
    shapes = [(1,) + tuple(slots if size is None else size for size in shape)
              for shape in layer.cache_shapes()]
    keys, values = (np.zeros(shape, "float32") for shape in shapes)
    for index in range(length):
        allowed = (np.arange(slots) <= index)[None, None, None]
        step, keys, values = layer(x[:, index:index + 1], attention_mask=allowed,
                                   cache=(keys, values), cache_index=index,
                                   positions=np.array([[index]]))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(step)[:, 0], full[:, index],
                                   atol=1e-5)
    assert [tuple(keys.shape), tuple(values.shape)] == shapes
    slot_axis = 1 + layer.cache_shapes()[0].index(None)
    unwritten = np.take(keras.ops.convert_to_numpy(keys), range(length, slots), axis=slot_axis)
    assert unwritten.shape[slot_axis] == slots - length and not np.any(unwritten)
