"""Attention masks for the three applications: encoder, causal LM and UniLM seq2seq."""

import keras
from keras import ops

APPLICATIONS = ("encoder", "lm", "unilm")


@keras.saving.register_keras_serializable(package="bert4x")
class AttentionMask(keras.layers.Layer):
    """Boolean mask [batch, 1, q, k] (True = may attend) from ``[token_ids, segment_ids]``.

    Keys with token id 0 (padding) are never attended, unless ``padding=False`` (T5's decoder:
    its first input is the start token, whose id is the padding id).  On top of that:
    - ``encoder``: every token sees every other token;
    - ``lm``: token i sees tokens j <= i;
    - ``unilm``: with c = cumsum(segment_ids), token i sees token j iff c[j] <= c[i], so segment 0
      is bidirectional and segment 1 sees segment 0 plus its own earlier tokens.
    """

    def __init__(self, application="encoder", padding=True, **kwargs):
        super().__init__(**kwargs)
        if application not in APPLICATIONS:
            raise ValueError(f"application must be one of {APPLICATIONS}, got {application!r}")
        self.application = application
        self.padding = padding

    def call(self, inputs):
        token_ids, segment_ids = inputs
        mask = ops.not_equal(token_ids, 0)[:, None, None, :]
        if not self.padding:
            mask = ops.ones_like(mask)
        if self.application == "lm":
            positions = ops.arange(ops.shape(token_ids)[1])
            mask = ops.logical_and(mask, (positions[None, :] <= positions[:, None])[None, None])
        elif self.application == "unilm":
            order = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
            mask = ops.logical_and(mask, (order[:, None, :] <= order[:, :, None])[:, None])
        return mask

    def compute_output_shape(self, input_shape):
        batch, length = input_shape[0]
        return (batch, 1, length, length)

    def get_config(self):
        return {**super().get_config(), "application": self.application, "padding": self.padding}
