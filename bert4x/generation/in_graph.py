"""Greedy decoding under a prefix tree as one TensorFlow graph, for export.

:meth:`SearchAlgorithms.greedy` with ``constraint=trie`` takes the same steps: padding is never
chosen, the next token is the best one the tree allows after what was generated, and decoding
stops at a key with no extension, after ``min_ends`` end tokens, or after ``max_new_tokens``.
The tree is two constant tensors (each node's first child, each node's token); one step looks
up the node's children as a range and masks every other token. Each step re-reads the whole
sequence (no key/value cache), which keeps the graph a plain ``tf.while_loop`` over the Keras
model.
"""

from __future__ import annotations

import numpy as np


def greedy_function(model, trie, end_id: int, min_ends: int, max_new_tokens: int,
                    new_segment_id: int = 1):
    """``fn(token_ids [1, n]) -> (generated [1, m], finished [1])`` for an ``lm``/``unilm``
    model with an MLM head; ``new_segment_id`` is 1 for UniLM (generated text is segment 1)."""
    import tensorflow as tf

    from bert4x.generation.decoding import _logits_model

    logits_model = _logits_model(model)
    arrays = trie.arrays
    first_child = tf.constant(np.asarray(arrays["first_child"], "int64"))
    node_tokens = tf.constant(np.asarray(arrays["tokens"], "int64"))
    vocab_size = int(logits_model.output.shape[-1])

    def allowed_children(node):
        children = tf.range(first_child[node], first_child[node + 1])
        return children, tf.gather(node_tokens, children)

    def step(tokens, segments, node, generated, ends, finished, done):
        logits = logits_model([tokens, segments], training=False)[0, -1]
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        children, child_tokens = allowed_children(node)
        allowed = tf.scatter_nd(child_tokens[:, None], tf.ones_like(child_tokens, tf.bool),
                                [vocab_size])
        allowed = tf.logical_and(allowed, tf.range(vocab_size) > 0)  # padding is never chosen
        leaf = tf.logical_not(tf.reduce_any(allowed))
        scores = tf.where(allowed, log_probs, tf.fill([vocab_size], -np.inf))
        token = tf.argmax(scores, output_type=tf.int64)
        child = tf.reduce_max(tf.where(tf.equal(child_tokens, token), children, -1))

        def extended():
            new_ends = ends + tf.cast(tf.equal(token, end_id), tf.int32)
            new_generated = tf.concat([generated, [token]], 0)
            stop = tf.logical_or(new_ends >= min_ends,
                                 tf.size(new_generated) >= max_new_tokens)
            return (tf.concat([tokens, [[tf.cast(token, tokens.dtype)]]], 1),
                    tf.concat([segments, [[tf.cast(new_segment_id, segments.dtype)]]], 1),
                    child, new_generated, new_ends, new_ends >= min_ends, stop)

        def at_leaf():
            return tokens, segments, node, generated, ends, tf.constant(True), tf.constant(True)

        return tf.cond(leaf, at_leaf, extended)

    def decode(token_ids):
        segments = tf.zeros_like(token_ids)
        state = (token_ids, segments, tf.constant(0, tf.int64), tf.zeros([0], tf.int64),
                 tf.constant(0), tf.constant(False), tf.constant(max_new_tokens <= 0))
        shapes = (tf.TensorShape([1, None]), tf.TensorShape([1, None]), tf.TensorShape([]),
                  tf.TensorShape([None]), tf.TensorShape([]), tf.TensorShape([]),
                  tf.TensorShape([]))
        _, _, _, generated, _, finished, _ = tf.while_loop(
            lambda *state: tf.logical_not(state[-1]), step, state, shape_invariants=shapes)
        return {"generated": generated[None], "finished": finished[None]}

    return decode
