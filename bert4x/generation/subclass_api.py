"""bert4keras' decoder subclass API, run by our search algorithms.

A bert4keras script subclasses ``AutoRegressiveDecoder(start_id, end_id, maxlen, minlen)``,
writes ``predict(self, inputs, output_ids, states)`` under
``@AutoRegressiveDecoder.wraps(default_rtype, use_states)`` and calls ``beam_search(inputs,
topk)`` or ``random_sample(inputs, n, topk, topp)``. Here those two run
:class:`~bert4x.generation.decoding.SearchAlgorithms`, the beam search and sampling of
:class:`bert4x.generation.AutoRegressiveDecoder`, over a runner that asks the script's
``predict`` for each step; so a script gets the same beams as our own decoder.

``last_token(model)``, which scripts call inside ``predict``, returns the model's output at the
last position. For a model built by bert4x it keeps a key/value cache between calls: when the
rows of a call extend the rows of the previous call by one token (as they do during a search),
only that token is run through the model.

Differences from bert4keras: token id 0 (padding) is never generated; ``minlen`` forbids the
end token until the output is ``minlen`` long (bert4keras let it appear and went on);
``random_sample`` draws from a generator seeded from NumPy's global state, so
``np.random.seed`` still makes a run repeatable.
"""

from __future__ import annotations

import functools
from typing import Dict, List, Optional, Tuple

import numpy as np
from keras import ops

from bert4x.generation.decoding import SearchAlgorithms, bert4x_layer, model_runner
from bert4x.generation.runners import compile_function, log_softmax

__all__ = ["AutoRegressiveDecoder"]


class AutoRegressiveDecoder:
    """Base class of a script's decoder: subclass it and write a wrapped ``predict``."""

    def __init__(self, start_id: Optional[int], end_id: Optional[int], maxlen: int,
                 minlen: int = 1):
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.start_id, self.end_id, self.maxlen, self.minlen = start_id, end_id, maxlen, minlen
        self.first_output_ids = (np.empty((1, 0), dtype=int) if start_id is None
                                 else np.array([[start_id]]))
        self.models: Dict[int, LastTokenPredictor] = {}

    @staticmethod
    def wraps(default_rtype: str = "probas", use_states: bool = False):
        """Decorate ``predict(self, inputs, output_ids, states)``, which returns the next-token
        probabilities (``default_rtype="probas"``) or logits (``"logits"``) [rows, vocab], plus
        the new states when ``use_states``. The wrapped method takes ``temperature`` and
        ``rtype`` and returns ``(probabilities or log-probabilities, states)``."""
        if default_rtype not in ("probas", "logits"):
            raise ValueError(f"default_rtype must be 'probas' or 'logits', got {default_rtype!r}")

        def decorate(predict):
            @functools.wraps(predict)
            def wrapped(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(f"rtype must be 'probas' or 'logits', got {rtype!r}")
                prediction = predict(self, inputs, output_ids, states)
                scores, states = prediction if use_states else (prediction, None)
                scores = np.asarray(scores, dtype="float64")
                with np.errstate(divide="ignore"):
                    if default_rtype == "probas":
                        scores = np.log(scores)
                    log_probs = log_softmax(scores / temperature)
                return (np.exp(log_probs) if rtype == "probas" else log_probs), states
            return wrapped
        return decorate

    def predict(self, inputs, output_ids, states=None):
        raise NotImplementedError("subclass AutoRegressiveDecoder and write predict(self, "
                                  "inputs, output_ids, states) under "
                                  "@AutoRegressiveDecoder.wraps(...)")

    def last_token(self, model):
        """A predictor of ``model``'s output at the last position (``.predict(inputs)``),
        kept per model; cached between calls for bert4x models (see the module docstring)."""
        if id(model) not in self.models:
            self.models[id(model)] = LastTokenPredictor(model, self.maxlen + 1)
        return self.models[id(model)]

    def beam_search(self, inputs, topk: int, states=None, temperature=1, min_ends: int = 1):
        """The best output ids (``start_id`` first, if any) by beam search with ``topk``
        beams."""
        search = self._search(states, temperature, min_ends)
        (best,) = search.beam_search(inputs, beam_size=topk, num_results=1,
                                     score_fn=self._minimum_length)
        return self._with_start(best.tokens)

    def random_sample(self, inputs, n: int, topk: Optional[int] = None,
                      topp: Optional[float] = None, states=None, temperature=1,
                      min_ends: int = 1) -> List[np.ndarray]:
        """``n`` sampled output ids, from the ``topk`` most likely tokens and/or the smallest
        set reaching probability ``topp`` at each step."""
        search = self._search(states, temperature, min_ends)
        samples = search.sample(inputs, num_samples=n, top_k=topk, top_p=topp,
                                seed=np.random.randint(2 ** 31), score_fn=self._minimum_length)
        return [self._with_start(sample.tokens) for sample in samples]

    def _search(self, states, temperature, min_ends) -> SearchAlgorithms:
        runner = PredictRunner(self, states, temperature)
        return SearchAlgorithms(runner, self.end_id, max_new_tokens=self.maxlen,
                                min_ends=min_ends)

    def _minimum_length(self, generated, scores):
        """No end token before the output (with its start token) is ``minlen`` long."""
        if self.end_id is None:
            return scores
        short = [len(tokens) + 1 + self.first_output_ids.shape[1] < self.minlen
                 for tokens in generated]
        scores[np.asarray(short, dtype=bool), self.end_id] = -np.inf
        return scores

    def _with_start(self, tokens) -> np.ndarray:
        return np.concatenate([self.first_output_ids[0], np.asarray(tokens, dtype=int)])


class PredictRunner:
    """A runner (see :mod:`bert4x.generation.runners`) that asks the script's ``predict`` for
    (tempered) log-probabilities: rows are the output ids so far, each next to the one input
    being decoded."""

    def __init__(self, decoder: AutoRegressiveDecoder, states, temperature):
        self.decoder, self.states, self.temperature = decoder, states, temperature
        self.inputs = self.output_ids = None

    def start(self, inputs, max_new_tokens: int) -> np.ndarray:
        self.inputs = [np.array([item]) for item in inputs]
        self.output_ids = self.decoder.first_output_ids
        return self._predict()

    def advance(self, parents, tokens) -> np.ndarray:
        parents = np.asarray(parents, dtype=int)
        self.inputs = [np.repeat(item[:1], len(parents), axis=0) for item in self.inputs]
        self.output_ids = np.concatenate(
            [self.output_ids[parents], np.asarray(tokens, dtype=int)[:, None]], axis=1)
        return self._predict()

    def _predict(self) -> np.ndarray:
        log_probs, self.states = self.decoder.predict(self.inputs, self.output_ids, self.states,
                                                      self.temperature, "logits")
        return log_probs


class LastTokenPredictor:
    """``model``'s outputs at the last position of ``[token_ids, segment_ids]`` rows.

    For a model built by bert4x (one MLM output, decodable), or a model whose one output is
    that MLM output passed through ``Loss`` layers (a script's training model), calls whose
    rows extend the previous call's rows by one token go through a key/value cache; anything
    else (a first call whose rows differ, other models, more outputs) runs the whole model.
    """

    def __init__(self, model, max_new_tokens: int):
        self.model, self.max_new_tokens = model, max_new_tokens
        self._full = compile_function(lambda inputs: model(inputs, training=False))
        self.bert4x_model = _bert4x_model_behind(model)
        self.rows: Dict[Tuple[int, ...], int] = {}  # the cached rows, by their tokens
        self.runner = None
        if self.bert4x_model is not None:
            try:
                self.runner = model_runner(self.bert4x_model, use_cache=True)
            except ValueError:  # not incrementally decodable (conditional norms, FLASH chunks)
                self.runner = None

    def __call__(self, inputs):
        return self.predict(inputs)

    def predict(self, inputs, **_):
        if self.runner is not None and len(inputs) == 2:
            token_ids, segment_ids = (np.asarray(x) for x in inputs)
            logits = self._cached(token_ids.astype("int32"), segment_ids.astype("int32"))
            if logits is not None:
                activation = bert4x_layer(self.bert4x_model, "MLM-Activation").activation
                return ops.convert_to_numpy(activation(ops.convert_to_tensor(logits)))
        self.rows = {}
        outputs = self._full(list(inputs))
        if isinstance(outputs, (list, tuple)):
            return [ops.convert_to_numpy(output)[:, -1] for output in outputs]
        return ops.convert_to_numpy(outputs)[:, -1]

    def _cached(self, token_ids, segment_ids):
        """The last position's logits through the cache, or None where it cannot serve."""
        runner = self.runner
        new_segment = runner.new_segment_id
        if self.rows and token_ids.shape[1] == runner.length + 1 \
                and runner.length < runner.max_len \
                and (segment_ids[:, -1] == new_segment).all():
            parents = [self.rows.get(tuple(row[:-1])) for row in token_ids]
            if None not in parents:
                runner.advance(parents, token_ids[:, -1])
                self._remember(token_ids)
                return runner.last_logits
        if token_ids.shape[0] != 1:
            return None
        # A new prefix: the source segment (zeros) at once, then any tail of new-segment tokens
        # (a start token) one by one, as the search itself would add them.
        row, segments = token_ids[0], segment_ids[0]
        source = int(np.argmax(segments != 0)) if new_segment and (segments != 0).any() \
            else len(row)
        if source == 0 or (segments[:source] != 0).any() \
                or (segments[source:] != new_segment).any():
            return None
        runner.start(row[:source], self.max_new_tokens + len(row) - source)
        for position in range(source, len(row)):
            runner.advance([0], row[position:position + 1])
        self._remember(token_ids)
        return runner.last_logits

    def _remember(self, token_ids):
        self.rows = {tuple(row): index for index, row in enumerate(token_ids)}


def _bert4x_model_behind(model):
    """The bert4x model whose MLM output ``model``'s single output is, directly or through
    :class:`~bert4x.layers.Loss` layers (which pass a chosen input through); else None."""
    from bert4x.layers import Loss

    if len(model.outputs) != 1:
        return None
    tensor = model.outputs[0]
    while True:
        layer, node_index, _ = tensor._keras_history
        builder = getattr(layer, "_bert4x_builder", None)
        if builder is not None:
            return builder.built_model
        if not isinstance(layer, Loss) or not isinstance(layer.output_axis, int):
            return None
        inputs = layer._inbound_nodes[node_index].arguments.args[0]
        tensor = inputs[layer.output_axis]
