"""Amos against a NumPy transcription of its update, its scale invariance, its memory, and
that it trains, saves and resumes like the other optimizers."""

import math

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.training import build_optimizer
from bert4x.training.amos import Amos, model_oriented_scale


def numpy_amos(theta, gradients, eta, xi, beta=0.999, zeta=0.25, decayed=True, momentum=None):
    """The Amos update written out in float64: v and b per output unit of a matrix, one for a
    vector; the ½·γ·θ decay only where ``decayed``."""
    theta = np.array(theta, dtype="float64")
    axes = tuple(range(theta.ndim - 1)) if theta.ndim >= 2 else (0,)
    v = b = 0.0
    average = np.zeros_like(theta)
    for step, g in enumerate(gradients, start=1):
        g2 = np.mean(np.square(g), axis=axes, keepdims=True)
        v = beta * v + (1 - beta) * g2
        r = (1 - beta**step) / v
        gamma = xi**2 * r * g2 / np.sqrt(1 + zeta * np.sqrt(xi) * b)
        alpha = xi * eta
        update = alpha * np.sqrt(r) * g + (0.5 * gamma * theta if decayed else 0.0)
        update = update / (1 + zeta * np.sqrt(alpha) * b)
        b = b + gamma * (1 + b)
        if momentum:
            average = momentum * average + (1 - momentum) * update
            update = average
        theta = theta - update
    return theta


@pytest.mark.parametrize("name,shape,momentum", [
    ("kernel", (6, 4), None), ("kernel", (3, 2, 5), 0.9), ("bias", (7,), None),
    ("gamma", (5,), 0.5),
])
def test_amos_follows_its_formula_for_matrices_and_vectors(name, shape, momentum):
    rng = np.random.default_rng(0)
    start = rng.normal(0, 0.5, shape).astype("float32")
    # Gradients of changing size, so that v, γ and both decay factors all move.
    gradients = [(rng.normal(size=shape) * (1 + 3 * k)).astype("float32") for k in range(8)]
    variable = keras.Variable(start, name=name)
    optimizer = Amos(learning_rate=0.05, momentum=momentum)
    for gradient in gradients:
        optimizer.apply([gradient], [variable])
    eta = model_oriented_scale(variable)
    assert eta == (0.5 if len(shape) == 1 else 1 / math.sqrt(math.prod(shape[:-1])))
    expected = numpy_amos(start, gradients, eta, xi=0.05, decayed=name == "kernel",
                          momentum=momentum)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-5,
                               atol=1e-6)
    # The decay was not idle: without it the kernel would have ended elsewhere.
    if name == "kernel":
        undecayed = numpy_amos(start, gradients, eta, xi=0.05, decayed=False, momentum=momentum)
        assert np.abs(undecayed - expected).max() > 1e-4


def test_amos_steps_do_not_depend_on_the_gradients_scale():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(8, 3)).astype("float32")
    gradients = [rng.normal(size=(8, 3)).astype("float32") for _ in range(5)]
    ends = []
    for scale in (1.0, 1000.0):
        variable = keras.Variable(start, name="kernel")
        optimizer = Amos(learning_rate=0.05)
        for gradient in gradients:
            optimizer.apply([gradient * scale], [variable])
        ends.append(keras.ops.convert_to_numpy(variable))
    np.testing.assert_allclose(ends[0], ends[1], rtol=1e-5, atol=1e-6)


TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def classifier():
    keras.utils.set_random_seed(0)
    encoder = build_transformer_model(TINY, model="bert", with_pool=True)
    output = keras.layers.Dense(2, activation="softmax")(encoder.output)
    return keras.Model(encoder.inputs, output)


def toy_task(rows, seed=0):
    """Token 7 somewhere in the sequence means class 1."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, 60, (rows, 12))
    labels = rng.integers(0, 2, rows)
    ids[labels == 1, rng.integers(1, 12, (labels == 1).sum())] = 7
    return [ids, np.zeros_like(ids)], labels


def test_amos_trains_a_classifier_keeps_little_state_and_saves(tmp_path):
    model = classifier()
    # ξ = 0.005: a 32-wide kernel's first steps (ξ/√32 ≈ 0.0009) about Adam's usual 1e-3.
    model.compile(optimizer=build_optimizer(0.005, algorithm="amos"),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    inputs, labels = toy_task(128)
    history = model.fit(inputs, labels, batch_size=16, epochs=10, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] == 1.0
    # v and b: one value per output unit of each matrix, one per vector, against AdamW's two
    # values per weight.
    state = sum(math.prod(v.shape) for v in model.optimizer.variables
                if v.name.endswith(("_v", "_b")))
    weights = sum(math.prod(v.shape) for v in model.trainable_variables)
    assert state < 0.05 * weights
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, Amos)
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved),
                                      keras.ops.convert_to_numpy(restored))


def test_amos_options_are_checked_and_eta_can_be_given_by_path():
    with pytest.raises(ValueError, match="beta must be in"):
        Amos(beta=1.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        Amos(momentum=1.5)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        build_optimizer(0.01, algorithm="lion")
    kernel, bias = keras.Variable(np.ones((4, 2)), name="kernel"), keras.Variable(
        np.ones(2), name="bias")
    optimizer = Amos(eta={"kernel": 0.1})
    optimizer.build([kernel, bias])
    assert optimizer._etas == [0.1, 0.5]
    by_function = Amos(eta=lambda variable: 0.2)
    with pytest.raises(ValueError, match="build it"):
        by_function.get_config()
    by_function.build([kernel, bias])
    assert set(by_function.get_config()["eta"].values()) == {0.2}
