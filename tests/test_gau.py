"""Gated Attention Unit and FLASH mixed-chunk attention against NumPy transcriptions of the
formulas, and their defining properties."""

import keras
import numpy as np
import pytest

from bert4x.layers.gau import GatedAttentionUnit
from tests.numpy_reference import numpy_flash, numpy_gau


def weights_of(layer):
    return {v.path.split("/", 1)[1]: v.numpy().astype("float64") for v in layer.weights}


def randomised(layer, shape, seed=0):
    layer.build(shape)
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32")
                        + (1.0 if variable.path.endswith("gamma") else 0.0))
    return layer


LENGTHS = [11, 6]


def batch(hidden=12, seed=1):
    x = np.random.default_rng(seed).normal(size=(len(LENGTHS), max(LENGTHS), hidden))
    valid = np.arange(max(LENGTHS))[None] < np.array(LENGTHS)[:, None]
    return x.astype("float32"), valid


@pytest.mark.parametrize("normalization,entropy", [("softmax", False), ("softmax", True),
                                                    ("relu2", False)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_quadratic_gau_matches_numpy(normalization, entropy, causal, use_bias):
    x, valid = batch()
    layer = randomised(GatedAttentionUnit(
        10, key_size=8, normalization=normalization, use_bias=use_bias,
        attention_scale="entropy_invariant" if entropy else "sqrt"), x.shape)
    n = x.shape[1]
    mask = valid[:, None, None, :] & (np.tril(np.ones((n, n), bool)) if causal else True)
    out = keras.ops.convert_to_numpy(layer(x, attention_mask=mask))
    w = weights_of(layer)
    for row, length in enumerate(LENGTHS):
        allowed = mask[row, 0, :length, :length]
        expected = numpy_gau(x[row, :length].astype("float64"), w, 10, 8, allowed,
                             normalization, entropy)
        np.testing.assert_allclose(out[row, :length], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 4, 11, 16])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_mixed_chunk_matches_numpy(chunk, causal):
    x, valid = batch()
    layer = randomised(GatedAttentionUnit(10, key_size=8, normalization="relu2",
                                          chunk_size=chunk, causal=causal), x.shape)
    out = keras.ops.convert_to_numpy(layer(x, key_mask=valid))
    w = weights_of(layer)
    for row, length in enumerate(LENGTHS):
        expected = numpy_flash(x[row, :length].astype("float64"), w, 10, 8, length, chunk,
                               causal)
        np.testing.assert_allclose(out[row, :length], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_with_one_chunk_is_the_quadratic_unit(causal):
    x, valid = batch()
    n = x.shape[1]
    flash = randomised(GatedAttentionUnit(10, key_size=8, normalization="relu2",
                                          chunk_size=n + 5, causal=causal), x.shape)
    quadratic = GatedAttentionUnit(10, key_size=8, normalization="relu2")
    quadratic.build(x.shape)
    values = {v.path.split("/", 1)[1]: v.numpy() for v in flash.weights}
    for variable in quadratic.weights:
        variable.assign(values[variable.path.split("/", 1)[1]])
    mask = valid[:, None, None, :] & (np.tril(np.ones((n, n), bool)) if causal else True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flash(x, key_mask=valid)),
                               keras.ops.convert_to_numpy(quadratic(x, attention_mask=mask)),
                               atol=1e-5)


def test_causal_flash_never_looks_ahead():
    x, _ = batch(seed=3)
    layer = randomised(GatedAttentionUnit(10, key_size=8, normalization="relu2", chunk_size=3,
                                          causal=True), x.shape)
    before = keras.ops.convert_to_numpy(layer(x))
    changed = x.copy()
    changed[:, 7:] = np.random.default_rng(9).normal(size=changed[:, 7:].shape)
    after = keras.ops.convert_to_numpy(layer(changed))
    np.testing.assert_allclose(after[:, :7], before[:, :7], atol=1e-6)
    assert np.abs(after[:, 7:] - before[:, 7:]).max() > 1e-3
    # Fewer tokens (a shorter prefix) give the same outputs on that prefix.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x[:, :5])), before[:, :5], atol=1e-5)


def test_gau_output_starts_much_smaller_than_its_input():
    """'GAU needs no warmup': with Xavier init a unit's output is small next to its input, so a
    post-norm stack starts close to the identity. At the GAU-α sizes (hidden 768, e 1536,
    s 128, n 128) we measure |GAU(x)|/|x| = 0.037 against 0.92 for multi-head attention with
    the same init: more than an order of magnitude below the input, 25 times below attention."""
    from bert4x.layers import MultiHeadAttention

    x = np.random.default_rng(0).normal(size=(2, 128, 768)).astype("float32")
    keras.utils.set_random_seed(0)
    gau = GatedAttentionUnit(1536, key_size=128, use_bias=False, normalization="softmax",
                             attention_scale="entropy_invariant")
    attention = MultiHeadAttention(12, 64, use_bias=False)
    gau_ratio = float(np.linalg.norm(keras.ops.convert_to_numpy(gau(x))) / np.linalg.norm(x))
    attention_ratio = float(np.linalg.norm(keras.ops.convert_to_numpy(attention(x))) / np.linalg.norm(x))
    print(f"|GAU(x)|/|x| = {gau_ratio:.3f}, multi-head attention {attention_ratio:.2f}")
    assert gau_ratio < 0.05, gau_ratio
    assert gau_ratio < attention_ratio / 10, (gau_ratio, attention_ratio)


def test_gau_layers_round_trip_through_keras_files(tmp_path):
    inputs = keras.Input((None, 12))
    mask = keras.Input((None,), dtype="bool")
    y = GatedAttentionUnit(10, key_size=8, normalization="relu2", chunk_size=4,
                           name="flash")(inputs, key_mask=mask)
    y = GatedAttentionUnit(10, key_size=8, attention_scale="entropy_invariant", name="gau")(y)
    model = keras.Model([inputs, mask], y)
    x, valid = batch()
    model.save(tmp_path / "gau.keras")
    restored = keras.models.load_model(tmp_path / "gau.keras")
    np.testing.assert_array_equal(restored.predict([x, valid], verbose=0),
                                  model.predict([x, valid], verbose=0))


def test_gau_bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match="needs normalization='relu2'"):
        GatedAttentionUnit(10, key_size=8, normalization="softmax", chunk_size=4)
    with pytest.raises(ValueError, match="normalization must be one of"):
        GatedAttentionUnit(10, key_size=8, normalization="sigmoid")
    with pytest.raises(ValueError, match="even key_size"):
        GatedAttentionUnit(10, key_size=7)
