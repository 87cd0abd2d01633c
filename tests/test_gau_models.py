"""GAU-α and FLASH models: the public GAU-α checkpoint layout, the formulas end to end,
learning on real Chinese text, serialisation and bad input."""

import json

import keras
import numpy as np
import pytest

from bert4x import ConfigError, build_transformer_model
from bert4x.tokenizers import Tokenizer
from pretrained import CHINESE_BERT_VOCAB, chinese_texts
from tests.numpy_reference import layer_norm, numpy_gau, softmax
from tests.references import random_batch, write_google_checkpoint

# GAU-α's config.json as released (keys as in its PyTorch port's copy), shrunk.
GAU_ALPHA_CONFIG = {
    "attention_key_size": 8, "attention_probs_dropout_prob": 0.1, "attention_scale": True,
    "embedding_size": 16, "hidden_act": "swish", "hidden_dropout_prob": 0.1, "hidden_size": 16,
    "initializer_range": 0.02, "intermediate_size": 24, "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512, "model_type": "gau_alpha", "normalization": "softmax_plus",
    "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "use_bias": False,
    "vocab_size": 40,
}


def gau_alpha_checkpoint(layers=2, hidden=16, units=24, key_size=8, vocab=40, seed=0):
    """Random weights under the variable names of the public GAU-α release (written by hand
    here, from ZhuiyiTechnology/GAU-alpha's models.py, not from our name table)."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.normal(0, 0.3, shape).astype("float32")  # noqa: E731
    w = {"bert/embeddings/word_embeddings": r(vocab, hidden),
         "bert/embeddings/token_type_embeddings": r(2, hidden)}
    for i in range(layers):
        p = f"GAU_alpha/encoder/layer_{i}/gau"
        w[f"{p}/i_dense/kernel"] = r(hidden, 2 * units + key_size)
        w[f"{p}/o_dense/kernel"] = r(units, hidden)
        w[f"{p}/q_scaleoffset/gamma"] = 1 + r(key_size)
        w[f"{p}/k_scaleoffset/gamma"] = 1 + r(key_size)
    return w


def numpy_gau_alpha(w, token_ids, segment_ids, layers, units, key_size, causal):
    """GAU-α for one unpadded example: RMS-style norms without parameters, post-norm GAU
    blocks, tied MLM output."""
    x = w["bert/embeddings/word_embeddings"][token_ids]
    x = x + w["bert/embeddings/token_type_embeddings"][segment_ids]
    x = layer_norm(x.astype("float64"), w, "none", 1e-12, centred=False)
    n = len(token_ids)
    allowed = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
    for i in range(layers):
        p = f"GAU_alpha/encoder/layer_{i}/gau"
        unit = {"i_dense/kernel": w[f"{p}/i_dense/kernel"], "o_dense/kernel": w[f"{p}/o_dense/kernel"],
                "q_scaleoffset/gamma": w[f"{p}/q_scaleoffset/gamma"],
                "k_scaleoffset/gamma": w[f"{p}/k_scaleoffset/gamma"]}
        x = layer_norm(x + numpy_gau(x, unit, units, key_size, allowed, "softmax", entropy=True),
                       w, "none", 1e-12, centred=False)
    return x, softmax(x @ w["bert/embeddings/word_embeddings"].T)


@pytest.mark.parametrize("application", ["encoder", "lm"])
def test_gau_alpha_loads_the_released_layout_and_matches_numpy(application, tmp_path):
    weights = gau_alpha_checkpoint()
    prefix = write_google_checkpoint(str(tmp_path / "bert_model.ckpt"), weights)
    config_path = tmp_path / "bert_config.json"
    config_path.write_text(json.dumps(GAU_ALPHA_CONFIG))
    built = build_transformer_model(str(config_path), prefix, model="gau_alpha", with_mlm=True,
                                    application=application, return_keras_model=False)
    assert not built.load_report.missing and not built.load_report.unused
    assert built.config.key_size == 8 and built.config.attention_scale == "entropy_invariant"
    # Lengths past the entropy floor of 16 keys, and padding.
    lengths = [30, 7]
    token_ids, segment_ids = random_batch(40, lengths, seed=5)
    model = built.model
    last = model.get_layer("Transformer-1-GatedAttentionUnit-Norm").output
    hidden, probs = keras.Model(model.inputs, [last, model.output]).predict(
        [token_ids, segment_ids], verbose=0)
    for row, length in enumerate(lengths):
        expected_hidden, expected_probs = numpy_gau_alpha(
            weights, token_ids[row, :length], segment_ids[row, :length], 2, 24, 8,
            causal=application == "lm")
        np.testing.assert_allclose(hidden[row, :length], expected_hidden, atol=1e-4)
        np.testing.assert_allclose(probs[row, :length], expected_probs, atol=1e-5)
    again = built.save_google_checkpoint(str(tmp_path / "out" / "model.ckpt"))
    reloaded = build_transformer_model(str(config_path), again, model="gau_alpha",
                                       with_mlm=True, application=application)
    np.testing.assert_array_equal(reloaded.predict([token_ids, segment_ids], verbose=0),
                                  model.predict([token_ids, segment_ids], verbose=0))


def real_lm_batch(count=8):
    """A few real STS-B-zh sentences as a causal-LM batch, over the ids they use."""
    texts = chinese_texts()[-2 * count::2]
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    encoded = [tokenizer.encode(t, maxlen=24)[0] for t in texts]
    used = sorted({i for ids in encoded for i in ids} | {0})
    remap = {old: new for new, old in enumerate(used)}
    length = max(len(ids) for ids in encoded)
    ids = np.zeros((count, length), "int32")
    for row, sequence in enumerate(encoded):
        ids[row, :len(sequence)] = [remap[i] for i in sequence]
    return ids, len(used)


@pytest.mark.parametrize("model,overrides", [("gau_alpha", {}), ("flash", {"chunk_size": 4})])
def test_tiny_gau_models_overfit_real_chinese_text(model, overrides):
    ids, vocab = real_lm_batch()
    keras.utils.set_random_seed(0)
    lm = build_transformer_model(
        dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
             key_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        model=model, application="lm", with_mlm="linear", **overrides)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    weights = (targets > 0).astype("float32")
    lm.compile(optimizer=keras.optimizers.Adam(3e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    segments = np.zeros_like(inputs)
    first = lm.evaluate([inputs, segments], targets, sample_weight=weights, verbose=0)
    lm.fit([inputs, segments], targets, sample_weight=weights, batch_size=8, epochs=150,
           verbose=0)
    last = lm.evaluate([inputs, segments], targets, sample_weight=weights, verbose=0)
    assert last < 0.1 * first, (first, last)


@pytest.mark.parametrize("model,overrides", [("gau_alpha", {}), ("flash", {}),
                                             ("flash", {"chunk_size": 3})])
def test_gau_models_round_trip_through_keras_files(model, overrides, tmp_path):
    built = build_transformer_model(
        dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, intermediate_size=24,
             key_size=8), model=model, with_mlm=True, **overrides)
    inputs = list(random_batch(40, [9, 5], seed=2))
    built.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.predict(inputs, verbose=0),
                                  built.predict(inputs, verbose=0))


def test_gau_models_refuse_what_they_cannot_build(tmp_path):
    config = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, intermediate_size=24)
    with pytest.raises(ValueError, match="talking_heads is a multi-head attention option"):
        build_transformer_model(config, model="gau_alpha", talking_heads=True)
    with pytest.raises(ValueError, match="not 'unilm'"):
        build_transformer_model(config, model="flash", chunk_size=4, application="unilm",
                                with_mlm=True)
    with pytest.raises(ValueError, match="chunk_size is a FLASH option"):
        build_transformer_model(config, model="roformer", num_attention_heads=2, chunk_size=4)
    with pytest.raises(ValueError, match="entropy-invariant scale belongs to softmax"):
        build_transformer_model(config, model="flash", attention_scale="entropy_invariant")
    with pytest.raises(ConfigError, match="'normalization' = 'squared_relu' is not supported"):
        build_transformer_model(dict(GAU_ALPHA_CONFIG, normalization="squared_relu"),
                                model="gau_alpha")
    with pytest.raises(ConfigError, match="'use_bias' must be false for model='gau_alpha'"):
        build_transformer_model(dict(GAU_ALPHA_CONFIG, use_bias=True), model="gau_alpha")
    with pytest.raises(ConfigError, match="'chunk_size' must be an integer >= 1"):
        build_transformer_model(config, model="flash", chunk_size=0)
