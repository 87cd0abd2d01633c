"""Behaviour of built models: masks, applications, serialisation and errors on bad input."""

import json

import keras
import numpy as np
import pytest

import bert4x
from bert4x import CheckpointError, ConfigError, build_transformer_model
from tests.references import hf_model, hf_state_as_google, write_google_checkpoint

CONFIG = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=40, max_position_embeddings=16, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
FAMILIES = ["bert", "roformer", "roformer_v2"]


def run(model, token_ids, segment_ids):
    return model.predict([np.asarray(token_ids, "int32"), np.asarray(segment_ids, "int32")],
                         verbose=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_never_changes_real_positions(family):
    model = build_transformer_model(CONFIG, model=family)
    tokens = [[5, 9, 14, 3, 7]]
    segments = [[0, 0, 1, 1, 1]]
    alone = run(model, tokens, segments)
    padded = run(model, [tokens[0] + [0] * 6], [segments[0] + [0] * 6])
    np.testing.assert_allclose(padded[:, :5], alone, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_lm_is_causal(family):
    model = build_transformer_model(CONFIG, model=family, application="lm", with_mlm="linear")
    tokens = np.array([[5, 9, 14, 3, 7, 11]])
    segments = np.zeros_like(tokens)
    changed = tokens.copy()
    changed[0, 3] = 42
    before, after = run(model, tokens, segments), run(model, changed, segments)
    np.testing.assert_allclose(after[:, :3], before[:, :3], atol=1e-5)
    assert np.abs(after[:, 3:] - before[:, 3:]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_unilm_follows_segment_ids(family):
    model = build_transformer_model(CONFIG, model=family, application="unilm", with_mlm="linear")
    tokens = np.array([[5, 9, 14, 3, 7, 11]])
    segments = np.array([[0, 0, 0, 1, 1, 1]])
    base = run(model, tokens, segments)
    target_changed = tokens.copy()
    target_changed[0, 4] = 42  # second target token
    out = run(model, target_changed, segments)
    np.testing.assert_allclose(out[:, :4], base[:, :4], atol=1e-5)  # source + earlier target
    assert np.abs(out[:, 4:] - base[:, 4:]).max() > 1e-3
    source_changed = tokens.copy()
    source_changed[0, 2] = 42  # the last source token is seen by every token
    out = run(model, source_changed, segments)
    assert np.abs(out - base).max(axis=-1).min() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_keras_file_round_trip(family, tmp_path):
    kwargs = dict(with_pool=True) if family != "roformer_v2" else {}
    model = build_transformer_model(CONFIG, model=family, application="unilm", with_mlm=True,
                                    **kwargs)
    tokens, segments = [[5, 9, 14, 3, 0]], [[0, 0, 1, 1, 0]]
    expected = run(model, tokens, segments)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    actual = run(loaded, tokens, segments)
    for a, e in zip(actual if isinstance(actual, list) else [actual],
                    expected if isinstance(expected, list) else [expected]):
        np.testing.assert_array_equal(a, e)


def test_layers_work_inside_a_users_functional_model():
    inputs = keras.Input((None, 16))
    x = bert4x.layers.MultiHeadAttention(heads=2, head_size=8, key_size=12, rope=True)(inputs)
    x = bert4x.layers.LayerNormalization(zero_mean=False, center=False, scale=False)(x)
    model = keras.Model(inputs, x)
    out = model.predict(np.ones((2, 5, 16), "float32"), verbose=0)
    assert out.shape == (2, 5, 16)
    rms = np.sqrt((out ** 2).mean(-1))
    np.testing.assert_allclose(rms, 1.0, atol=1e-4)


# Bad input ----------------------------------------------------------------------------------

def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match="'hiden_size'"):
        build_transformer_model(dict(CONFIG, hiden_size=32))


def test_unknown_override_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    with pytest.raises(ConfigError, match="'key_sise'"):
        build_transformer_model(path, key_sise=8)


@pytest.mark.parametrize("change,key", [
    (dict(num_attention_heads=5), "num_attention_heads"),
    (dict(hidden_act="mish"), "hidden_act"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(position_embedding_type="relative_key"), "position_embedding_type"),
    (dict(model_type="roformer"), "model_type"),
])
def test_impossible_config_values_are_named(change, key):
    with pytest.raises(ConfigError, match=key):
        build_transformer_model(dict(CONFIG, **change), model="bert")


def test_missing_required_key_is_named():
    config = dict(CONFIG)
    del config["intermediate_size"]
    with pytest.raises(ConfigError, match="intermediate_size"):
        build_transformer_model(config)


def test_unknown_model_and_head_combinations():
    with pytest.raises(ValueError, match="unknown model 'bart'"):
        build_transformer_model(CONFIG, model="bart")
    with pytest.raises(ValueError, match="no pooler"):
        build_transformer_model(CONFIG, model="roformer_v2", with_pool=True)
    with pytest.raises(ValueError, match="with_mlm=True"):
        build_transformer_model(CONFIG, application="lm", with_mlm=False)


def test_checkpoint_of_another_architecture_is_recognised(tmp_path):
    hf_model("roformer", "model", **{k: CONFIG[k] for k in
             ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size")}).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match='this looks like a RoFormer checkpoint: '
                                              'use model="roformer"') as error:
        build_transformer_model(CONFIG, tmp_path, model="bert")
    # allow_missing would only give a half-random model: it is not offered.
    assert "allow_missing" not in str(error.value)


def test_google_roformer_checkpoint_into_bert_is_recognised(tmp_path):
    reference = hf_model("roformer", "mlm", vocab_size=60, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=40)
    prefix = write_google_checkpoint(str(tmp_path / "c.ckpt"), hf_state_as_google(reference))
    with pytest.raises(CheckpointError, match='looks like a RoFormer checkpoint: use '
                                              'model="roformer".*weights missing: 1.*'
                                              'first: Embedding-Position/embeddings'):
        build_transformer_model(CONFIG, prefix, model="bert", with_mlm=True)


def test_shape_mismatch_lists_every_weight(tmp_path):
    hf_model("bert", "model", vocab_size=70, hidden_size=32, num_hidden_layers=2,
             num_attention_heads=4, intermediate_size=44,
             max_position_embeddings=16).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as error:
        build_transformer_model(CONFIG, tmp_path, model="bert", allow_unused=True)
    message = str(error.value)
    assert ("Embedding-Token/embeddings <- embeddings.word_embeddings.weight: "
            "checkpoint (70, 32), model (60, 32)") in message
    for layer in (0, 1):  # every mismatching weight is listed, not just the first
        assert (f"Transformer-{layer}-FeedForward/output/kernel <- encoder.layer.{layer}."
                "output.dense.weight: checkpoint (44, 32), model (40, 32)") in message
        assert f"Transformer-{layer}-FeedForward/intermediate/bias" in message


def test_unused_heads_are_skipped_but_other_leftovers_are_errors(tmp_path):
    reference = hf_model("bert", "mlm", vocab_size=60, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=40, max_position_embeddings=16)
    reference.save_pretrained(tmp_path / "full")
    built = build_transformer_model(CONFIG, tmp_path / "full", return_keras_model=False)
    assert built.load_report.skipped_heads  # the MLM head of a pre-training checkpoint
    assert not built.load_report.unused and not built.load_report.missing
    # A 1-layer model cannot silently drop layer 1 of a 2-layer checkpoint.
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\."):
        build_transformer_model(dict(CONFIG, num_hidden_layers=1), tmp_path / "full")
    report = build_transformer_model(dict(CONFIG, num_hidden_layers=1), tmp_path / "full",
                                     allow_unused=True, return_keras_model=False).load_report
    assert any(".layer.1." in name for name in report.unused)


def test_missing_weights_are_errors_unless_allowed(tmp_path):
    hf_model("bert", "model", vocab_size=60, hidden_size=32, num_hidden_layers=1,
             num_attention_heads=4, intermediate_size=40,
             max_position_embeddings=16).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="Transformer-1-MultiHeadSelfAttention/query/kernel"):
        build_transformer_model(CONFIG, tmp_path)
    report = build_transformer_model(CONFIG, tmp_path, allow_missing=True,
                                     return_keras_model=False).load_report
    assert "Transformer-1-FeedForward/output/kernel" in report.missing


def test_hf_file_for_roformer_v2_and_missing_paths(tmp_path):
    hf_model("roformer", "model", vocab_size=60, hidden_size=32, num_hidden_layers=2,
             num_attention_heads=4, intermediate_size=40).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="reads no HF files for 'roformer_v2'"):
        build_transformer_model(CONFIG, tmp_path, model="roformer_v2")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        build_transformer_model(CONFIG, tmp_path / "nothing-here.ckpt")
    with pytest.raises(ConfigError, match="config file not found"):
        build_transformer_model(tmp_path / "no-config.json")


def test_token_id_outside_vocabulary_is_a_clear_error():
    # A fresh model per bad call: Keras' JAX predict loop leaves a model's variables purged
    # after an error inside it (see the note in docs/design-notes.md, "Backends").
    for bad in (60, -1):
        with pytest.raises(Exception, match="vocabulary size 60"):
            run(build_transformer_model(CONFIG), [[5, bad, 3]], [[0, 0, 0]])


def test_segment_id_outside_type_vocabulary_is_a_clear_error():
    model = build_transformer_model(CONFIG)
    with pytest.raises(Exception, match="Embedding-Segment.*vocabulary size 2"):
        run(model, [[5, 6, 3]], [[0, 2, 0]])


def test_bert_sequence_longer_than_max_position_is_a_clear_error():
    model = build_transformer_model(CONFIG, model="bert")
    with pytest.raises(Exception, match="max_position_embeddings=16"):
        run(model, [[5] * 17], [[0] * 17])
    # RoPE models have no position table and accept longer inputs.
    roformer = build_transformer_model(CONFIG, model="roformer")
    assert run(roformer, [[5] * 40], [[0] * 40]).shape == (1, 40, 32)
