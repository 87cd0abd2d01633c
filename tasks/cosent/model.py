"""Sentence encoder = backbone + pooling (+ optional projection); CoSENT and Sentence-BERT heads.

CoSENT (Su 2022) ranks pairs: for every two pairs i, j of a batch with label_i > label_j it adds
``exp(λ (cos_j − cos_i))`` inside ``log(1 + Σ ...)``, λ = 20, so only the *order* of cosines
is trained, exactly what Spearman measures. Sentence-BERT trains a softmax classifier on
``(u, v, |u − v|)`` and uses the cosine of u and v at test time.
"""

from __future__ import annotations

import keras
from keras import ops

POOLINGS = ("cls", "mean", "first-last-avg", "pooler")
COSENT_SCALE = 20.0


def block_output(backbone: keras.Model, prefix: str):
    """The output of a Transformer block: that of the last layer whose name starts with
    ``prefix`` (``"Transformer-0-"`` for the first block, ``"Transformer-"`` for the last)."""
    layers = [layer for layer in backbone.layers if layer.name.startswith(prefix)]
    if not layers:
        raise ValueError(f"sentence pooling needs a bert4x backbone (layers named {prefix}...)")
    return layers[-1].output


def masked_mean(sequence, mask):
    weights = ops.cast(mask, sequence.dtype)[:, :, None]
    return ops.sum(sequence * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


def build_encoder(backbone: keras.Model, pooling: str = "mean", output_dim=None,
                  name="sentence_encoder") -> keras.Model:
    """``[token_ids, segment_ids] -> vector``. ``pooling="pooler"`` needs a backbone built with
    ``with_pool=True``; the other poolings read the blocks' outputs, whatever heads it has."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    token_ids, segment_ids = backbone.inputs[:2]
    if pooling == "pooler":
        if "Pooler" not in [layer.name for layer in backbone.layers]:
            raise ValueError("pooling='pooler' needs a backbone built with with_pool=True")
        vector = backbone.get_layer("Pooler").output
    else:
        sequence = block_output(backbone, "Transformer-")
        mask = ops.not_equal(token_ids, 0)
        if pooling == "cls":
            vector = sequence[:, 0]
        elif pooling == "mean":
            vector = masked_mean(sequence, mask)
        else:
            vector = masked_mean((block_output(backbone, "Transformer-0-") + sequence) / 2,
                                 mask)
    if output_dim:
        vector = keras.layers.Dense(output_dim, name="Sentence-Projection")(vector)
    return keras.Model([token_ids, segment_ids], vector, name=name)


def cosine(u, v):
    u = u / ops.maximum(ops.norm(u, axis=-1, keepdims=True), 1e-12)
    v = v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), 1e-12)
    return ops.sum(u * v, axis=-1)


def cosent_loss(labels, cosines, scale: float = COSENT_SCALE):
    """``log(1 + Σ_{label_i > label_j} exp(scale · (cos_j − cos_i)))`` over one batch."""
    labels = ops.reshape(ops.cast(labels, "float32"), (-1,))
    cosines = ops.reshape(ops.cast(cosines, "float32"), (-1,))
    differences = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = λ(cos_j − cos_i)
    ordered = labels[:, None] > labels[None, :]
    differences = ops.where(ordered, differences, -1e12)
    return ops.logsumexp(ops.concatenate([ops.zeros((1,)), ops.reshape(differences, (-1,))]))


@keras.saving.register_keras_serializable(package="bert4x")
class CoSENTLoss(keras.losses.Loss):
    """Keras loss wrapper: ``y_true`` are the labels, ``y_pred`` the pairs' cosines."""

    def __init__(self, scale: float = COSENT_SCALE, name="cosent", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):
        return cosent_loss(y_true, y_pred, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def pair_inputs():
    names = ("Input-Token-1", "Input-Segment-1", "Input-Token-2", "Input-Segment-2")
    return [keras.Input(shape=(None,), dtype="int32", name=name) for name in names]


def build_cosine_model(encoder: keras.Model) -> keras.Model:
    """Both sentences through the shared encoder -> their cosine (trained with CoSENT)."""
    first_ids, first_segments, second_ids, second_segments = inputs = pair_inputs()
    u = encoder([first_ids, first_segments])
    v = encoder([second_ids, second_segments])
    similarity = keras.layers.Lambda(lambda pair: cosine(*pair), name="Cosine")([u, v])
    return keras.Model(inputs, similarity, name="cosent")


def build_sbert_model(encoder: keras.Model, num_classes: int) -> keras.Model:
    """Sentence-BERT's classification objective: softmax(W [u; v; |u − v|])."""
    first_ids, first_segments, second_ids, second_segments = inputs = pair_inputs()
    u = encoder([first_ids, first_segments])
    v = encoder([second_ids, second_segments])
    features = keras.layers.Concatenate(name="SBERT-Features")(
        [u, v, keras.layers.Lambda(lambda pair: ops.abs(pair[0] - pair[1]))([u, v])])
    probabilities = keras.layers.Dense(num_classes, activation="softmax",
                                       name="SBERT-Classifier")(features)
    return keras.Model(inputs, probabilities, name="sbert")
