"""Greedy search, beam search and sampling for ``lm`` and ``unilm`` models.

One :class:`AutoRegressiveDecoder` wraps a model built by :func:`bert4x.build_transformer_model`
(``application="lm"`` or ``"unilm"``, ``with_mlm`` set). It decodes one input at a time; the
rows of a step (beams, samples) run as one batch through a key/value cache. The algorithms
live in :class:`SearchAlgorithms`, which runs over any runner: bert4keras' subclass API
(:mod:`bert4x.generation.subclass_api`) drives them with the user's ``predict``.

Hooks shared by all three algorithms, applied to each step's log-probabilities [rows, vocab]:

* ``score_fn(generated, scores) -> scores``: re-weights scores (``generated`` is the list of each
  row's tokens so far). Early stopping in beam search assumes scores stay ≤ 0, as
  log-probabilities and their positive multiples do.
* ``constraint``: an object with ``next_tokens(prefix)`` (such as :class:`~bert4x.generation.Trie`)
  or a callable; it returns the tokens allowed after a row's generated tokens. The others get
  -inf. An empty answer means the row is complete (for a trie: a whole key was generated).

Token id 0 is padding and is never generated. A row ends when it has produced ``end_id``
``min_ends`` times, when the constraint allows nothing more, or after ``max_new_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from bert4x.generation.entropy import normalize_entropy
from bert4x.generation.runners import (
    CachedRunner, EncoderDecoderFullRunner, EncoderDecoderRunner, FullRunner, compile_function,
)

NEG_INF = -np.inf


@dataclass
class Hypothesis:
    """A generated continuation: ``tokens`` (prefix excluded), ``log_prob`` (sum of the chosen
    tokens' step scores), ``score`` (``log_prob`` after the length penalty) and ``finished``
    (False when it stopped at ``max_new_tokens``)."""

    tokens: List[int]
    log_prob: float
    score: float
    finished: bool


class SearchAlgorithms:
    """Greedy search, beam search and sampling over a runner (see
    :mod:`bert4x.generation.runners`): anything with ``start(prefix, max_new_tokens)`` and
    ``advance(parents, tokens)`` returning next-token log-probabilities [rows, vocab]."""

    def __init__(self, runner, end_id: Optional[int], max_new_tokens: int = 32, min_ends: int = 1):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if min_ends < 1:
            raise ValueError(f"min_ends must be >= 1, got {min_ends}")
        self.runner = runner
        self.end_id, self.max_new_tokens, self.min_ends = end_id, max_new_tokens, min_ends

    # Algorithms ----------------------------------------------------------------------------
    def greedy(self, prefix: Sequence[int], constraint=None,
               score_fn: Optional[Callable] = None) -> Hypothesis:
        """The highest-scoring token at every step."""
        log_probs = self._start(prefix)
        tokens, total = [], 0.0
        for _ in range(self.max_new_tokens):
            scores, complete = self._scores(log_probs, [tokens], constraint, score_fn)
            if complete[0]:
                return Hypothesis(tokens, total, total, True)
            token = int(np.argmax(scores[0]))
            tokens.append(token)
            total += float(scores[0, token])
            if self._ended(tokens):
                return Hypothesis(tokens, total, total, True)
            if len(tokens) < self.max_new_tokens:
                log_probs = self.runner.advance([0], [token])
        return Hypothesis(tokens, total, total, False)

    def beam_search(self, prefix: Sequence[int], beam_size: int = 4,
                    num_results: Optional[int] = None, length_penalty: float = 0.0,
                    constraint=None, score_fn: Optional[Callable] = None) -> List[Hypothesis]:
        """The ``num_results`` (default ``beam_size``) best hypotheses, best first.

        Keeps ``beam_size`` unfinished rows; each step looks at the best 2·``beam_size``
        extensions, so finishing rows never starve the beam. A hypothesis' ``score`` is its
        ``log_prob`` divided by ``len(tokens) ** length_penalty``. Search stops once no row can
        still beat the ``num_results``-th finished hypothesis.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        num_results = beam_size if num_results is None else num_results
        if not 1 <= num_results <= beam_size:
            raise ValueError(f"num_results must be in [1, beam_size={beam_size}], "
                             f"got {num_results}")
        normalise = lambda total, length: total / max(length, 1) ** length_penalty  # noqa: E731
        log_probs = self._start(prefix)
        alive, alive_totals = [[]], np.zeros(1)
        finished: List[Hypothesis] = []
        for step in range(self.max_new_tokens):
            scores, complete = self._scores(log_probs, alive, constraint, score_fn)
            for row in np.flatnonzero(complete):
                finished.append(Hypothesis(alive[row], alive_totals[row],
                                           normalise(alive_totals[row], step), True))
            totals = alive_totals[:, None] + scores
            totals[complete] = NEG_INF
            flat = totals.ravel()
            order = _top_indices(flat, 2 * beam_size)
            parents, tokens, next_alive, next_totals = [], [], [], []
            for rank, candidate in enumerate(order):
                if flat[candidate] == NEG_INF or len(next_alive) == beam_size:
                    break
                parent, token = divmod(int(candidate), scores.shape[1])
                sequence = alive[parent] + [token]
                if self._ended(sequence):
                    if rank < beam_size:
                        finished.append(Hypothesis(sequence, flat[candidate],
                                                   normalise(flat[candidate], step + 1), True))
                    continue
                parents.append(parent), tokens.append(token)
                next_alive.append(sequence), next_totals.append(flat[candidate])
            alive, alive_totals = next_alive, np.asarray(next_totals)
            if not alive or self._beam_done(finished, alive_totals, num_results, step + 1,
                                            length_penalty):
                break
            if step + 1 < self.max_new_tokens:
                log_probs = self.runner.advance(parents, tokens)
        finished += [Hypothesis(tokens, total, normalise(total, len(tokens)), False)
                     for tokens, total in zip(alive, alive_totals)
                     if len(finished) < num_results]
        finished.sort(key=lambda hypothesis: -hypothesis.score)
        return [Hypothesis(h.tokens, float(h.log_prob), float(h.score), h.finished)
                for h in finished[:num_results]]

    def sample(self, prefix: Sequence[int], num_samples: int = 1, temperature: float = 1.0,
               top_k: Optional[int] = None, top_p: Optional[float] = None, seed=None,
               constraint=None, score_fn: Optional[Callable] = None,
               entropy: Optional[float] = None) -> List[Hypothesis]:
        """``num_samples`` independent samples from the (filtered, tempered) distribution.

        ``top_k`` keeps the k best tokens, ``top_p`` the smallest set whose probability reaches
        p; ``seed`` makes the draw reproducible. ``log_prob`` sums the untempered step scores.
        ``entropy`` (nats) replaces the fixed temperature by the one that gives each step's
        top-k candidates that entropy (:mod:`bert4x.generation.entropy`): as spread when the
        model is sure as when it is not. top-p then cuts that distribution.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if entropy is not None and temperature != 1.0:
            raise ValueError("give a temperature or a target entropy, not both: the entropy "
                             "sets the temperature of each step")
        if entropy is not None and not (np.isfinite(entropy) and entropy >= 0):
            raise ValueError(f"entropy must be a finite number of nats >= 0, got {entropy}")
        rng = np.random.default_rng(seed)
        log_probs = self._start(prefix)[[0] * num_samples]
        rows = list(range(num_samples))  # the samples still running, in runner order
        runner_rows = [0] * num_samples  # their rows in the runner (all share the prefix at first)
        generated = [[] for _ in rows]
        totals = np.zeros(num_samples)
        done = [False] * num_samples
        for step in range(self.max_new_tokens):
            scores, complete = self._scores(log_probs, [generated[r] for r in rows],
                                            constraint, score_fn)
            parents, tokens, next_rows = [], [], []
            for position, row in enumerate(rows):
                if complete[position]:
                    done[row] = True
                    continue
                token = _draw(scores[position], temperature, top_k, top_p, entropy, rng)
                generated[row].append(token)
                totals[row] += scores[position, token]
                if self._ended(generated[row]):
                    done[row] = True
                    continue
                parents.append(runner_rows[position]), tokens.append(token)
                next_rows.append(row)
            rows, runner_rows = next_rows, list(range(len(next_rows)))
            if not rows or step + 1 == self.max_new_tokens:
                break
            log_probs = self.runner.advance(parents, tokens)
        return [Hypothesis(generated[r], float(totals[r]), float(totals[r]), done[r])
                for r in range(num_samples)]

    # Shared steps ----------------------------------------------------------------------------
    def _start(self, prefix) -> np.ndarray:
        return self.runner.start(prefix, self.max_new_tokens)

    def _scores(self, log_probs, generated, constraint, score_fn):
        """Step scores with padding forbidden, re-weighting and constraint applied, and which
        rows the constraint says are complete."""
        scores = np.array(log_probs, dtype="float64")
        scores[:, 0] = NEG_INF
        if score_fn is not None:
            scores = np.asarray(score_fn(generated, scores), dtype="float64")
        complete = np.zeros(len(generated), dtype=bool)
        if constraint is not None:
            allowed_of = getattr(constraint, "next_tokens", constraint)
            for row, tokens in enumerate(generated):
                allowed = np.asarray(allowed_of(tokens), dtype="int64")
                if allowed.size == 0:
                    complete[row] = True
                    continue
                masked = np.full(scores.shape[1], NEG_INF)
                masked[allowed] = scores[row, allowed]
                scores[row] = masked
        return scores, complete

    def _ended(self, tokens) -> bool:
        return self.end_id is not None and tokens.count(self.end_id) >= self.min_ends

    def _beam_done(self, finished, alive_totals, num_results, length, length_penalty) -> bool:
        """True when no unfinished row can beat the ``num_results``-th finished hypothesis
        (scores only fall as tokens are added; a positive length penalty favours the longest
        possible continuation)."""
        if len(finished) < num_results:
            return False
        worst_kept = sorted((h.score for h in finished), reverse=True)[num_results - 1]
        best = float(np.max(alive_totals))
        longest = self.max_new_tokens if length_penalty > 0 and best < 0 else length
        return best / longest ** length_penalty <= worst_kept


class AutoRegressiveDecoder(SearchAlgorithms):
    """Decode continuations of a token prefix with a bert4x ``lm`` or ``unilm`` model.

    For ``unilm`` the prefix is the source segment (``[CLS] source [SEP]``) and generated tokens
    are segment 1; for ``lm`` everything is segment 0. ``use_cache=False`` re-reads the whole
    sequence each step, which is slower and exists to check the cache.
    """

    def __init__(self, model, end_id: Optional[int], max_new_tokens: int = 32, min_ends: int = 1,
                 use_cache: bool = True):
        super().__init__(model_runner(model, use_cache), end_id, max_new_tokens, min_ends)
        self.vocab_size = bert4x_layer(model, "Embedding-Token").input_dim
        self.max_positions = _max_positions(model)

    def _start(self, prefix) -> np.ndarray:
        prefix = np.asarray(prefix, dtype="int64")
        if prefix.ndim != 1 or prefix.size == 0:
            raise ValueError("prefix must be a non-empty sequence of token ids "
                             "(for UniLM: the encoded source, [CLS] ... [SEP])")
        if prefix.min() < 1 or prefix.max() >= self.vocab_size:
            raise ValueError(f"prefix ids must be in [1, {self.vocab_size}) (0 is padding), "
                             f"got {prefix.min()}..{prefix.max()}")
        if self.max_positions is not None and len(prefix) + self.max_new_tokens > \
                self.max_positions:
            raise ValueError(f"prefix length {len(prefix)} + max_new_tokens "
                             f"{self.max_new_tokens} exceeds max_position_embeddings="
                             f"{self.max_positions}; shorten the prefix")
        return super()._start(prefix)


def model_runner(model, use_cache: bool = True):
    """The runner for a bert4x ``lm``/``unilm`` model, or an encoder-decoder (T5, whose
    prefix is the source): cached, or re-reading every step."""
    builder = getattr(model, "_bert4x_builder", None)
    if builder is not None and hasattr(builder, "cross_cache"):
        return _encoder_decoder_runner(model, builder, use_cache)
    application = _application(model)
    new_segment_id = 1 if application == "unilm" else 0
    if not use_cache:
        logits_model = _logits_model(model)
        return FullRunner(compile_function(lambda inputs: logits_model(inputs, training=False)),
                          new_segment_id)
    builder = getattr(model, "_bert4x_builder", None)
    if builder is None:
        raise ValueError("this model was not built by bert4x.build_transformer_model, so "
                         "it cannot decode incrementally; build it there or pass "
                         "use_cache=False")
    builder.check_decodable()
    step = lambda inputs: builder.decode_step(model, *inputs)  # noqa: E731
    return CachedRunner(step, builder.cache_shapes(),
                        builder.config.num_hidden_layers, causal_prefix=application == "lm",
                        new_segment_id=new_segment_id)


def _encoder_decoder_runner(model, builder, use_cache: bool):
    builder.check_decodable()
    if not use_cache:
        logits_model = _logits_model(model)
        return EncoderDecoderFullRunner(
            compile_function(lambda inputs: logits_model(inputs, training=False)),
            builder.decoder_start_id)
    encode = compile_function(lambda source: builder.cross_cache(model, source))
    step = lambda inputs: builder.decode_step(model, *inputs)  # noqa: E731
    return EncoderDecoderRunner(encode, step, builder.cache_shapes(),
                                builder.decoder_layers, builder.decoder_start_id)


def _top_indices(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest values, best first, ties by index (as a stable sort)."""
    if count < values.size:
        threshold = np.partition(values, values.size - count)[values.size - count]
        candidates = np.flatnonzero(values >= threshold)
    else:
        candidates = np.arange(values.size)
    return candidates[np.argsort(-values[candidates], kind="stable")][:count]


def _draw(scores, temperature, top_k, top_p, entropy, rng) -> int:
    """One token from softmax(scores / temperature), or from the power of softmax(scores) whose
    entropy is ``entropy``, over the top-k candidates, then cut to top-p."""
    logits = scores / temperature
    order = np.argsort(-logits, kind="stable")
    order = order[np.isfinite(logits[order])]
    if top_k is not None:
        order = order[:top_k]
    if entropy is None:
        probs = np.exp(logits[order] - logits[order[0]])
        probs /= probs.sum()
    else:
        probs = normalize_entropy(logits[order], entropy)
    if top_p is not None:
        keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])


def bert4x_layer(model, name: str):
    """``model``'s layer ``name``, under the name prefix it was built with, if any."""
    builder = getattr(model, "_bert4x_builder", None)
    return model.get_layer((builder.prefix if builder is not None else "") + name)


def _application(model) -> str:
    try:
        application = bert4x_layer(model, "Attention-Mask").application
    except ValueError:
        raise ValueError("decoding needs a bert4x model with an attention mask layer "
                         "(build_transformer_model(..., application='lm' or 'unilm'))") from None
    if application not in ("lm", "unilm"):
        raise ValueError(f"decoding needs application='lm' or 'unilm', not {application!r}")
    return application


def _logits_model(model):
    import keras

    try:
        logits = bert4x_layer(model, "MLM-Activation").input
    except ValueError:
        raise ValueError("decoding needs token predictions: build the model with "
                         "with_mlm=True (or 'linear')") from None
    return keras.Model(model.inputs, logits)


def _max_positions(model) -> Optional[int]:
    try:
        return bert4x_layer(model, "Embedding-Position").input_dim
    except ValueError:
        return None  # rotary positions have no table to run past
