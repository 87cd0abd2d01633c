"""Decoding: the cache changes nothing but speed; beams, sampling, hooks; the compact Trie."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert4x import build_transformer_model
from bert4x.generation import AutoRegressiveDecoder, Trie

END = 3
PREFIX = [2, 5, 7, 9, 4]
TINY = dict(vocab_size=24, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
# (family, application, config changes): both applications, learned, rotary and relative
# positions, GAU units, pre-norm and shared blocks, and the attention options that touch the
# logits.
CASES = [
    ("bert", "lm", {}),
    ("roformer", "unilm", {}),
    ("roformer_v2", "lm", dict(residual_attention_scores=True, talking_heads=True)),
    ("bert", "unilm", dict(attention_scale="entropy_invariant", key_size=12)),
    ("gau_alpha", "unilm", dict(key_size=8)),
    ("nezha", "unilm", dict(max_relative_position=3)),  # clipped well inside the sequence
    ("gpt2", "lm", dict(type_vocab_size=0)),
    ("gpt", "lm", {}),
    ("gpt2_ml", "lm", dict(type_vocab_size=0)),
    ("albert", "unilm", dict(embedding_size=8)),
]


def tiny_model(family, application, seed=1, **changes):
    keras.utils.set_random_seed(seed)
    return build_transformer_model({**TINY, **changes}, model=family, application=application,
                                   with_mlm=True)


def decoders(model, **options):
    return (AutoRegressiveDecoder(model, end_id=END, **options),
            AutoRegressiveDecoder(model, end_id=END, use_cache=False, **options))


def assert_same(cached, full):
    assert [h.tokens for h in cached] == [h.tokens for h in full]
    np.testing.assert_allclose([h.log_prob for h in cached], [h.log_prob for h in full],
                               atol=1e-4)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{case[1]}")
def case_decoders(request):
    family, application, changes = request.param
    model = tiny_model(family, application, **changes)
    return model, decoders(model, max_new_tokens=10)


def test_cache_gives_the_same_tokens_and_scores(case_decoders):
    _, (cached, full) = case_decoders
    assert_same([cached.greedy(PREFIX)], [full.greedy(PREFIX)])
    assert_same(cached.beam_search(PREFIX, beam_size=3), full.beam_search(PREFIX, beam_size=3))
    assert_same(cached.sample(PREFIX, num_samples=4, seed=7),
                full.sample(PREFIX, num_samples=4, seed=7))
    assert_same(cached.sample(PREFIX, num_samples=3, top_k=5, top_p=0.9, temperature=0.7,
                              seed=3),
                full.sample(PREFIX, num_samples=3, top_k=5, top_p=0.9, temperature=0.7, seed=3))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the switch to XLA for repeated step shapes is TensorFlow's")
@pytest.mark.parametrize("family,application,changes", [CASES[1], CASES[4], CASES[6]],
                         ids=["roformer-unilm", "gau_alpha-unilm", "gpt2-lm"])
def test_steps_compiled_with_xla_give_the_same_beams(family, application, changes,
                                                     monkeypatch):
    from bert4x.generation import runners

    monkeypatch.setattr(runners, "XLA_AFTER_CALLS", 1)  # every step shape from its 2nd call
    model = tiny_model(family, application, **changes)
    cached, full = decoders(model, max_new_tokens=10)
    assert_same(cached.beam_search(PREFIX, beam_size=3), full.beam_search(PREFIX, beam_size=3))
    assert_same([cached.greedy(PREFIX)], [full.greedy(PREFIX)])
    assert cached.runner.step_function.xla.experimental_get_tracing_count() >= 2


def test_the_xla_switch_counts_shapes_inside_nested_inputs_apart(monkeypatch):
    """The caches are lists of per-layer tensors: the one-row cache of the first step after a
    prefix must not count as the beam's shape, or it costs a second XLA compilation."""
    from bert4x.generation import runners

    monkeypatch.setattr(runners, "XLA_AFTER_CALLS", 1)
    used = []
    switch = runners.XlaOnceRepeated(lambda inputs: used.append("graph"),
                                     lambda inputs: used.append("xla"))
    one_row = [np.zeros(1), [np.zeros((1, 8)), np.zeros((1, 8))]]
    beam = [np.zeros(1), [np.zeros((4, 8)), np.zeros((4, 8))]]
    for inputs in (one_row, beam, beam, one_row):
        switch(inputs)
    assert used == ["graph", "graph", "xla", "xla"]


def full_log_prob(model, prefix, tokens, new_segment):
    """Sum of the model's log-probabilities of ``tokens`` after ``prefix``, one full pass."""
    sequence = np.array([list(prefix) + list(tokens)])
    segments = np.array([[0] * len(prefix) + [new_segment] * len(tokens)])
    probs = np.asarray(model.predict([sequence, segments], verbose=0), dtype="float64")[0]
    positions = np.arange(len(prefix) - 1, sequence.shape[1] - 1)
    return float(np.log(probs[positions, tokens]).sum())


def test_beam_scores_are_summed_log_probabilities_and_sorted(case_decoders):
    model, (cached, _) = case_decoders
    new_segment = 1 if model.get_layer("Attention-Mask").application == "unilm" else 0
    beams = cached.beam_search(PREFIX, beam_size=4, num_results=4)
    assert len(beams) == 4
    scores = [h.score for h in beams]
    assert scores == sorted(scores, reverse=True)
    for hypothesis in beams:
        assert hypothesis.log_prob == pytest.approx(
            full_log_prob(model, PREFIX, hypothesis.tokens, new_segment), abs=1e-4)


def test_beam_of_one_is_greedy_and_top_k_one_sampling_is_greedy(case_decoders):
    _, (cached, _) = case_decoders
    greedy = cached.greedy(PREFIX)
    (beam,) = cached.beam_search(PREFIX, beam_size=1)
    assert beam.tokens == greedy.tokens
    assert beam.log_prob == pytest.approx(greedy.log_prob, abs=1e-9)
    for sample in cached.sample(PREFIX, num_samples=2, top_k=1, seed=0):
        assert sample.tokens == greedy.tokens


def test_ends_after_min_ends_end_tokens_and_length_penalty_normalises():
    model = tiny_model("roformer", "lm")
    always_end = lambda generated, scores: np.where(  # noqa: E731
        np.arange(scores.shape[1]) == END, scores, scores - 50.0)
    decoder = AutoRegressiveDecoder(model, end_id=END, min_ends=2, max_new_tokens=6)
    hypothesis = decoder.greedy(PREFIX, score_fn=always_end)
    assert hypothesis.tokens == [END, END] and hypothesis.finished
    (beam,) = AutoRegressiveDecoder(model, end_id=END, max_new_tokens=6).beam_search(
        PREFIX, beam_size=2, num_results=1, length_penalty=1.0)
    assert beam.score == pytest.approx(beam.log_prob / len(beam.tokens))


def test_score_fn_sees_each_row_and_can_forbid_tokens():
    model = tiny_model("roformer", "unilm")
    decoder = AutoRegressiveDecoder(model, end_id=None, max_new_tokens=5)
    favourite = decoder.greedy(PREFIX).tokens[0]
    seen = []

    def forbid_favourite(generated, scores):
        seen.append([list(tokens) for tokens in generated])
        scores = scores.copy()
        scores[:, favourite] = -np.inf
        return scores

    for hypothesis in decoder.beam_search(PREFIX, beam_size=3, score_fn=forbid_favourite):
        assert favourite not in hypothesis.tokens
    assert seen[0] == [[]] and max(len(rows) for rows in seen) == 3


# Constrained decoding ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def constrained_decoders():
    return {application: AutoRegressiveDecoder(tiny_model("roformer", application, seed=2),
                                               end_id=None, max_new_tokens=7)
            for application in ("lm", "unilm")}


keys_strategy = st.lists(st.lists(st.integers(1, 23), min_size=1, max_size=6), min_size=1,
                         max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=keys_strategy, application=st.sampled_from(["lm", "unilm"]),
       seed=st.integers(0, 2 ** 16))
def test_constrained_decoding_only_produces_trie_keys(constrained_decoders, keys, application,
                                                      seed):
    trie = Trie()
    for key in keys:
        trie.add(key)
    decoder = constrained_decoders[application]
    results = [decoder.greedy(PREFIX, constraint=trie)]
    results += decoder.beam_search(PREFIX, beam_size=3, num_results=1, constraint=trie)
    results += decoder.sample(PREFIX, num_samples=2, seed=seed, constraint=trie)
    for hypothesis in results:
        assert hypothesis.finished and tuple(hypothesis.tokens) in trie


def test_constraint_accepts_a_plain_function():
    decoder = AutoRegressiveDecoder(tiny_model("bert", "lm"), end_id=END, max_new_tokens=4)
    hypothesis = decoder.greedy(PREFIX, constraint=lambda generated: [7] if len(generated) < 3
                                else [END])
    assert hypothesis.tokens == [7, 7, 7, END]


# Bad input -----------------------------------------------------------------------------------

def test_bad_decoding_arguments_are_refused():
    model = tiny_model("roformer", "unilm")
    with pytest.raises(ValueError, match="max_new_tokens"):
        AutoRegressiveDecoder(model, end_id=END, max_new_tokens=0)
    decoder = AutoRegressiveDecoder(model, end_id=END, max_new_tokens=3)
    with pytest.raises(ValueError, match="beam_size"):
        decoder.beam_search(PREFIX, beam_size=0)
    with pytest.raises(ValueError, match="num_results"):
        decoder.beam_search(PREFIX, beam_size=2, num_results=3)
    with pytest.raises(ValueError, match="non-empty"):
        decoder.greedy([])
    with pytest.raises(ValueError, match="padding"):
        decoder.greedy([2, 0, 4])
    with pytest.raises(ValueError, match="trie is empty"):
        decoder.greedy(PREFIX, constraint=Trie())
    with pytest.raises(ValueError, match="temperature"):
        decoder.sample(PREFIX, temperature=0)
    with pytest.raises(ValueError, match="application"):
        AutoRegressiveDecoder(build_transformer_model(TINY, with_mlm=True), end_id=END)
    long_prefix = list(range(1, 20)) * 3
    with pytest.raises(ValueError, match="max_position_embeddings"):
        AutoRegressiveDecoder(tiny_model("bert", "lm"), end_id=END, max_new_tokens=8).greedy(
            long_prefix)


# Trie ----------------------------------------------------------------------------------------

class DictTrie:
    """The reference: the KgCLUE baseline's dict-of-dicts, values in a list at key ends."""

    END = "<values>"

    def __init__(self):
        self.root = {}

    def add(self, key, value=None):
        node = self.root
        for token in key:
            node = node.setdefault(token, {})
        values = node.setdefault(self.END, [])
        if value is not None:
            values.append(value)

    def node(self, prefix):
        node = self.root
        for token in prefix:
            if token not in node:
                return None
            node = node[token]
        return node

    def next_tokens(self, prefix):
        return sorted(token for token in self.node(prefix) if token != self.END)

    def keys(self, node=None, prefix=()):
        node = self.root if node is None else node
        for token, child in node.items():
            if token == self.END:
                yield prefix
            else:
                yield from self.keys(child, prefix + (token,))


trie_keys = st.lists(st.tuples(st.lists(st.integers(0, 70000), min_size=1, max_size=7),
                               st.one_of(st.none(), st.text(max_size=6))), max_size=60)


@settings(max_examples=60, deadline=None)
@given(entries=trie_keys, narrow=st.booleans())
def test_trie_matches_the_dict_of_dicts_reference_and_survives_a_round_trip(
        tmp_path_factory, entries, narrow):
    if narrow:  # small alphabets make long shared prefixes
        entries = [([token % 4 for token in key], value) for key, value in entries]
    trie, reference = Trie(vocab_size=70001), DictTrie()
    for key, value in entries:
        trie.add(key, value)
        reference.add(key, value)
    directory = tmp_path_factory.mktemp("trie")
    loaded = Trie.load(trie.save(directory))
    expected_keys = sorted(reference.keys())
    for candidate in (trie, loaded):
        assert len(candidate) == len(expected_keys)
        assert list(candidate.keys()) == expected_keys
        for key in expected_keys:
            assert key in candidate
            assert candidate.get(key) == reference.node(key)[DictTrie.END]
            for cut in range(len(key) + 1):
                assert candidate.next_tokens(key[:cut]).tolist() == \
                    reference.next_tokens(key[:cut])


def test_trie_lookups_and_errors(tmp_path):
    trie = Trie()
    trie.add([5, 6, 7], "水果")
    trie.add([5, 6, 7], "苹果")
    trie.add([5, 6])
    trie.add([5, 9, 1, 2], "x")
    assert trie.get([5, 6, 7]) == ["水果", "苹果"] and trie.get([5, 6]) == []
    assert trie.next_tokens([]).tolist() == [5] and trie.next_tokens([5]).tolist() == [6, 9]
    assert trie.next_tokens([5, 6, 7]).tolist() == []
    assert list(trie.keys([5, 9])) == [(5, 9, 1, 2)]
    assert [5] not in trie and trie.get([5], default=None) is None
    with pytest.raises(KeyError, match="not in the trie"):
        trie.next_tokens([5, 8])
    with pytest.raises(KeyError, match="not a key"):
        trie.get([5, 9])
    with pytest.raises(RuntimeError, match="immutable"):
        trie.add([1])
    with pytest.raises(ValueError, match="non-empty"):
        Trie().add([])
    with pytest.raises(ValueError, match="vocab_size"):
        Trie().add([70000])
    with pytest.raises(TypeError, match="strings"):
        Trie().add([1], 5)
    with pytest.raises(ValueError, match="empty"):
        Trie().next_tokens([])
    with pytest.raises(FileNotFoundError, match="trie.json"):
        Trie.load(tmp_path)
    loaded = Trie.load(trie.save(tmp_path / "saved"))
    assert isinstance(loaded.arrays["tokens"], np.memmap)
    assert loaded.get([5, 6, 7]) == ["水果", "苹果"]
