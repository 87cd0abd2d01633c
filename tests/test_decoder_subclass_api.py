"""bert4keras' decoder subclass API (``bert4x.snippets.AutoRegressiveDecoder``): a script-style
UniLM decoder gives the same beams as our decoder, with and without ``use_states``, through
the key/value cache; sampling, temperature and ``minlen`` behave as documented."""

import numpy as np
import pytest

from bert4x.generation import AutoRegressiveDecoder as OurDecoder
from bert4x.snippets import AutoRegressiveDecoder
from tests.test_generation import END, tiny_model

SOURCE = [2, 5, 7, 9, 4]


class TitleDecoder(AutoRegressiveDecoder):
    """The seq2seq decoder of bert4keras' title-generation example, as scripts write it."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(self.model).predict([token_ids, segment_ids])

    def generate(self, source, topk=3):
        output_ids = self.beam_search([source, np.zeros_like(source)], topk=topk)
        return output_ids.tolist()


class StatefulDecoder(TitleDecoder):
    """Same model under ``use_states``: states count the steps, as some examples do."""

    @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
    def predict(self, inputs, output_ids, states):
        self.steps_seen.append(states)
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(self.model).predict([token_ids, segment_ids]), (states or 0) + 1


@pytest.fixture(scope="module")
def model():
    return tiny_model("roformer", "unilm", seed=4)


@pytest.mark.parametrize("topk", [1, 3])
def test_script_decoder_gives_our_decoders_beams_through_the_cache(model, topk):
    ours = OurDecoder(model, end_id=END, max_new_tokens=8).beam_search(
        SOURCE, beam_size=topk, num_results=1)[0]
    script = TitleDecoder(model, start_id=None, end_id=END, maxlen=8)
    assert script.generate(np.array(SOURCE), topk=topk) == ours.tokens
    predictor = script.last_token(model)
    assert predictor.runner is not None and predictor.runner.length > len(SOURCE)
    stateful = StatefulDecoder(model, start_id=None, end_id=END, maxlen=8)
    stateful.steps_seen = []
    assert stateful.generate(np.array(SOURCE), topk=topk) == ours.tokens
    assert stateful.steps_seen == [None] + list(range(1, len(stateful.steps_seen)))


def test_cached_predictions_equal_the_whole_model(model):
    script = TitleDecoder(model, start_id=None, end_id=END, maxlen=4)
    predictor = script.last_token(model)
    token_ids = np.array([SOURCE + [6, 8], SOURCE + [6, 10]])
    segment_ids = np.array([[0] * 5 + [1, 1]] * 2)
    predictor.predict([token_ids[:1, :6], segment_ids[:1, :6]])  # start: source + one token
    cached = predictor.predict([token_ids, segment_ids])
    whole = model.predict([token_ids, segment_ids], verbose=0)[:, -1]
    np.testing.assert_allclose(cached, whole, atol=1e-5)
    assert predictor.runner.length == 7  # the second call ran one token per row


def test_start_token_and_minlen(model):
    script = TitleDecoder(model, start_id=7, end_id=END, maxlen=6, minlen=4)
    output = script.generate(np.array(SOURCE), topk=2)
    assert output[0] == 7
    assert END not in output[:3]  # no end before the output is minlen long


def test_random_sample_is_repeatable_under_numpy_seed_and_respects_topk(model):
    script = TitleDecoder(model, start_id=None, end_id=END, maxlen=5)
    inputs = [np.array(SOURCE), np.zeros(5, dtype=int)]
    np.random.seed(0)
    first = script.random_sample(inputs, n=4, topk=2)
    np.random.seed(0)
    again = script.random_sample(inputs, n=4, topk=2)
    assert [s.tolist() for s in first] == [s.tolist() for s in again]
    assert len(first) == 4
    greedy_first = OurDecoder(model, end_id=END, max_new_tokens=1).greedy(SOURCE).tokens[0]
    one_choice = script.random_sample(inputs, n=3, topk=1)
    assert all(sample[0] == greedy_first for sample in one_choice)


def test_wraps_temperature_and_rtype():
    class Fixed(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="logits")
        def predict(self, inputs, output_ids, states):
            return np.array([[1.0, 2.0, 3.0]])

    decoder = Fixed(start_id=None, end_id=2, maxlen=3)
    probas, _ = decoder.predict([], None, None, temperature=2, rtype="probas")
    expected = np.exp(np.array([1.0, 2.0, 3.0]) / 2)
    np.testing.assert_allclose(probas[0], expected / expected.sum())
    log_probs, _ = decoder.predict([], None, None, rtype="logits")
    np.testing.assert_allclose(np.exp(log_probs).sum(), 1.0)
    with pytest.raises(ValueError, match="rtype must be 'probas' or 'logits'"):
        decoder.predict([], None, None, rtype="scores")
    with pytest.raises(NotImplementedError, match="subclass AutoRegressiveDecoder"):
        AutoRegressiveDecoder(None, 2, 3).predict([], None)


def test_a_training_model_with_a_loss_layer_decodes_through_the_cache(model):
    """The seq2seq examples decode with their training model (outputs behind a Loss layer)."""
    import keras

    from bert4x.layers import Loss

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            return keras.ops.mean(inputs[2])

    output = CrossEntropy(2)(model.inputs + model.outputs)
    train_model = keras.Model(model.inputs, output)
    script = TitleDecoder(train_model, start_id=None, end_id=END, maxlen=8)
    expected = OurDecoder(model, end_id=END, max_new_tokens=8).beam_search(
        SOURCE, beam_size=2, num_results=1)[0]
    assert script.generate(np.array(SOURCE), topk=2) == expected.tokens
    assert script.last_token(train_model).runner is not None
