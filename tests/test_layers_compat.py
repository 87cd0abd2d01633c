"""bert4keras' layer names on bert4x: the padding mask our models carry, the ``Loss`` layer that
reads it, the CRF and MEMM (against brute force and against bert4keras 0.11.5), Viterbi
decoding and mask-aware pooling."""

import itertools

import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from keras.src.backend.common.masking import get_keras_mask

from bert4x import build_transformer_model
from bert4x.backend import K
from bert4x.layers import (ConditionalRandomField, GlobalMaxPooling1D, Loss,
                           MaximumEntropyMarkovModel)
from bert4x.snippets import ViterbiDecoder
from tests.references import bert4keras_available, run_bert4keras

CONFIG = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=20, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def padded_batch(seed=0):
    """Token ids [4, 10] with real padding (rows of 9, 6, 6, 6 tokens)."""
    rng = np.random.default_rng(seed)
    token_ids = np.zeros((4, 10), "int32")
    for row, length in enumerate((9, 6, 6, 6)):
        token_ids[row, :length] = rng.integers(1, CONFIG["vocab_size"], length)
    return token_ids, np.zeros_like(token_ids)


@pytest.mark.parametrize("family", ["bert", "roformer", "roformer_v2", "gau_alpha", "flash"])
def test_every_family_carries_the_padding_mask(family):
    model = build_transformer_model(dict(CONFIG), model=family, with_mlm=True)
    token_ids, segment_ids = padded_batch()
    outputs = model([token_ids, segment_ids])
    np.testing.assert_array_equal(numpy(get_keras_mask(outputs)), token_ids != 0)
    assert get_keras_mask(model.output) is not None
    unmasked = build_transformer_model(dict(CONFIG), model=family, padding_mask=False)
    assert get_keras_mask(unmasked.output) is None


class SubjectLoss(Loss):
    """The loss of bert4keras' relation-extraction example: binary cross-entropy averaged over
    the real tokens, with the script's own fallback to ``mask = 1.0`` when there is no mask."""

    def compute_loss(self, inputs, mask=None):
        labels, predictions, _ = inputs
        mask = 1.0 if mask[2] is None else K.cast(mask[2], K.floatx())
        loss = K.mean(K.binary_crossentropy(labels, predictions), 2)
        return K.sum(loss * mask) / K.sum(mask)


def test_loss_layer_reads_the_padding_mask_and_trains():
    keras.utils.set_random_seed(0)
    bert = build_transformer_model(dict(CONFIG), return_keras_model=False)
    labels = keras.Input((None, 2), name="Subject-Labels")
    predictions = keras.layers.Dense(2, activation="sigmoid",
                                     kernel_initializer=bert.initializer)(bert.model.output)
    output = SubjectLoss(1)([labels, predictions, bert.model.output])
    train_model = keras.Model(bert.model.inputs + [labels], output)
    train_model.compile(optimizer=keras.optimizers.Adam(1e-2))

    token_ids, segment_ids = padded_batch()
    targets = np.random.default_rng(1).integers(0, 2, (4, 10, 2)).astype("float32")
    p = keras.Model(bert.model.inputs, predictions).predict([token_ids, segment_ids], verbose=0)
    cross_entropy = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(-1)
    real = token_ids != 0
    by_hand = (cross_entropy * real).sum() / real.sum()
    # Without a mask the script's fallback (mask = 1.0) sums over every position, padding too.
    assert cross_entropy.sum() > 20 * by_hand
    loss = train_model.evaluate([token_ids, segment_ids, targets], None, verbose=0)
    assert loss == pytest.approx(by_hand, rel=1e-5)
    history = train_model.fit([token_ids, segment_ids, targets], None, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] - 0.05


def brute_force(emissions, trans, tags):
    """log Z - score(tags), and the best path, by enumerating every path."""
    def score(path):
        return (sum(emissions[t, tag] for t, tag in enumerate(path))
                + sum(trans[a, b] for a, b in zip(path, path[1:])))
    paths = list(itertools.product(range(trans.shape[0]), repeat=len(emissions)))
    log_z = np.log(sum(np.exp(score(p)) for p in paths))
    return log_z - score(tags), max(paths, key=score)


@settings(max_examples=40, deadline=None)
@given(num_tags=st.integers(1, 3), lengths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       seed=st.integers(0, 2 ** 16), lr_multiplier=st.sampled_from([1.0, 3.0]))
def test_crf_loss_and_viterbi_equal_brute_force(num_tags, lengths, seed, lr_multiplier):
    rng = np.random.default_rng(seed)
    width = max(lengths)
    emissions = rng.normal(size=(len(lengths), width, num_tags)).astype("float32")
    tags = rng.integers(0, num_tags, size=(len(lengths), width))
    mask = np.arange(width)[None] < np.array(lengths)[:, None]
    crf = ConditionalRandomField(lr_multiplier=lr_multiplier)
    scores = crf(emissions, mask=mask)
    trans = numpy(crf.trans).astype("float64")
    losses = numpy(crf.sparse_loss(tags, scores))
    for row, length in enumerate(lengths):
        expected_loss, best = brute_force(emissions[row, :length].astype("float64"), trans,
                                          tags[row, :length])
        assert losses[row] == pytest.approx(expected_loss, rel=1e-4, abs=1e-4)
        assert tuple(ViterbiDecoder(trans).decode(emissions[row, :length])) == best
    accuracy = (np.argmax(emissions, -1) == tags)[mask].mean()
    assert float(numpy(crf.sparse_accuracy(tags, scores))) == pytest.approx(accuracy, abs=1e-6)


def test_crf_trains_under_fit_with_its_loss_and_metric():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(inputs)
    crf = ConditionalRandomField(lr_multiplier=10)
    model = keras.Model(inputs, crf(keras.layers.Dense(3)(x)))
    model.compile(optimizer=keras.optimizers.Adam(5e-2), loss=crf.sparse_loss,
                  metrics=[crf.sparse_accuracy])
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, (16, 7))
    tokens[::2, 5:] = 0
    tags = np.where(tokens > 0, tokens % 3, 0)
    history = model.fit(tokens, tags, epochs=30, verbose=0).history
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert history["sparse_accuracy"][-1] > 0.95


def test_global_max_pooling_ignores_padding():
    inputs = keras.Input((None,), dtype="int32")
    pooled = GlobalMaxPooling1D()(keras.layers.Embedding(10, 4, mask_zero=True)(inputs))
    model = keras.Model(inputs, pooled)
    tokens = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])
    table = model.layers[1].get_weights()[0]
    np.testing.assert_allclose(model.predict(tokens, verbose=0),
                               [table[[1, 2]].max(0), table[3]], rtol=1e-6)


def test_viterbi_refuses_scores_of_another_tag_set():
    with pytest.raises(ValueError, match=r"\[length, 3\] tag scores, got shape \(4, 2\)"):
        ViterbiDecoder(np.zeros((3, 3))).decode(np.zeros((4, 2)))


@pytest.mark.skipif(not bert4keras_available(), reason="bert4keras 0.11.5 + tf-keras not installed")
def test_crf_memm_and_viterbi_equal_bert4keras():
    rng = np.random.default_rng(3)
    batch, width, num_tags = 3, 5, 4
    emissions = rng.normal(size=(batch, width, num_tags)).astype("float32")
    mask = (np.arange(width)[None] < np.array([[5], [3], [1]])).astype("float32")
    tags = rng.integers(0, num_tags, size=(batch, width)).astype("int32")
    weights = {"trans": rng.normal(size=(num_tags, num_tags)).astype("float32"),
               "low_rank": [rng.normal(size=(num_tags, 2)).astype("float32") for _ in range(2)]}
    program = """
import numpy as np
import tensorflow as tf
from bert4keras.layers import ConditionalRandomField, MaximumEntropyMarkovModel
from bert4keras.snippets import ViterbiDecoder
x = tf.constant(data['x'], tf.float32)
mask = tf.constant(data['mask'], tf.float32)
tags = tf.constant(data['tags'], tf.int32)
one_hot = tf.one_hot(tags, x.shape[-1])
def value(t):
    return np.asarray(t).astype('float64').tolist()
result = {}
layers = {'crf': ConditionalRandomField(lr_multiplier=2),
          'memm': MaximumEntropyMarkovModel(lr_multiplier=2),
          'memm_low_rank': MaximumEntropyMarkovModel(hidden_dim=2)}
for name, layer in layers.items():
    scores = layer(x, mask=mask)
    layer.set_weights([np.array(w, 'float32') for w in data['weights'][name]])
    result[name] = [value(layer.sparse_loss(tags, scores)), value(layer.dense_loss(one_hot, scores)),
                    value(layer.sparse_accuracy(tags, scores))]
decoder = ViterbiDecoder(np.array(data['weights']['crf'][0]) * 2, starts=[0, 2], ends=[1])
result['viterbi'] = [decoder.decode(np.array(row, 'float64')).tolist() for row in data['x']]
"""
    trained = {"crf": [weights["trans"]], "memm": [weights["trans"]],
               "memm_low_rank": weights["low_rank"]}
    payload = dict(x=emissions.tolist(), mask=mask.tolist(), tags=tags.tolist(),
                   weights={k: [w.tolist() for w in v] for k, v in trained.items()})
    reference = run_bert4keras(program, payload)
    layers = {"crf": ConditionalRandomField(lr_multiplier=2),
              "memm": MaximumEntropyMarkovModel(lr_multiplier=2),
              "memm_low_rank": MaximumEntropyMarkovModel(hidden_dim=2)}
    one_hot = np.eye(num_tags, dtype="float32")[tags]
    for name, layer in layers.items():
        scores = layer(emissions, mask=mask)
        layer.set_weights(trained[name])
        ours = [layer.sparse_loss(tags, scores), layer.dense_loss(one_hot, scores),
                layer.sparse_accuracy(tags, scores)]
        for mine, theirs in zip(ours, reference[name]):
            np.testing.assert_allclose(numpy(mine), theirs, rtol=1e-5, atol=1e-5, err_msg=name)
    decoder = ViterbiDecoder(weights["trans"] * 2, starts=[0, 2], ends=[1])
    assert [decoder.decode(row).tolist() for row in emissions] == reference["viterbi"]


def test_layers_take_bert4keras_argument_names():
    from bert4x.layers import EfficientGlobalPointer, GlobalPointer, LayerNormalization

    pointer = GlobalPointer(heads=2, head_size=4, RoPE=False, tril_mask=False)
    assert pointer.rope is False and pointer.get_config()["rope"] is False
    assert EfficientGlobalPointer(heads=2, head_size=4, RoPE=False).rope is False
    norm = LayerNormalization(conditional=True, hidden_units=3, hidden_activation="tanh",
                              hidden_initializer="zeros")
    output = norm([np.ones((2, 5, 4), "float32"), np.ones((2, 6), "float32")])
    assert output.shape == (2, 5, 4)
    assert not numpy(norm.condition_dense.kernel).any()  # the zeros initializer was used
    with pytest.raises(TypeError, match="give rope= or its bert4keras name RoPE=, not both"):
        GlobalPointer(2, 4, RoPE=False, rope=True)
    with pytest.raises(ValueError, match="Unrecognized keyword arguments.*'Rope'"):
        GlobalPointer(2, 4, Rope=False)
