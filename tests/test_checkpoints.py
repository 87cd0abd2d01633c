"""Checkpoint writers and the vocabulary-slicing loader option."""

import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.checkpoints import GOOGLE, open_checkpoint
from tests.references import random_batch

CONFIG = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=40, max_position_embeddings=32, embedding_size=16)


def config_for(family):
    # Public RoFormer-V2 releases have embedding_size == hidden_size: no mapping layer to name.
    return dict(CONFIG, embedding_size=None) if family == "roformer_v2" else CONFIG


def randomised(family, **kwargs):
    built = build_transformer_model(config_for(family), model=family, return_keras_model=False,
                                    **kwargs)
    rng = np.random.default_rng(0)
    for variable in built.model.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    return built


@pytest.mark.parametrize("family", ["bert", "roformer", "roformer_v2"])
def test_google_checkpoint_round_trip_uses_google_names(family, tmp_path):
    heads = dict(with_mlm="linear", with_pool=family != "roformer_v2")
    built = randomised(family, **heads)
    prefix = built.save_google_checkpoint(str(tmp_path / "out" / "bert_model.ckpt"))
    checkpoint = open_checkpoint(prefix)
    assert checkpoint.fmt == GOOGLE
    assert "bert/encoder/layer_1/attention/self/query/kernel" in checkpoint.names
    assert ("bert/embeddings/LayerNorm/gamma" in checkpoint.names) == (family != "roformer_v2")
    assert not any(path.name.startswith(".") for path in (tmp_path / "out").iterdir())
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [7, 4], seed=1)
    reloaded = build_transformer_model(config_for(family), prefix, model=family, **heads)
    for ours, theirs in zip(built.model.predict([token_ids, segment_ids], verbose=0),
                            reloaded.predict([token_ids, segment_ids], verbose=0)):
        np.testing.assert_array_equal(ours, theirs)


def test_keep_tokens_model_equals_full_model_on_kept_tokens(tmp_path):
    full = randomised("roformer", with_mlm="linear")
    full.export_huggingface(tmp_path)
    keep = [0, 3, 7, 8, 20, 41, 49]
    small = build_transformer_model(CONFIG, tmp_path, model="roformer", with_mlm="linear",
                                    keep_tokens=keep)
    new_ids = np.array([[1, 2, 3, 4, 5, 6, 0]], "int32")  # indices into ``keep``
    old_ids = np.array(keep, "int32")[new_ids]
    segments = np.zeros_like(new_ids)
    full_logits = full.model.predict([old_ids, segments], verbose=0)
    small_logits = small.predict([new_ids, segments], verbose=0)
    np.testing.assert_allclose(small_logits[:, :6], full_logits[:, :6][..., keep], atol=1e-5)


def test_keep_tokens_out_of_range_is_an_error(tmp_path):
    randomised("roformer").export_huggingface(tmp_path)
    with pytest.raises(ValueError, match=r"keep_tokens must be .* ids in \[0, 50\)"):
        build_transformer_model(CONFIG, tmp_path, model="roformer", keep_tokens=[0, 5, 50])


def test_export_refuses_what_hf_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="key_size"):
        build_transformer_model(dict(CONFIG, key_size=12), model="roformer",
                                return_keras_model=False).export_huggingface(tmp_path)
    with pytest.raises(ValueError, match="google format of 'roformer_v2' has no place for: "
                                         "Output-Mapping/kernel"):
        build_transformer_model(CONFIG, model="roformer_v2", with_mlm=True,
                                return_keras_model=False).save_google_checkpoint(tmp_path / "c")
    with pytest.raises(ValueError, match="no 'roformer_v2' model"):
        build_transformer_model(CONFIG, model="roformer_v2",
                                return_keras_model=False).export_huggingface(tmp_path)


def test_float16_export_loads_back_close_to_the_float32_model(tmp_path):
    built = randomised("roformer", with_mlm="linear")
    built.export_huggingface(tmp_path, dtype="float16")
    from safetensors.numpy import load_file
    assert {str(v.dtype) for v in load_file(tmp_path / "model.safetensors").values()} == \
        {"float16"}
    reloaded = build_transformer_model(CONFIG, tmp_path, model="roformer", with_mlm="linear")
    token_ids, segment_ids = random_batch(CONFIG["vocab_size"], [7, 4], seed=2)
    np.testing.assert_allclose(reloaded.predict([token_ids, segment_ids], verbose=0),
                               built.model.predict([token_ids, segment_ids], verbose=0),
                               atol=0.05)
    with pytest.raises(ValueError, match="dtype"):
        built.export_huggingface(tmp_path, dtype="int8")
