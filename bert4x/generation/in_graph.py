"""Greedy and beam decoding under a prefix tree as TensorFlow graphs, for export.

They take the steps of :class:`SearchAlgorithms`' ``greedy`` and ``beam_search`` with
``constraint=trie`` (no ``score_fn``, no length penalty, one result): padding is never chosen,
each row's next token is one the tree allows after what the row generated, a row ends after
``min_ends`` end tokens, at a key with no extension, or after ``max_new_tokens``. The tree is
two constant tensors (each node's first child, each node's token), so a node's allowed tokens
are a range lookup scattered into a mask. Each step re-reads the whole sequence (no key/value
cache), which keeps the graph a plain ``tf.while_loop`` over the Keras model.
"""

from __future__ import annotations

import numpy as np


class _TreeLookup:
    """The trie's arrays as tensors: allowed-token masks and child nodes, for rows of nodes."""

    def __init__(self, trie, vocab_size: int):
        import tensorflow as tf

        arrays = trie.arrays
        self.first_child = tf.constant(np.asarray(arrays["first_child"], "int64"))
        self.tokens = tf.constant(np.asarray(arrays["tokens"], "int64"))
        self.vocab_size = vocab_size

    def children(self, nodes):
        """Dense [rows, widest] child nodes and their tokens, padded with -1."""
        import tensorflow as tf

        starts = tf.gather(self.first_child, nodes)
        ends = tf.gather(self.first_child, nodes + 1)
        children = tf.ragged.range(starts, ends)
        return (children.to_tensor(default_value=-1),
                tf.gather(self.tokens, children).to_tensor(default_value=-1))

    def allowed(self, nodes):
        """[rows, vocab] True where the tree allows the token (never padding, id 0)."""
        import tensorflow as tf

        _, tokens = self.children(nodes)
        rows = tf.broadcast_to(tf.range(tf.shape(tokens, out_type=tf.int64)[0])[:, None],
                               tf.shape(tokens, out_type=tf.int64))
        real = tokens > 0
        indices = tf.stack([tf.boolean_mask(rows, real), tf.boolean_mask(tokens, real)], 1)
        mask = tf.scatter_nd(indices, tf.ones([tf.shape(indices)[0]], tf.bool),
                             [tf.shape(nodes, out_type=tf.int64)[0], self.vocab_size])
        return mask

    def child(self, nodes, tokens):
        """The node each (node, token) pair leads to."""
        import tensorflow as tf

        children, child_tokens = self.children(nodes)
        return tf.reduce_max(tf.where(tf.equal(child_tokens, tokens[:, None]), children, -1), 1)


def _log_probs(logits_model, tokens, segments):
    import tensorflow as tf

    logits = logits_model([tokens, segments], training=False)[:, -1]
    return tf.nn.log_softmax(tf.cast(logits, tf.float32))


def greedy_function(model, trie, end_id: int, min_ends: int, max_new_tokens: int,
                    new_segment_id: int = 1):
    """``fn(token_ids [1, n]) -> {generated [1, m], finished [1]}`` for an ``lm``/``unilm``
    model with an MLM head; ``new_segment_id`` is 1 for UniLM (generated text is segment 1)."""
    return beam_function(model, trie, end_id, min_ends, max_new_tokens, 1, new_segment_id)


def beam_function(model, trie, end_id: int, min_ends: int, max_new_tokens: int,
                  beam_size: int, new_segment_id: int = 1):
    """``fn(token_ids [1, n]) -> {generated [1, m], finished [1], log_prob [1]}``: the best
    hypothesis of ``beam_search(prefix, beam_size, num_results=1, constraint=trie)``.

    Like the Python search, each step ranks the best 2 x ``beam_size`` extensions; in rank order
    they fill the ``beam_size`` alive rows, and an extension that ends is kept as finished if it
    ranks within ``beam_size``. The search stops once the best finished score is at least every
    alive row's (scores only fall).
    """
    import tensorflow as tf

    from bert4x.generation.decoding import _logits_model

    logits_model = _logits_model(model)
    vocab_size = int(logits_model.output.shape[-1])
    tree = _TreeLookup(trie, vocab_size)
    k = beam_size
    neg_inf = tf.constant(-np.inf, tf.float32)

    def step(source, generated, totals, nodes, ends, best_tokens, best_total, best_finished,
             step_index, done):
        rows = tf.shape(generated)[0]
        tokens = tf.concat([tf.tile(source, [rows, 1]), tf.cast(generated, source.dtype)], 1)
        segments = tf.concat([tf.zeros_like(tf.tile(source, [rows, 1])),
                              tf.fill(tf.shape(generated), tf.cast(new_segment_id,
                                                                   source.dtype))], 1)
        log_probs = _log_probs(logits_model, tokens, segments)
        allowed = tree.allowed(nodes)
        alive = totals > neg_inf
        # A live row the tree does not extend is complete: finished with what it has.
        complete = tf.logical_and(alive, tf.logical_not(tf.reduce_any(allowed, 1)))
        best_tokens, best_total, best_finished = _keep_best(
            generated, tf.where(complete, totals, neg_inf), best_tokens, best_total,
            best_finished)
        scores = tf.where(allowed, log_probs, neg_inf)
        candidates = tf.where(complete[:, None], neg_inf, totals[:, None] + scores)
        values, flat = tf.math.top_k(tf.reshape(candidates, [-1]), 2 * k)
        parents, chosen = flat // vocab_size, tf.cast(flat % vocab_size, tf.int64)
        valid = values > neg_inf
        new_ends = tf.gather(ends, parents) + tf.cast(tf.equal(chosen, end_id), tf.int32)
        ended = new_ends >= min_ends
        extends = tf.logical_and(valid, tf.logical_not(ended))
        # Rank order: a candidate is looked at while fewer than k rows are alive before it.
        alive_before = tf.cumsum(tf.cast(extends, tf.int32), exclusive=True)
        reached = tf.logical_and(valid, alive_before < k)
        sequences = tf.concat([tf.gather(generated, parents), chosen[:, None]], 1)
        ranked_first = tf.range(2 * k) < k
        finishing = tf.logical_and(tf.logical_and(reached, ended), ranked_first)
        best_tokens, best_total, best_finished = _keep_best(
            sequences, tf.where(finishing, values, neg_inf), best_tokens, best_total,
            best_finished)
        kept = tf.logical_and(reached, extends)
        order = tf.argsort(tf.cast(tf.logical_not(kept), tf.int32), stable=True)[:k]
        keep = tf.gather(kept, order)
        generated = tf.gather(sequences, order)
        totals = tf.where(keep, tf.gather(values, order), neg_inf)
        nodes = tf.where(keep, tree.child(tf.gather(tf.gather(nodes, parents), order),
                                          tf.gather(chosen, order)), 0)
        ends = tf.gather(new_ends, order)
        step_index += 1
        any_alive = tf.reduce_any(keep)
        beaten = tf.logical_and(best_finished, best_total >= tf.reduce_max(totals))
        done = tf.logical_or(tf.logical_or(tf.logical_not(any_alive), beaten),
                             step_index >= max_new_tokens)
        return (source, generated, totals, nodes, ends, best_tokens, best_total, best_finished,
                step_index, done)

    def decode(token_ids):
        state = (token_ids, tf.zeros([k, 0], tf.int64),
                 tf.concat([[0.0], tf.fill([k - 1], neg_inf)], 0), tf.zeros([k], tf.int64),
                 tf.zeros([k], tf.int32), tf.zeros([0], tf.int64), neg_inf, tf.constant(False),
                 tf.constant(0), tf.constant(max_new_tokens <= 0))
        shapes = (tf.TensorShape([1, None]), tf.TensorShape([k, None]), tf.TensorShape([k]),
                  tf.TensorShape([k]), tf.TensorShape([k]), tf.TensorShape([None]),
                  tf.TensorShape([]), tf.TensorShape([]), tf.TensorShape([]), tf.TensorShape([]))
        (_, generated, totals, _, _, best_tokens, best_total, best_finished, _,
         _) = tf.while_loop(lambda *state: tf.logical_not(state[-1]), step, state,
                            shape_invariants=shapes)
        # No finished hypothesis: the best alive row, unfinished.
        use_alive = tf.logical_not(best_finished)
        row = tf.argmax(totals, output_type=tf.int32)
        tokens = tf.cond(use_alive, lambda: generated[row], lambda: best_tokens)
        total = tf.where(use_alive, totals[row], best_total)
        return {"generated": tokens[None], "finished": best_finished[None],
                "log_prob": total[None]}

    return decode


def _keep_best(sequences, scores, best_tokens, best_total, best_finished):
    """The best finished hypothesis so far, given candidates' ``scores`` (-inf: not one); on
    a tie the earlier (better-ranked) one stays, as in the Python search's stable sort."""
    import tensorflow as tf

    index = tf.argmax(scores, output_type=tf.int32)
    better = scores[index] > best_total
    return (tf.cond(better, lambda: sequences[index], lambda: best_tokens),
            tf.where(better, scores[index], best_total),
            tf.logical_or(best_finished, better))
