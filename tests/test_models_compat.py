"""``build_transformer_model`` under bert4keras' keywords: renamed config values, the MLM head
that ``lm``/``unilm`` imply, ``compound_tokens``, conditional layer norms, ``.initializer``, and
a clear refusal of every bert4keras keyword bert4x does not offer."""

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.config import ConfigError
from bert4x.models.build import UNSUPPORTED_KEYWORDS
from tests.references import random_batch

CONFIG = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=24, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A random BERT with its MLM head, written as HF files, and its token table."""
    directory = tmp_path_factory.mktemp("bert")
    built = build_transformer_model(dict(CONFIG), with_mlm=True, return_keras_model=False)
    for variable in built.model.weights:  # random biases and norms too
        variable.assign(np.random.default_rng(len(variable.path)).normal(
            size=variable.shape).astype("float32") * 0.2 + (1 if "gamma" in variable.path else 0))
    built.export_huggingface(directory)
    return directory, built


def test_bert4keras_config_names_mean_ours():
    built = build_transformer_model(dict(CONFIG), max_position=40, dropout_rate=0.2,
                                    attention_dropout_rate=0.3, segment_vocab_size=3,
                                    attention_key_size=16, return_keras_model=False)
    config = built.config
    assert (config.max_position_embeddings, config.hidden_dropout_prob,
            config.attention_probs_dropout_prob, config.type_vocab_size,
            config.key_size) == (40, 0.2, 0.3, 3, 16)
    assert isinstance(built.initializer, keras.initializers.TruncatedNormal)
    assert built.initializer.stddev == pytest.approx(0.02)


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_lm_and_unilm_imply_the_mlm_head(application):
    model = build_transformer_model(dict(CONFIG), application=application)
    assert model.output.shape[-1] == CONFIG["vocab_size"]
    assert model.get_layer("MLM-Activation") is not None
    encoder = build_transformer_model(dict(CONFIG))
    assert encoder.output.shape[-1] == CONFIG["hidden_size"]


@pytest.mark.parametrize("keyword", sorted(UNSUPPORTED_KEYWORDS))
def test_unsupported_bert4keras_keywords_are_refused_with_advice(keyword):
    with pytest.raises(ConfigError, match=f"bert4keras' {keyword}= is not supported by bert4x; "
                                          f"{UNSUPPORTED_KEYWORDS[keyword][:20]}"):
        build_transformer_model(dict(CONFIG), **{keyword: True})


def test_conflicting_and_unknown_keywords_are_refused():
    with pytest.raises(ConfigError, match="max_position=30 and max_position_embeddings=40 name "
                                          "the same setting"):
        build_transformer_model(dict(CONFIG), max_position=30, max_position_embeddings=40)
    with pytest.raises(ConfigError, match="segment_vocab_size=0 .* feed zeros"):
        build_transformer_model(dict(CONFIG), segment_vocab_size=0)
    with pytest.raises(ConfigError, match="unknown config key 'with_nps'"):
        build_transformer_model(dict(CONFIG), with_nps=True)


def test_compound_tokens_extend_the_vocabulary_with_mean_embeddings(saved_model):
    directory, original = saved_model
    table = original.model.get_layer("Embedding-Token").get_weights()[0]
    bias = original.model.get_layer("MLM-Bias").get_weights()[0]
    keep = [0, 3, 5, 7, 9, 11]
    model = build_transformer_model(dict(CONFIG), directory, with_mlm=True, keep_tokens=keep,
                                    compound_tokens=[[1, 2], ([3, 4], [3.0, 1.0])])
    extended = model.get_layer("Embedding-Token").get_weights()[0]
    assert extended.shape == (len(keep) + 2, CONFIG["hidden_size"])
    np.testing.assert_allclose(extended[:len(keep)], table[keep], rtol=1e-6)
    np.testing.assert_allclose(extended[-2], table[[3, 5]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(extended[-1], 0.75 * table[7] + 0.25 * table[9], rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("MLM-Bias").get_weights()[0][-2],
                               bias[[3, 5]].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"compound_tokens\[0\] must list ids in \[0, 6\)"):
        build_transformer_model(dict(CONFIG), directory, with_mlm=True, keep_tokens=keep,
                                compound_tokens=[[6]])


def test_conditional_norms_load_and_start_as_the_plain_model(saved_model):
    directory, original = saved_model
    class_ids = keras.Input((1,), dtype="int32", name="Input-Class")
    condition = keras.layers.Flatten()(keras.layers.Embedding(3, 8)(class_ids))
    model = build_transformer_model(dict(CONFIG), directory, application="lm",
                                    layer_norm_cond=condition, layer_norm_cond_hidden_size=4,
                                    layer_norm_cond_hidden_act="tanh",
                                    additional_input_layers=class_ids)
    assert [tensor.name for tensor in model.inputs][-1] == "Input-Class"
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [7, 4])
    classes = np.array([[0], [2]])
    plain = build_transformer_model(dict(CONFIG), directory, application="lm")
    expected = plain.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(model.predict([token_ids, segment_ids, classes], verbose=0),
                               expected, atol=1e-6)
    norm = model.get_layer("Transformer-0-FeedForward-Norm")
    norm.gamma_dense.kernel.assign(np.full(norm.gamma_dense.kernel.shape, 10.0, "float32"))
    shifted = model.predict([token_ids, segment_ids, classes], verbose=0)
    # The condition now changes the output, far beyond the 1e-6 of the equality above (the size of
    # the change depends on the random class embeddings, so the bound is loose).
    assert np.abs(shifted - expected).max() > 1e-4
    with pytest.raises(ValueError, match="parameter-free norms"):
        build_transformer_model(dict(CONFIG), model="roformer_v2", layer_norm_cond=condition,
                                additional_input_layers=class_ids)


def test_prefixed_models_share_a_graph_load_export_and_decode(saved_model, tmp_path):
    from bert4x.generation import AutoRegressiveDecoder

    directory, _ = saved_model
    plain = build_transformer_model(dict(CONFIG), directory, application="lm")
    first = build_transformer_model(dict(CONFIG), directory, application="lm",
                                    prefix="Predecessor-", return_keras_model=False)
    second = build_transformer_model(dict(CONFIG), directory, prefix="Successor-")
    assert first.model.get_layer("Predecessor-Embedding-Token") is not None
    assert [t.name for t in first.model.inputs] == ["Predecessor-Input-Token",
                                                    "Predecessor-Input-Segment"]
    both = keras.Model(first.model.inputs, [first.model.output,
                                            second(first.model.inputs)])
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [6, 3])
    predicted, _ = both.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(predicted, plain.predict([token_ids, segment_ids], verbose=0),
                               atol=1e-6)
    first.export_huggingface(tmp_path / "exported")
    reloaded = build_transformer_model(dict(CONFIG), tmp_path / "exported", application="lm")
    np.testing.assert_allclose(reloaded.predict([token_ids, segment_ids], verbose=0),
                               predicted, atol=1e-6)
    prefix = [5, 7, 9]
    ours = AutoRegressiveDecoder(plain, end_id=3, max_new_tokens=4).beam_search(prefix, 2)
    prefixed = AutoRegressiveDecoder(first.model, end_id=3, max_new_tokens=4).beam_search(
        prefix, 2)
    assert [h.tokens for h in prefixed] == [h.tokens for h in ours]
