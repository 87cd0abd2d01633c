"""Next-token log-probabilities for a growing set of rows (beams or samples) of one input.

Two runners with one interface, so every decoding algorithm is written once:

* :class:`CachedRunner` keeps each layer's keys and values and feeds the model only the new
  token of each row: a step costs one position whatever the prefix length.
* :class:`FullRunner` re-reads every row's whole sequence at each step; it is the reference the
  cached runner is tested against, and the fallback for models that have no step model.

``start(prefix)`` reads the prefix and returns log-probabilities [1, vocab] for the first new
token; ``advance(parents, tokens)`` extends row ``parents[r]`` with ``tokens[r]`` for each new row
``r`` and returns their log-probabilities [len(tokens), vocab].
"""

from __future__ import annotations

import collections

import keras
import numpy as np
from keras import ops


def compile_function(function, fixed_shapes: bool = False):
    """``function`` in the fastest form the backend offers for repeated inference calls.

    TensorFlow traces a graph and retraces for new input ranks only (``reduce_retracing``):
    prefixes of any length and any number of rows share one graph after the first few calls.
    With ``fixed_shapes`` (a decoding step, whose shapes repeat from call to call) a shape that
    keeps coming back is compiled with XLA (see :class:`XlaOnceRepeated`).
    JAX compiles with XLA. PyTorch runs eagerly without recording gradients: ``torch.compile``
    was measured slower here (a 6-layer UniLM beam search: two minutes of compiling, then
    54-59 ms per token against 39-43 eager without autograd, since Dynamo recompiles for every
    cache position and breaks its graph inside Keras' tree utilities).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        graph = tf.function(function, reduce_retracing=True)
        return XlaOnceRepeated(graph, tf.function(function, jit_compile=True)) \
            if fixed_shapes else graph
    if backend == "jax":
        import jax

        return jax.jit(function)
    import torch

    def without_autograd(*args):
        with torch.no_grad():
            return function(*args)
    return without_autograd


class XlaOnceRepeated:
    """A TensorFlow function that runs as a plain graph until its inputs' shapes have come
    :data:`XLA_AFTER_CALLS` times, and from then on, for those shapes, compiled with XLA.

    XLA fuses a decoding step's many small ops and writes the cache in place: a cached 6-layer
    GPT-2 beam step took 11.3 ms against 13.7 in a plain graph. But it compiles once per shape,
    a second or so, and beam search meets many shapes (rows drop as hypotheses finish under a
    prefix tree): compiling each one at once made a 100-question KgCLUE evaluation 1.5x slower.
    Waiting until a shape has repeated spends the compile only where it is paid back.
    """

    def __init__(self, graph, xla):
        self.graph, self.xla = graph, xla
        self.calls = collections.Counter()

    def __call__(self, inputs):
        # Flattened: the caches are lists of per-layer tensors, and a one-row cache (the first
        # step after the prefix) must not share an XLA compilation with the beam's rows.
        shapes = tuple(tuple(getattr(x, "shape", ())) for x in keras.tree.flatten(inputs))
        self.calls[shapes] += 1
        return (self.xla if self.calls[shapes] > XLA_AFTER_CALLS else self.graph)(inputs)


#: Calls of one shape after which :class:`XlaOnceRepeated` compiles it with XLA.
XLA_AFTER_CALLS = 100


def log_softmax(logits) -> np.ndarray:
    """Float64 log-softmax over the last axis of backend or NumPy logits."""
    logits = np.asarray(ops.convert_to_numpy(logits), dtype="float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


#: The cache's size is rounded up to a multiple of this many slots.
CACHE_SLOTS = 32


class FullRunner:
    """Runs the whole sequence of every row at every step (no cache)."""

    def __init__(self, logits_function, new_segment_id: int):
        self.logits_function = logits_function
        self.new_segment_id = new_segment_id
        self.tokens = self.segments = None

    def start(self, prefix: np.ndarray, max_new_tokens: int) -> np.ndarray:
        self.tokens = prefix[None].astype("int32")
        self.segments = np.zeros_like(self.tokens)
        return self._last_log_probs()

    def advance(self, parents, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, dtype="int32")[:, None]
        self.tokens = np.concatenate([self.tokens[parents], tokens], axis=1)
        self.segments = np.concatenate(
            [self.segments[parents], np.full_like(tokens, self.new_segment_id)], axis=1)
        return self._last_log_probs()

    def _last_log_probs(self):
        return log_softmax(self.logits_function([self.tokens, self.segments])[:, -1])


class CachedRunner:
    """Feeds only new tokens to a step model that reads and extends a key/value cache.

    The prefix sees itself bidirectionally (UniLM source segment) or causally (LM); each new
    token sees every earlier slot and itself. Slots beyond the written ones stay masked.

    The cache holds a multiple of :data:`CACHE_SLOTS` slots, so prefixes of different lengths
    share one cache shape, and the new-token step (compiled for fixed shapes) is compiled once
    per row count and cache size rather than once per prefix.
    """

    def __init__(self, step_function, cache_shapes, layers: int, causal_prefix: bool,
                 new_segment_id: int):
        step = _cached_step(step_function)
        self.prefix_function = compile_function(step)
        self.step_function = compile_function(step, fixed_shapes=True)
        self.cache_shapes = cache_shapes
        self.layers = layers
        self.causal_prefix = causal_prefix
        self.new_segment_id = new_segment_id
        self.keys = self.values = self.last_logits = None
        self.length = self.max_len = 0

    def extra_inputs(self) -> tuple:
        """What the step function takes after the cache index (an encoder's output, say)."""
        return ()

    def start(self, prefix: np.ndarray, max_new_tokens: int) -> np.ndarray:
        length = len(prefix)
        self.max_len = -(-(length + max_new_tokens) // CACHE_SLOTS) * CACHE_SLOTS
        keys, values = ([np.zeros((1, *_with_slots(shape, self.max_len)), "float32")
                         for _ in range(self.layers)] for shape in self.cache_shapes)
        slots = np.arange(self.max_len)
        queries = np.arange(length)[:, None]
        allowed = slots[None] <= queries if self.causal_prefix else \
            np.broadcast_to(slots[None] < length, (length, self.max_len))
        self.keys, self.values = keys, values
        log_probs = self._step(self.prefix_function, np.zeros(1, "int32"), prefix[None],
                               np.zeros((1, length), "int32"), np.arange(length)[None],
                               allowed[None, None], index=0)
        self.length = length
        return log_probs

    def advance(self, parents, tokens) -> np.ndarray:
        parents = np.asarray(parents, dtype="int32")
        rows = len(parents)
        allowed = np.arange(self.max_len) <= self.length
        log_probs = self._step(
            self.step_function, parents, np.asarray(tokens, "int32")[:, None],
            np.full((rows, 1), self.new_segment_id, "int32"),
            np.full((rows, 1), self.length, "int32"),
            np.broadcast_to(allowed, (rows, 1, 1, self.max_len)), index=self.length)
        self.length += 1
        return log_probs

    def _step(self, function, parents, tokens, segments, positions, allowed, index):
        """One call of the compiled step: rows copy their ``parents``' caches, then read the new
        tokens. ``last_logits`` is kept for callers that want the model's raw output."""
        self.last_logits, self.keys, self.values = function([
            parents, tokens.astype("int32"), segments, positions.astype("int32"), allowed,
            self.keys, self.values, np.asarray(index, "int32"), *self.extra_inputs()])
        return log_softmax(self.last_logits)


def _with_slots(shape, slots):
    """A row's cache shape from ``cache_shapes``' form, where ``None`` marks the slot axis."""
    return tuple(slots if size is None else size for size in shape)


def _cached_step(step_function):
    """``step_function`` with the work around it moved into the compiled function, where it is
    a graph op rather than an eager call per step: each row's cache is first copied from its
    parent row, and only the last new token's logits are returned."""

    def step(inputs):
        parents, tokens, segments, positions, allowed, keys, values, *rest = inputs
        logits, keys, values = step_function([
            tokens, segments, positions, allowed, [ops.take(k, parents, axis=0) for k in keys],
            [ops.take(v, parents, axis=0) for v in values], *rest])
        return logits[:, -1], keys, values
    return step


class EncoderDecoderRunner(CachedRunner):
    """T5-style decoding: ``start(source)`` runs the encoder once and computes every decoder
    layer's cross-attention keys and values from it (``encode_function``); the decoder then
    starts from ``start_id`` with its own self-attention cache. Rows (beams) share the source's
    keys by broadcasting, so they are never copied per row."""

    def __init__(self, encode_function, step_function, cache_shapes, layers: int,
                 start_id: int):
        super().__init__(step_function, cache_shapes, layers, causal_prefix=True,
                         new_segment_id=0)
        self.encode_function = encode_function
        self.start_id = start_id
        self.source = ()

    def extra_inputs(self) -> tuple:
        return self.source

    def start(self, prefix: np.ndarray, max_new_tokens: int) -> np.ndarray:
        self.source = tuple(self.encode_function(prefix[None].astype("int32")))
        return super().start(np.asarray([self.start_id]), max_new_tokens)


class EncoderDecoderFullRunner(FullRunner):
    """The uncached reference for :class:`EncoderDecoderRunner`: every step re-runs the whole
    model on the source and each row's decoder tokens."""

    def __init__(self, logits_function, start_id: int):
        super().__init__(logits_function, new_segment_id=0)
        self.start_id = start_id
        self.source = None

    def start(self, prefix: np.ndarray, max_new_tokens: int) -> np.ndarray:
        self.source = prefix[None].astype("int32")
        return super().start(np.asarray([self.start_id]), max_new_tokens)

    def _last_log_probs(self):
        sources = np.repeat(self.source, len(self.tokens), axis=0)
        return log_softmax(self.logits_function([sources, self.tokens])[:, -1])
