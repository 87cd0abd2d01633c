"""bert4x.backend: bert4keras' backend names (``K`` and its helpers) give what bert4keras 0.11.5
gives on the same random inputs."""

import keras
import numpy as np
import pytest

from bert4x import backend, build_transformer_model
from bert4x.backend import K
from tests.references import bert4keras_available, run_bert4keras

pytestmark = pytest.mark.skipif(not bert4keras_available(),
                                reason="bert4keras 0.11.5 + tf-keras not installed")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4)).astype("float32")
Y = RNG.normal(size=(2, 3, 4)).astype("float32")
P = RNG.uniform(0.05, 0.95, size=(2, 3, 4)).astype("float32")
LABELS = RNG.integers(0, 4, size=(2, 3)).astype("int32")
ONE_HOT = np.eye(4, dtype="float32")[LABELS]
# (function, positional arguments, keyword arguments): Keras 2 backend calls scripts make.
K_CALLS = [
    ("sum", [X], {}), ("sum", [X], {"axis": 1}), ("sum", [X], {"axis": -1, "keepdims": True}),
    ("mean", [X], {"axis": [1, 2]}), ("max", [X], {"axis": 0}), ("min", [X], {}),
    ("prod", [X], {"axis": 2}), ("logsumexp", [X], {"axis": -1}), ("argmax", [X], {}),
    ("cast", [LABELS, "float32"], {}), ("reshape", [X, (2, 12)], {}),
    ("concatenate", [[X, Y]], {"axis": 1}), ("stack", [[X, Y]], {"axis": 1}),
    ("expand_dims", [X], {"axis": 1}), ("permute_dimensions", [X, (0, 2, 1)], {}),
    ("repeat_elements", [X, 2, 1], {}), ("tile", [X, (1, 2, 1)], {}),
    ("zeros_like", [X], {}), ("ones_like", [X], {}), ("one_hot", [LABELS, 4], {}),
    ("equal", [LABELS, 2], {}), ("not_equal", [LABELS, 2], {}), ("greater", [X, Y], {}),
    ("less_equal", [X, Y], {}), ("maximum", [X, Y], {}), ("minimum", [X, Y], {}),
    ("clip", [X, -0.5, 0.5], {}), ("switch", [X > 0, X, Y], {}), ("abs", [X], {}),
    ("exp", [X], {}), ("log", [P], {}), ("sqrt", [P], {}), ("square", [X], {}),
    ("pow", [P, 3], {}), ("tanh", [X], {}), ("sigmoid", [X], {}), ("relu", [X], {}),
    ("softmax", [X], {}), ("softmax", [X], {"axis": 1}),
    ("batch_dot", [X, np.transpose(Y, (0, 2, 1))], {}),
    ("batch_dot", [X, Y], {"axes": (2, 2)}),
    ("sparse_categorical_crossentropy", [LABELS, X], {"from_logits": True}),
    ("sparse_categorical_crossentropy", [LABELS, np.exp(X) / np.exp(X).sum(-1, keepdims=True)],
     {}),
    ("categorical_crossentropy", [ONE_HOT, X], {"from_logits": True}),
    ("binary_crossentropy", [np.round(P), X], {"from_logits": True}),
    ("binary_crossentropy", [np.round(P), P], {}),
]


def encoded(value):
    """An argument as JSON that the bert4keras side turns back into the same Python value."""
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, list):
        return {"list": [encoded(v) for v in value]}
    if isinstance(value, tuple):
        return {"tuple": list(value)}
    return {"value": value}


@pytest.fixture(scope="module")
def reference():
    """Every bert4keras result this file compares with, from one subprocess."""
    calls = [(name, [encoded(a) for a in args],
              {k: encoded(v) for k, v in kwargs.items()}) for name, args, kwargs in K_CALLS]
    mask = [[1, 1, 0], [1, 0, 0]]
    positives = [[[1, 3], [0, 0], [2, 0]], [[3, 0], [1, 2], [0, 0]]]
    program = """
import numpy as np
import tensorflow as tf
from bert4keras import backend as b
from bert4keras.backend import K
def decoded(item):
    if 'array' in item:
        return tf.constant(np.array(item['array'], item['dtype']))
    if 'list' in item:
        return [decoded(v) for v in item['list']]
    if 'tuple' in item:
        return tuple(item['tuple'])
    return item['value']
def value(t):
    return np.asarray(t).astype('float64').tolist()
ks = [value(getattr(K, name)(*map(decoded, args), **{k: decoded(v) for k, v in kwargs.items()}))
      for name, args, kwargs in data['calls']]
x, y = tf.constant(data['x'], tf.float32), tf.constant(data['y'], tf.float32)
mask = tf.constant(data['mask'], tf.float32)
square = tf.constant(data['square'], tf.float32)
result = dict(
    k=ks,
    masking=[value(b.sequence_masking(x, mask, -1e4, 1)),
             value(b.sequence_masking(square, mask, -np.inf, [1, 2])),
             value(b.sequence_masking(x, mask, 0, 1, bias=y))],
    gather=[value(b.batch_gather(x, tf.constant([[2, 0], [1, 1]]))),
            value(b.batch_gather(x[..., 0], tf.constant([[2, 0], [1, 1]])))],
    sinusoid=value(b.sinusoidal_embeddings(tf.range(6, dtype=tf.float32)[None], 8)),
    rope=[value(t) for t in b.apply_rotary_position_embeddings(
        b.sinusoidal_embeddings(tf.range(3, dtype=tf.float32)[None], 4), x[:, :, None], y[:, :, None])],
    multilabel=value(b.multilabel_categorical_crossentropy(tf.constant(data['targets'], tf.float32), x)),
    sparse=[value(b.sparse_multilabel_categorical_crossentropy(tf.constant(data['positives']), x, m))
            for m in (False, True)],
)
"""
    square = RNG.normal(size=(2, 3, 3)).astype("float32")
    targets = (RNG.random(size=X.shape) < 0.3).astype("float32")
    payload = dict(calls=calls, x=X.tolist(), y=Y.tolist(), mask=mask, square=square.tolist(),
                   targets=targets.tolist(), positives=positives)
    return dict(run_bert4keras(program, payload), square=square, mask=np.array(mask, "float32"),
                targets=targets, positives=np.array(positives))


def close(ours, theirs, atol=1e-5):
    ours = np.asarray(keras.ops.convert_to_numpy(ours), dtype="float64")
    np.testing.assert_allclose(ours, np.array(theirs, dtype="float64"), atol=atol, rtol=1e-5)


def test_k_functions_equal_keras_2s(reference):
    for (name, args, kwargs), theirs in zip(K_CALLS, reference["k"]):
        try:
            close(getattr(K, name)(*args, **kwargs), theirs)
        except AssertionError as error:
            raise AssertionError(f"K.{name}{tuple(kwargs.items())}: {error}") from None


def test_sequence_masking_equals_bert4keras(reference):
    mask, square = reference["mask"], reference["square"]
    ours = [backend.sequence_masking(X, mask, -1e4, 1),
            backend.sequence_masking(square, mask, "-inf", [1, 2]),
            backend.sequence_masking(X, mask, 0, 1, bias=Y)]
    for mine, theirs in zip(ours, reference["masking"]):
        close(mine, theirs)


def test_gather_sinusoids_and_rope_equal_bert4keras(reference):
    indices = np.array([[2, 0], [1, 1]])
    close(backend.batch_gather(X, indices), reference["gather"][0])
    close(backend.batch_gather(X[..., 0], indices), reference["gather"][1])
    close(backend.sinusoidal_embeddings(np.arange(6, dtype="float32")[None], 8),
          reference["sinusoid"])
    sinusoid = backend.sinusoidal_embeddings(np.arange(3, dtype="float32")[None], 4)
    for mine, theirs in zip(backend.apply_rotary_position_embeddings(
            sinusoid, X[:, :, None], Y[:, :, None]), reference["rope"]):
        close(mine, theirs)


def test_multilabel_losses_equal_bert4keras(reference):
    close(backend.multilabel_categorical_crossentropy(reference["targets"], X),
          reference["multilabel"])
    for mask_zero, theirs in zip((False, True), reference["sparse"]):
        close(backend.sparse_multilabel_categorical_crossentropy(reference["positives"], X,
                                                                  mask_zero), theirs)


def test_values_variables_and_what_keras_3_lacks():
    variable = keras.Variable(np.zeros(3, "float32"))
    K.set_value(variable, [1, 2, 3])
    assert K.eval(variable).tolist() == [1, 2, 3] and K.floatx() == "float32"
    assert K.int_shape(X) == (2, 3, 4) and K.dtype(LABELS) == "int32"
    for name in ("gradients", "function", "learning_phase"):
        with pytest.raises(NotImplementedError, match=f"K.{name} belongs to Keras 2's graph"):
            getattr(K, name)()
    with pytest.raises(ValueError, match="needs training="):
        K.in_train_phase(X, Y)
    assert K.in_train_phase(X, Y, training=False) is Y


def test_search_layer_walks_back_from_an_output():
    model = build_transformer_model(dict(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=24))
    found = backend.search_layer(model.output, "Embedding-Token")
    assert found is model.get_layer("Embedding-Token")
    assert backend.search_layer(model, "Transformer-0-FeedForward") is \
        model.get_layer("Transformer-0-FeedForward")
    assert backend.search_layer(model.output, "no-such-layer") is None


def test_set_gelu_switches_what_gelu_builds():
    from bert4x.layers import activations

    try:
        backend.set_gelu("tanh")
        assert activations.get("gelu") is activations.gelu_approximate
    finally:
        backend.set_gelu("erf")
    assert activations.get("gelu") is keras.activations.gelu
    with pytest.raises(ValueError, match="gelu version must be 'erf' or 'tanh'"):
        backend.set_gelu("relu")


def test_a_static_shape_product_can_shape_a_reshape_in_a_compiled_loss():
    """bert4keras' GlobalPointer loss flattens with ``K.prod(K.shape(y)[2:])``: under JAX's jit
    a traced product cannot be a shape, so the product of static sizes stays a Python int."""
    assert K.prod((2, 3, 4)) == 24 and isinstance(K.prod((2, 3, 4)), int)

    def flattened_loss(y_true, y_pred):
        shape = K.shape(y_pred)
        flat = K.reshape(y_pred, (shape[0], -1, K.prod(shape[2:])))
        return K.mean(K.square(flat - K.reshape(y_true, K.shape(flat))), axis=[1, 2])

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Reshape((2, 2, 3))(keras.layers.Dense(12)(inputs)))
    model.compile(optimizer="sgd", loss=flattened_loss)
    x, y = np.ones((3, 4), "float32"), np.zeros((3, 2, 2, 3), "float32")
    first = model.train_on_batch(x, y)
    assert np.isfinite(first) and model.train_on_batch(x, y) < first
