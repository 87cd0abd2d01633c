"""The research options of the blog series, each against its defining property: entropy
normalisation, the dimension-averaged initialisation of non-square matrices, and RoPE's
length-extrapolation scalings."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4x import build_transformer_model
from bert4x.generation import AutoRegressiveDecoder, decoding
from bert4x.generation.entropy import entropy, entropy_power, normalize_entropy


# Entropy normalisation -------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.floats(0.01, 30.0), st.floats(0.0, 1.2), st.integers(0, 2**31),
       st.integers(0, 5))
def test_entropy_normalisation_reaches_the_target_by_a_power_of_the_distribution(
        size, spread, fraction, seed, excluded):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=size) * spread
    logits[rng.choice(size, min(excluded, size - 1), replace=False)] = -np.inf
    finite = np.isfinite(logits)
    target = fraction * np.log(finite.sum())  # past log K (fraction > 1): as spread as it gets
    probs = normalize_entropy(logits, target)
    assert entropy(probs) == pytest.approx(min(target, np.log(finite.sum())), abs=1e-8)
    assert np.all(probs[~finite] == 0) and probs.sum() == pytest.approx(1.0)
    # q ∝ p^γ: log q − γ·logits is one constant over the candidates.
    gamma = entropy_power(logits, target)
    if 0 < gamma < np.inf and probs[finite].min() > 1e-300:
        offsets = np.log(probs[finite]) - gamma * logits[finite]
        np.testing.assert_allclose(offsets, offsets[0], atol=1e-7 * max(1, gamma * spread))


def test_entropy_falls_as_the_power_grows_and_the_solver_inverts_it():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)) * 2
    powers = np.geomspace(1e-2, 20, 40)
    entropies = np.array([entropy(normalize_by(logits, power)) for power in powers])  # [40, 3]
    assert np.all(np.diff(entropies, axis=0) < 0)
    recovered = np.array([entropy_power(logits, target) for target in entropies])
    np.testing.assert_allclose(recovered, np.repeat(powers[:, None], 3, axis=1), rtol=1e-6)
    # The ends: log K is the uniform distribution, 0 all mass on the best token.
    np.testing.assert_allclose(normalize_entropy(logits, np.log(50)), 1 / 50)
    peaked = normalize_entropy(logits, 0.0)
    assert np.array_equal(peaked.argmax(-1), logits.argmax(-1)) and np.all(peaked.max(-1) == 1)


def normalize_by(logits, power):
    """softmax(power · logits), written out independently of the module under test."""
    weights = np.exp(power * (logits - logits.max(-1, keepdims=True)))
    return weights / weights.sum(-1, keepdims=True)


def test_entropy_normalisation_rejects_what_it_cannot_mean():
    with pytest.raises(ValueError, match="target entropy"):
        normalize_entropy([1.0, 2.0], -0.5)
    with pytest.raises(ValueError, match="no finite value"):
        normalize_entropy([-np.inf, -np.inf], 0.5)


def test_sampling_at_a_target_entropy_draws_every_step_at_that_entropy(monkeypatch):
    keras.utils.set_random_seed(3)
    model = build_transformer_model(
        dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        model="roformer", application="lm", with_mlm=True)
    decoder = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=6)
    drawn_from = []

    def recording(logits, target):
        drawn_from.append(normalize_entropy(logits, target))
        return drawn_from[-1]

    monkeypatch.setattr(decoding, "normalize_entropy", recording)
    samples = decoder.sample([2, 5, 7], num_samples=3, top_k=12, entropy=1.5, seed=0)
    assert [len(sample.tokens) for sample in samples] == [6, 6, 6]
    assert len(drawn_from) == 18
    np.testing.assert_allclose([entropy(p) for p in drawn_from], 1.5, atol=1e-8)
    with pytest.raises(ValueError, match="not both"):
        decoder.sample([2, 5, 7], temperature=0.7, entropy=1.5)
    with pytest.raises(ValueError, match="entropy must be"):
        decoder.sample([2, 5, 7], entropy=float("nan"))
