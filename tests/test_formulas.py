"""bert4x against a NumPy transcription of the formulas, where HF has no reference:
RoFormer-V2, key_size != hidden/heads, causal LM; and RoPE's relative-position property."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4x import build_transformer_model
from bert4x.layers import apply_rotary
from tests.numpy_reference import encode, random_weights
from tests.references import random_batch, write_google_checkpoint

LENGTHS = [8, 3, 6]
CASES = {
    # family, hidden, layers, heads, key_size, head_size, intermediate, activation
    "roformer_v2": ("roformer_v2", 32, 2, 4, 8, 8, 48, "relu"),
    "roformer_v2-key16": ("roformer_v2", 32, 1, 2, 16, 16, 40, "relu"),
    "bert-key12-head6": ("bert", 24, 2, 4, 12, 6, 30, "gelu"),
    "roformer-key10": ("roformer", 24, 2, 3, 10, 8, 30, "gelu"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("application", ["encoder", "lm"])
def test_model_matches_numpy_formulas(case, application, tmp_path):
    family, hidden, layers, heads, key_size, head_size, intermediate, act = CASES[case]
    vocab = 40
    weights = random_weights(family, vocab, hidden, layers, heads, key_size, head_size,
                             intermediate)
    prefix = write_google_checkpoint(str(tmp_path / "model.ckpt"), weights)
    config = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=intermediate, hidden_act=act,
                  max_position_embeddings=64, key_size=key_size, head_size=head_size)
    model = build_transformer_model(config, prefix, model=family, with_mlm=True,
                                    application=application, return_keras_model=False).model
    import keras
    last_norm = model.get_layer(f"Transformer-{layers - 1}-FeedForward-Norm").output
    probe = keras.Model(model.inputs, [last_norm, model.output])
    token_ids, segment_ids = random_batch(vocab, LENGTHS, seed=3)
    hidden_out, probs = probe.predict([token_ids, segment_ids], verbose=0)
    for row, length in enumerate(LENGTHS):
        expected_hidden, expected_probs = encode(
            weights, token_ids[row, :length], segment_ids[row, :length], family, heads,
            key_size, head_size, activation=act, causal=application == "lm")
        np.testing.assert_allclose(hidden_out[row, :length], expected_hidden, atol=1e-4, rtol=0)
        np.testing.assert_allclose(probs[row, :length], expected_probs, atol=1e-5, rtol=0)


def rotated_score(q, k, m, n):
    """q·k after rotating q to position m and k to position n."""
    positions_q = np.full((1,), m)
    positions_k = np.full((1,), n)
    rq = keras.ops.convert_to_numpy(apply_rotary(q[None, None, None, :], positions_q))[0, 0, 0]
    rk = keras.ops.convert_to_numpy(apply_rotary(k[None, None, None, :], positions_k))[0, 0, 0]
    return float(rq @ rk)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 300), n=st.integers(0, 300), shift=st.integers(0, 200),
       half_dim=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_rope_scores_depend_only_on_relative_position(m, n, shift, half_dim, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(2, 2 * half_dim)).astype("float32")
    base = rotated_score(q, k, m, n)
    shifted = rotated_score(q, k, m + shift, n + shift)
    assert abs(base - shifted) <= 1e-3 * (1 + abs(base))


def test_rope_preserves_norm_and_is_identity_at_position_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 2, 8)).astype("float32")
    rotated = keras.ops.convert_to_numpy(apply_rotary(x, np.arange(5)))
    np.testing.assert_allclose(rotated[:, 0], x[:, 0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)


def test_rope_rejects_odd_head_size():
    with pytest.raises(ValueError, match="even"):
        apply_rotary(np.zeros((1, 2, 1, 5), "float32"), np.arange(2))
