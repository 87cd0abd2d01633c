"""GlobalPointer, Efficient GlobalPointer and the sparse multilabel loss against NumPy."""

import keras
import numpy as np
import pytest

from bert4x.layers import (EfficientGlobalPointer, GlobalPointer, LayerNormalization,
                           sparse_multilabel_crossentropy)
from tests.numpy_reference import rope
from tests.test_layers import plain_norm

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 6, 8)).astype("float32")
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)


def randomise(layer):
    layer(X, mask=MASK)
    for variable in layer.weights:
        variable.assign(RNG.normal(0, 0.3, variable.shape).astype("float32"))
    return layer


def allowed_pairs(tril):
    pair = MASK[:, None, :, None] & MASK[:, None, None, :]
    if tril:
        pair = pair & (np.arange(6)[:, None] <= np.arange(6)[None, :])
    return pair


@pytest.mark.parametrize("tril", [True, False])
def test_global_pointer_equals_numpy(tril):
    layer = randomise(GlobalPointer(heads=3, head_size=4, tril_mask=tril))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.dense.weights)
    projected = (X @ kernel + bias).reshape(2, 6, 3, 8)
    expected = np.stack([np.einsum("mhd,nhd->hmn", rope(p[..., :4]), rope(p[..., 4:]))
                         for p in projected]) / 2.0
    out = keras.ops.convert_to_numpy(layer(X, mask=MASK))
    allowed = allowed_pairs(tril)
    np.testing.assert_allclose(out[np.broadcast_to(allowed, out.shape)],
                               expected[np.broadcast_to(allowed, out.shape)], atol=1e-5)
    assert np.all(out[~np.broadcast_to(allowed, out.shape)] < -1e11)


def test_efficient_global_pointer_equals_numpy():
    layer = randomise(EfficientGlobalPointer(heads=3, head_size=4))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.dense.weights)
    bias_kernel, bias_bias = (keras.ops.convert_to_numpy(w) for w in layer.bias_dense.weights)
    projected = X @ kernel + bias  # [b, n, 8]
    q = np.stack([rope(p[:, None, :4])[:, 0] for p in projected])
    k = np.stack([rope(p[:, None, 4:])[:, 0] for p in projected])
    shared = np.einsum("bmd,bnd->bmn", q, k) / 2.0
    biases = (projected @ bias_kernel + bias_bias) / 2  # [b, n, 2h]: starts, then ends
    expected = (shared[:, None] + biases[..., :3].transpose(0, 2, 1)[..., :, None]
                + biases[..., 3:].transpose(0, 2, 1)[..., None, :])
    out = keras.ops.convert_to_numpy(layer(X, mask=MASK))
    allowed = np.broadcast_to(allowed_pairs(True), out.shape)
    np.testing.assert_allclose(out[allowed], expected[allowed], atol=1e-5)


def test_conditional_norm_with_a_zero_condition_is_plain_norm():
    layer = LayerNormalization(conditional=True, condition_hidden_units=5)
    layer([X, np.zeros((2, 3), "float32")])
    for variable in layer.weights:
        variable.assign(RNG.normal(size=variable.shape).astype("float32"))
    gamma, beta = keras.ops.convert_to_numpy(layer.gamma), keras.ops.convert_to_numpy(layer.beta)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer([X, np.zeros((2, 3), "float32")])),
                               plain_norm(X, gamma, beta), atol=1e-4)


def dense_loss(logits, positive_sets):
    """log(1 + Σ_neg e^s) + log(1 + Σ_pos e^{−s}), straight from the definition."""
    losses = []
    for row, positives in zip(logits, positive_sets):
        negatives = [c for c in range(len(row)) if c not in positives]
        losses.append(np.log1p(np.exp(row[negatives]).sum())
                      + np.log1p(np.exp(-row[list(positives)]).sum()))
    return np.array(losses)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_multilabel_loss_equals_its_formula(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(5, 30)).astype("float32")
    positive_sets = [sorted(rng.choice(np.arange(1, 30), rng.integers(0, 5), replace=False))
                     for _ in range(5)]
    padded = np.zeros((5, 4), "int32")
    for row, positives in enumerate(positive_sets):
        padded[row, :len(positives)] = positives
    ours = keras.ops.convert_to_numpy(sparse_multilabel_crossentropy(padded, logits, mask_zero=True))
    np.testing.assert_allclose(ours, dense_loss(logits.astype("float64"), positive_sets),
                               rtol=1e-4, atol=1e-4)
    full = [p for p in positive_sets if len(p) == 4] or [list(range(1, 5))]
    unpadded = np.array(full[:1], "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(sparse_multilabel_crossentropy(unpadded, logits[:1], mask_zero=False)),
        dense_loss(logits[:1].astype("float64"), full[:1]), rtol=1e-4, atol=1e-4)
