"""Layer-level checks for behaviour the model tests do not reach."""

import keras
import numpy as np

from bert4x.layers import LayerNormalization


def plain_norm(x, gamma, beta, eps=1e-12):
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def test_conditional_norm_starts_as_plain_norm_and_shifts_gamma_beta_by_the_condition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 8)).astype("float32")
    condition = rng.normal(size=(3, 4)).astype("float32")
    layer = LayerNormalization(conditional=True, condition_hidden_units=6)
    out = keras.ops.convert_to_numpy(layer([x, condition]))
    np.testing.assert_allclose(out, plain_norm(x, 1.0, 0.0), atol=1e-5)

    hidden = rng.normal(size=(4, 6)).astype("float32")
    to_gamma, to_beta = rng.normal(size=(2, 6, 8)).astype("float32")
    layer.condition_dense.kernel.assign(hidden)
    layer.gamma_dense.kernel.assign(to_gamma)
    layer.beta_dense.kernel.assign(to_beta)
    c = condition @ hidden
    expected = plain_norm(x, 1.0 + (c @ to_gamma)[:, None], (c @ to_beta)[:, None])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer([x, condition])), expected, atol=1e-4)


def test_conditional_norm_round_trips_through_a_keras_file(tmp_path):
    x_in, c_in = keras.Input((None, 8)), keras.Input((4,))
    model = keras.Model([x_in, c_in], LayerNormalization(conditional=True)([x_in, c_in]))
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    inputs = [rng.normal(size=(2, 3, 8)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")]
    model.save(tmp_path / "n.keras")
    loaded = keras.models.load_model(tmp_path / "n.keras")
    np.testing.assert_array_equal(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0))
