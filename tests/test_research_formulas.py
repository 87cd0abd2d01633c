"""The research options of the blog series, each against its defining property: entropy
normalisation, the dimension-averaged initialisation of non-square matrices, and RoPE's
length-extrapolation scalings."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4x import CheckpointError, ConfigError, build_transformer_model
from bert4x.generation import AutoRegressiveDecoder, decoding
from bert4x.generation.entropy import entropy, entropy_power, normalize_entropy
from bert4x.layers import GatedAttentionUnit, MultiHeadAttention


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


# Initialisation of non-square matrices ----------------------------------------------------------
#: A linear stack that returns to its starting width: d → 4d → d → d/4 → d.
WIDTHS = [256, 1024, 256, 64, 256]


def second_moment_gains(initializer, widths, rng):
    """Each layer's gain of the mean square going forward (activations) and backward
    (gradients), measured on Gaussian inputs through kernels drawn by ``initializer``."""
    kernels = [np.asarray(initializer((m, n)), dtype="float64")
               for m, n in zip(widths, widths[1:])]
    forward, backward = [], []
    x = rng.normal(size=(2048, widths[0]))
    for kernel in kernels:
        y = x @ kernel
        forward.append(np.mean(y**2) / np.mean(x**2))
        x = y
    g = rng.normal(size=(2048, widths[-1]))
    for kernel in reversed(kernels):
        h = g @ kernel.T
        backward.append(np.mean(h**2) / np.mean(g**2))
        g = h
    return np.array(forward), np.array(backward[::-1])


def test_dimension_averaged_init_balances_forward_and_backward_where_xavier_loses_both():
    from bert4x.initializers import DimensionAveraged

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    fans = np.array(list(zip(WIDTHS, WIDTHS[1:])), dtype="float64")
    m, n = fans[:, 0], fans[:, 1]
    forward, backward = second_moment_gains(DimensionAveraged(), WIDTHS, rng)
    np.testing.assert_allclose(forward, np.sqrt(m / n), rtol=0.05)
    np.testing.assert_allclose(backward, np.sqrt(n / m), rtol=0.05)
    np.testing.assert_allclose(forward * backward, 1.0, rtol=0.05)
    assert np.prod(forward) == pytest.approx(1.0, rel=0.1)
    assert np.prod(backward) == pytest.approx(1.0, rel=0.1)
    # Xavier (the arithmetic mean) on the same stack: each layer's two gains multiply to
    # 4mn/(m+n)² = 0.64, and the stack keeps about 41% of each moment.
    forward, backward = second_moment_gains(keras.initializers.GlorotNormal(), WIDTHS, rng)
    np.testing.assert_allclose(forward * backward, 4 * m * n / (m + n) ** 2, rtol=0.05)
    assert np.prod(forward) == pytest.approx(np.prod(2 * m / (m + n)), rel=0.1)
    assert np.prod(forward) < 0.45 and np.prod(backward) < 0.45


INIT_CONFIG = dict(vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                   intermediate_size=256)


@pytest.mark.parametrize("family,kernel", [
    ("bert", "Transformer-0-FeedForward/intermediate/kernel"),
    ("roformer_v2", "Transformer-1-FeedForward/output/kernel"),
    ("gau_alpha", "Transformer-0-GatedAttentionUnit/i_dense/kernel"),
])
@pytest.mark.parametrize("initializer", ["auto", "xavier", "depth_scaled", "dimension_averaged"])
def test_the_initializer_option_sets_each_kernels_variance(family, kernel, initializer):
    keras.utils.set_random_seed(0)
    model = build_transformer_model(INIT_CONFIG, model=family, initializer=initializer)
    weights = {w.path: np.asarray(w, dtype="float64") for w in model.weights}
    m, n = weights[kernel].shape
    layers = INIT_CONFIG["num_hidden_layers"]
    # 0.7737: the variance left of a unit normal cut at ±2 (Keras TruncatedNormal).
    expected = {"auto": 2 / (m + n) if family == "gau_alpha" else 0.02**2 * 0.7737,
                "xavier": 2 / (m + n), "depth_scaled": 1 / (m * layers),
                "dimension_averaged": 1 / np.sqrt(m * n)}[initializer]
    assert weights[kernel].var() == pytest.approx(expected, rel=0.06)
    # Embedding tables keep the family's truncated normal, except under RoFormer-V2's rule,
    # which reads a 100-row table's fan from its rows, as bert4keras does.
    table = weights["Embedding-Token/embeddings"]
    expected = 1 / (100 * layers) if initializer == "depth_scaled" else 0.02**2 * 0.7737
    assert table.var() == pytest.approx(expected, rel=0.06)


# Length extrapolation: NTK-aware RoPE base and the log-n scale -------------------------------
@pytest.mark.parametrize("dim,factor", [(8, 4.0), (64, 8.0), (128, 2.5)])
def test_ntk_base_keeps_the_fastest_rotation_and_slows_the_slowest_by_the_factor(dim, factor):
    from bert4x.layers.rotary import ntk_scaled_base, rotary_frequencies

    plain = rotary_frequencies(dim)
    stretched = rotary_frequencies(dim, ntk_scaled_base(10000.0, factor, dim))
    assert stretched[0] == plain[0] == 1.0
    assert stretched[-1] == pytest.approx(plain[-1] / factor, rel=1e-12)
    # In between, frequency i is divided by factor^(2i/(d−2)): less the faster it turns.
    ratios = plain / stretched
    np.testing.assert_allclose(ratios, factor ** (np.arange(dim // 2) * 2 / (dim - 2)),
                               rtol=1e-12)


def unit_pair(layer_class, scales, **options):
    """Layers of the same weights differing only in their attention scale."""
    x = np.random.default_rng(0).normal(size=(1, 96, 16)).astype("float32")
    layers = [layer_class(attention_scale=scale, name=f"unit_{scale}", **options)
              for scale in scales]
    for layer in layers:
        layer.build(x.shape)
    for layer in layers[1:]:
        layer.set_weights(layers[0].get_weights())
    return x, layers


@pytest.mark.parametrize("unit", ["attention", "gau"])
def test_log_n_scale_is_the_plain_scale_up_to_its_length_and_entropy_invariant_past_it(unit):
    if unit == "attention":
        x, (plain, log_n, entropy_invariant) = unit_pair(
            lambda **kw: MultiHeadAttention(2, 8, rope="1d", **kw),
            ["sqrt", "log_n", "entropy_invariant"], scale_length=32)
    else:
        x, (plain, log_n, entropy_invariant) = unit_pair(
            lambda **kw: GatedAttentionUnit(units=24, key_size=8, **kw),
            ["sqrt", "log_n", "entropy_invariant"], scale_length=32)

    def run(layer, keys):
        mask = np.zeros((1, 1, 1, 96), bool)
        mask[..., :keys] = True
        mask = mask if unit == "attention" else mask[:, 0]
        return keras.ops.convert_to_numpy(layer(x, attention_mask=mask))

    for keys in (20, 32):  # within the length: exactly the plain scale
        np.testing.assert_allclose(run(log_n, keys), run(plain, keys), atol=1e-6)
    for keys in (48, 96):  # past it: log(n)/log(32), as the entropy-invariant scale there
        np.testing.assert_allclose(run(log_n, keys), run(entropy_invariant, keys), atol=1e-5)
        assert np.abs(run(log_n, keys) - run(plain, keys)).max() > 1e-4


def test_length_options_refuse_what_they_cannot_mean():
    config = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=20)
    with pytest.raises(ConfigError, match="'rope_ntk_factor' must be a number >= 1"):
        build_transformer_model(config, model="roformer", rope_ntk_factor=0.5)
    with pytest.raises(ConfigError, match="'attention_scale_length' must be an integer"):
        build_transformer_model(config, model="roformer", attention_scale_length=1)
    with pytest.raises(ValueError, match="built without RoPE"):
        build_transformer_model(config, model="bert", rope_ntk_factor=2.0)
    with pytest.raises(ValueError, match="log-n scale belongs to softmax attention"):
        build_transformer_model(config, model="flash", attention_scale="log_n")
    with pytest.raises(CheckpointError, match="rope_ntk_factor"):
        build_transformer_model(config, model="roformer", rope_ntk_factor=2.0,
                                return_keras_model=False).export_huggingface("unused")
