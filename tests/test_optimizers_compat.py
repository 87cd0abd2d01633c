"""bert4x.optimizers: bert4keras' Adam and ``extend_with_*`` factories on Keras 3, trained side
by side with bert4keras 0.11.5 on the same regression problem, or against the definition where
Keras' built-in piece differs from bert4keras by design (EMA start, accumulation, lookahead)."""

import keras
import numpy as np
import pytest

from bert4x import optimizers
from tests.references import bert4keras_available, run_bert4keras

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 3)).astype("float32")
Y = RNG.normal(size=(8, 2)).astype("float32")
W0 = (RNG.normal(size=(3, 2)) * 0.1).astype("float32")
B0 = np.full(2, 0.3, "float32")


def train(make_optimizer, epochs=6, batch_size=8):
    """Weights of Dense(3 -> 2) after full-batch MSE training (one step per epoch)."""
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, name="Dense-Head")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([W0, B0])
    optimizer = make_optimizer()
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(X, Y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False)
    return [np.array(w) for w in dense.get_weights()], optimizer, dense


#: name -> (bert4keras expression, ours); both sides train the same model for 6 steps.
CASES = {
    "adam": ("Adam(learning_rate=0.01)", lambda: optimizers.Adam(learning_rate=0.01)),
    "adam_no_bias_correction": (
        "Adam(learning_rate=0.01, bias_correction=False)",
        lambda: optimizers.Adam(learning_rate=0.01, bias_correction=False)),
    "adamw": (
        "extend_with_weight_decay(Adam)(learning_rate=0.01, weight_decay_rate=0.1, "
        "exclude_from_weight_decay=['bias'])",
        lambda: optimizers.extend_with_weight_decay(optimizers.Adam)(
            learning_rate=0.01, weight_decay_rate=0.1, exclude_from_weight_decay=["bias"])),
    "piecewise_linear_lr": (
        "extend_with_piecewise_linear_lr(Adam)(learning_rate=0.01, lr_schedule={2: 1, 4: 0.1})",
        lambda: optimizers.extend_with_piecewise_linear_lr(optimizers.Adam)(
            learning_rate=0.01, lr_schedule={2: 1, 4: 0.1})),
    "layer_adaptation": (
        "extend_with_layer_adaptation(Adam)(learning_rate=0.01, "
        "exclude_from_layer_adaptation=['bias'])",
        lambda: optimizers.extend_with_layer_adaptation(optimizers.Adam)(
            learning_rate=0.01, exclude_from_layer_adaptation=["bias"])),
}


@pytest.mark.skipif(not bert4keras_available(), reason="bert4keras 0.11.5 + tf-keras not installed")
def test_adam_and_factories_train_like_bert4keras():
    program = """
import numpy as np
from bert4keras.backend import keras
# bert4keras' optimizers derive from OptimizerV2, which tf-keras 2.21 keeps as "legacy".
keras.optimizers.Optimizer = keras.optimizers.legacy.Optimizer
from bert4keras.optimizers import *
X, Y = np.array(data['X'], 'float32'), np.array(data['Y'], 'float32')
result = {}
for name, expression in data['cases'].items():
    inputs = keras.layers.Input((3,))
    dense = keras.layers.Dense(2, name='Dense-Head')
    model = keras.models.Model(inputs, dense(inputs))
    dense.set_weights([np.array(data['W0'], 'float32'), np.array(data['B0'], 'float32')])
    model.compile(optimizer=eval(expression), loss='mse')
    model.fit(X, Y, batch_size=8, epochs=6, verbose=0, shuffle=False)
    result[name] = [w.tolist() for w in dense.get_weights()]
"""
    reference = run_bert4keras(program, dict(X=X.tolist(), Y=Y.tolist(), W0=W0.tolist(),
                                             B0=B0.tolist(),
                                             cases={k: v[0] for k, v in CASES.items()}))
    for name, (_, make) in CASES.items():
        weights, _, _ = train(make)
        assert np.abs(weights[0] - W0).max() > 1e-3, name  # it trained
        for mine, theirs in zip(weights, reference[name]):
            np.testing.assert_allclose(mine, theirs, atol=3e-6, err_msg=name)
    adamw, _, _ = train(lambda: optimizers.AdamW(learning_rate=0.01, weight_decay_rate=0.1,
                                                 exclude_from_weight_decay=["bias"]))
    np.testing.assert_allclose(adamw[0], reference["adamw"][0], atol=3e-6)


def test_exponential_moving_average_swaps_averages_in_and_out():
    momentum = 0.5
    steps = []
    for epochs in range(1, 5):  # the trained weights after 1..4 steps
        steps.append(train(lambda: optimizers.Adam(0.01), epochs=epochs)[0][0])
    average = steps[0]  # Keras' average starts from the first trained weights
    for weights in steps[1:]:
        average = momentum * average + (1 - momentum) * weights
    AdamEMA = optimizers.extend_with_exponential_moving_average(optimizers.Adam,
                                                               name="AdamEMA")
    assert AdamEMA.__name__ == "AdamEMA"
    weights, optimizer, dense = train(lambda: AdamEMA(learning_rate=0.01, ema_momentum=momentum),
                                      epochs=4)
    np.testing.assert_allclose(weights[0], steps[-1], atol=1e-6)  # fit kept the trained weights
    optimizer.apply_ema_weights()
    np.testing.assert_allclose(dense.get_weights()[0], average, atol=1e-6)
    optimizer.reset_old_weights()
    np.testing.assert_allclose(dense.get_weights()[0], steps[-1], atol=1e-6)
    with pytest.raises(RuntimeError, match="without apply_ema_weights"):
        optimizer.reset_old_weights()
    with pytest.raises(ValueError, match="bias_correction=False"):
        optimizer.apply_ema_weights(bias_correction=False)



def test_averages_survive_predict_and_save_while_applied(tmp_path):
    """bert4keras' evaluators apply the averages, predict, save and reset inside fit. On JAX,
    predict and every train step donate (delete) the buffers of the model's variables, so the
    averages must be copied in, not shared: the relation-extraction example failed with
    "Array has been deleted" at its first epoch end."""
    AdamEMA = optimizers.extend_with_exponential_moving_average(optimizers.Adam)
    _, optimizer, dense = train(lambda: AdamEMA(learning_rate=0.01, ema_momentum=0.9), epochs=3)
    trained = [np.array(w) for w in dense.get_weights()]
    averages = [keras.ops.convert_to_numpy(a) for a in optimizer._model_variables_moving_average]
    optimizer.apply_ema_weights()
    head = keras.Model(dense.input, dense.output)
    predicted = head.predict(X, verbose=0)
    np.testing.assert_allclose(predicted, X @ averages[0] + averages[1], atol=1e-5)
    head.save_weights(str(tmp_path / "best.weights.h5"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        optimizer._model_variables_moving_average[0]), averages[0], atol=1e-7)
    optimizer.reset_old_weights()
    for weight, expected in zip(dense.get_weights(), trained):
        np.testing.assert_allclose(weight, expected, atol=1e-7)
    head.load_weights(str(tmp_path / "best.weights.h5"))
    np.testing.assert_allclose(dense.get_weights()[0], averages[0], atol=1e-7)

def test_gradient_accumulation_equals_the_full_batch_step():
    full, _, _ = train(lambda: optimizers.Adam(0.01), epochs=3, batch_size=8)
    Accumulating = optimizers.extend_with_gradient_accumulation(optimizers.Adam)
    halves, optimizer, _ = train(lambda: Accumulating(learning_rate=0.01, grad_accum_steps=2),
                                 epochs=3, batch_size=4)
    for mine, expected in zip(halves, full):
        np.testing.assert_allclose(mine, expected, atol=1e-6)
    assert int(optimizer.iterations) == 3


def test_lookahead_moves_slow_weights_towards_the_fast_ones():
    fast, _, _ = train(lambda: optimizers.Adam(0.01), epochs=3)
    Lookahead = optimizers.extend_with_lookahead(optimizers.Adam)
    weights, _, _ = train(lambda: Lookahead(learning_rate=0.01, steps_per_slow_update=3,
                                            slow_step_size=0.5), epochs=3)
    np.testing.assert_allclose(weights[0], W0 + 0.5 * (fast[0] - W0), atol=1e-6)
    np.testing.assert_allclose(weights[1], B0 + 0.5 * (fast[1] - B0), atol=1e-6)
    before_sync, _, _ = train(lambda: Lookahead(learning_rate=0.01, steps_per_slow_update=3),
                              epochs=2)
    two_steps, _, _ = train(lambda: optimizers.Adam(0.01), epochs=2)
    np.testing.assert_allclose(before_sync[0], two_steps[0], atol=1e-6)


def test_piecewise_linear_matches_its_definition():
    schedule = {1000: 1, 2000: 0.1}
    steps = np.array([0, 500, 1000, 1500, 2000, 5000], "float32")
    values = keras.ops.convert_to_numpy(optimizers.piecewise_linear(steps, schedule))
    np.testing.assert_allclose(values, [0, 0.5, 1, 0.55, 0.1, 0.1], rtol=1e-6)
    constant = optimizers.piecewise_linear(steps, {0: 1})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(constant), np.ones(6))


def test_bad_optimizer_arguments_are_refused():
    with pytest.raises(ValueError, match="learning_rate must be a finite number above 0"):
        optimizers.Adam(learning_rate=-1.0)
    with pytest.raises(ValueError, match="grad_accum_steps must be at least 1"):
        optimizers.extend_with_gradient_accumulation(optimizers.Adam)(grad_accum_steps=0)
    with pytest.raises(ValueError, match="lr_schedule is empty"):
        optimizers.extend_with_piecewise_linear_lr(optimizers.Adam)(lr_schedule={})
    with pytest.raises(ValueError, match="steps_per_slow_update"):
        optimizers.extend_with_lookahead(optimizers.Adam)(steps_per_slow_update=0)
