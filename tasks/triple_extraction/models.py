"""The two extraction models behind one interface.

* ``gplinker`` (Su 2022): three Efficient GlobalPointer heads over the encoder. Entity spans
  (head 0 subjects, head 1 objects); for each predicate, a head-to-head score (subject start,
  object start) and a tail-to-tail score (subject end, object end). A triple is decoded when
  both of its pair scores and both entity scores are positive, so overlapping and nested
  triples of every kind are representable.
* ``pointer_cln`` (Su 2020): sigmoid start/end pointers for subjects; the chosen subject's
  start and end vectors condition a LayerNormalization of the sequence, from which per-predicate
  object start/end pointers are read. A span is a start plus the nearest end at or after it, so
  two spans of one kind that share a start cannot both be decoded (a known limit of pointers).

Each model turns labelled texts into batches (``collate``), trains through ``train_model``,
decodes texts (``decode``) and decodes its own labels (``decode_labels``), which is how the
encoding is tested to be lossless.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from bert4x.layers import EfficientGlobalPointer, LayerNormalization, sparse_multilabel_crossentropy
from bert4x.training import sequence_padding
from tasks.triple_extraction.spans import EncodedText, LabelledText

KINDS = ("gplinker", "pointer_cln")
THRESHOLD = 0.5  # pointer probabilities; GlobalPointer scores use 0
MAX_ENTITIES = 64  # candidate spans per entity type and text when decoding GPLinker


def _sequence_output(backbone: keras.Model):
    return [layer for layer in backbone.layers if layer.name.startswith("Transformer-")][-1].output


def _token_inputs(texts: Sequence[EncodedText]):
    ids = sequence_padding([t.token_ids for t in texts])
    return ids, np.zeros_like(ids)


def _pad_indices(rows: List[List[List[int]]]) -> np.ndarray:
    """[batch][heads][k] positive indices -> int array padded with 0 (see the loss)."""
    width = max(1, max(len(h) for r in rows for h in r))
    out = np.zeros((len(rows), len(rows[0]), width), "int32")
    for b, heads in enumerate(rows):
        for h, indices in enumerate(heads):
            unique = sorted(set(indices))
            out[b, h, :len(unique)] = unique
    return out


def global_pointer_loss(positives, logits):
    """Sum over heads of the sparse multilabel loss on flattened [n·n] scores, per example."""
    shape = ops.shape(logits)
    flat = ops.reshape(logits, (shape[0], shape[1], shape[2] * shape[3]))
    return ops.sum(sparse_multilabel_crossentropy(positives, flat, mask_zero=True), axis=1)


def pointer_loss(labels, probabilities):
    """Binary cross-entropy summed over the pointer outputs, averaged over tokens."""
    labels = ops.cast(labels, "float32")
    probabilities = ops.clip(ops.cast(probabilities, "float32"), 1e-7, 1 - 1e-7)
    bce = -(labels * ops.log(probabilities) + (1 - labels) * ops.log(1 - probabilities))
    axes = tuple(range(2, len(bce.shape)))
    return ops.mean(ops.sum(bce, axis=axes), axis=1)


def _top_spans(scores: np.ndarray, limit: int = MAX_ENTITIES) -> np.ndarray:
    """(start, end) of positive span scores, the ``limit`` best: an untrained model may score
    most of the n² spans positive, and linking all of them would take quadratic time."""
    starts, ends = np.nonzero(scores > 0)
    if len(starts) > limit:
        best = np.argsort(-scores[starts, ends], kind="stable")[:limit]
        starts, ends = starts[best], ends[best]
    return np.stack([starts, ends], axis=1)


def pointer_spans(starts: np.ndarray, ends: np.ndarray) -> List[Tuple[int, int]]:
    """Each start with the nearest end at or after it."""
    ends = np.sort(ends)
    spans = []
    for start in np.sort(starts):
        later = ends[ends >= start]
        if later.size:
            spans.append((int(start), int(later[0])))
    return spans


class GPLinker:
    kind = "gplinker"

    def __init__(self, backbone: keras.Model, predicates: int, head_size: int = 64):
        self.predicates = predicates
        token_ids = backbone.inputs[0]
        sequence, mask = _sequence_output(backbone), ops.not_equal(token_ids, 0)
        entities = EfficientGlobalPointer(2, head_size, name="Entity-Pointer")(sequence,
                                                                               mask=mask)
        pair = dict(rope=False, tril_mask=False)
        heads = EfficientGlobalPointer(predicates, head_size, name="Head-Pointer",
                                       **pair)(sequence, mask=mask)
        tails = EfficientGlobalPointer(predicates, head_size, name="Tail-Pointer",
                                       **pair)(sequence, mask=mask)
        self.train_model = keras.Model(backbone.inputs[:2], [entities, heads, tails],
                                       name="gplinker")
        self.losses = [global_pointer_loss] * 3

    def training_examples(self, labelled: Sequence[LabelledText]):
        return list(labelled)

    def collate(self, batch: Sequence[LabelledText]):
        inputs = _token_inputs(batch)
        n = inputs[0].shape[1]
        entities, heads, tails = [], [], []
        for text in batch:
            entity_rows = [[], []]
            head_rows = [[] for _ in range(self.predicates)]
            tail_rows = [[] for _ in range(self.predicates)]
            for (s0, s1), p, (o0, o1) in text.spans:
                entity_rows[0].append(s0 * n + s1)
                entity_rows[1].append(o0 * n + o1)
                head_rows[p].append(s0 * n + o0)
                tail_rows[p].append(s1 * n + o1)
            entities.append(entity_rows), heads.append(head_rows), tails.append(tail_rows)
        return inputs, tuple(_pad_indices(rows) for rows in (entities, heads, tails))

    def decode(self, texts: Sequence[EncodedText], batch_size: int = 16):
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            outputs = self.train_model.predict_on_batch(list(_token_inputs(chunk)))
            results += [self._spans(*(np.asarray(o[i]) for o in outputs))
                        for i in range(len(chunk))]
        return results

    def decode_labels(self, text: LabelledText):
        """Scores that are +1 exactly at the labels, decoded like model scores."""
        inputs, targets = self.collate([text])
        n = inputs[0].shape[1]
        scores = []
        for target in targets:
            dense = -np.ones((target.shape[1], n * n), "float32")
            for head, indices in enumerate(target[0]):
                dense[head, indices[indices > 0]] = 1.0
            scores.append(dense.reshape(-1, n, n))
        return self._spans(*scores)

    @staticmethod
    def _spans(entities, heads, tails):
        subjects, objects = (_top_spans(scores) for scores in entities[:2])
        if not len(subjects) or not len(objects):
            return []
        # [P, subjects, objects]: both pair scores must be positive.
        linked = ((heads[:, subjects[:, 0, None], objects[None, :, 0]] > 0)
                  & (tails[:, subjects[:, 1, None], objects[None, :, 1]] > 0))
        return [((int(subjects[s][0]), int(subjects[s][1])), int(p),
                 (int(objects[o][0]), int(objects[o][1])))
                for p, s, o in zip(*np.nonzero(linked))]


class PointerCLN:
    kind = "pointer_cln"

    def __init__(self, backbone: keras.Model, predicates: int, head_size: int = 64):
        del head_size  # pointers need no projection size
        self.predicates = predicates
        token_ids, segment_ids = backbone.inputs[:2]
        sequence = _sequence_output(backbone)
        subject_pointers = keras.layers.Dense(2, activation="sigmoid",
                                              name="Subject-Pointers")(sequence)
        subject_span = keras.Input(shape=(2,), dtype="int32", name="Input-Subject")
        start = ops.take_along_axis(sequence, subject_span[:, :1, None], axis=1)[:, 0]
        end = ops.take_along_axis(sequence, subject_span[:, 1:, None], axis=1)[:, 0]
        condition = keras.layers.Concatenate(name="Subject-Vector")([start, end])
        conditioned = LayerNormalization(conditional=True, name="Subject-Conditional-Norm")(
            [sequence, condition])
        object_pointers = keras.layers.Dense(predicates * 2, activation="sigmoid",
                                             name="Object-Pointers")(conditioned)
        object_pointers = keras.layers.Reshape((-1, predicates, 2),
                                               name="Object-Pointer-Pairs")(object_pointers)
        self.subject_model = keras.Model([token_ids, segment_ids], subject_pointers)
        self.object_model = keras.Model([token_ids, segment_ids, subject_span], object_pointers)
        self.train_model = keras.Model([token_ids, segment_ids, subject_span],
                                       [subject_pointers, object_pointers], name="pointer_cln")
        self.losses = [pointer_loss, pointer_loss]

    def training_examples(self, labelled: Sequence[LabelledText]):
        """One example per (text, subject): every subject's objects are trained."""
        examples = []
        for text in labelled:
            subjects = sorted({s for s, _, _ in text.spans}) or [None]
            examples += [(text, subject) for subject in subjects]
        return examples

    def collate(self, batch):
        texts = [text for text, _ in batch]
        inputs = _token_inputs(texts)
        n = inputs[0].shape[1]
        subjects = np.zeros((len(batch), n, 2), "float32")
        objects = np.zeros((len(batch), n, self.predicates, 2), "float32")
        chosen = np.zeros((len(batch), 2), "int32")
        for b, (text, subject) in enumerate(batch):
            for (s0, s1), p, (o0, o1) in text.spans:
                subjects[b, s0, 0] = subjects[b, s1, 1] = 1
                if (s0, s1) == subject:
                    objects[b, o0, p, 0] = objects[b, o1, p, 1] = 1
            if subject is not None:
                chosen[b] = subject
        return (*inputs, chosen), (subjects, objects)

    def decode(self, texts: Sequence[EncodedText], batch_size: int = 16):
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            ids, segments = _token_inputs(chunk)
            subject_probs = np.asarray(self.subject_model.predict_on_batch([ids, segments]))
            for i in range(len(chunk)):
                subjects = self._subjects(subject_probs[i])
                if not subjects:
                    results.append([])
                    continue
                count = len(subjects)
                object_probs = np.asarray(self.object_model.predict_on_batch(
                    [np.repeat(ids[i:i + 1], count, 0), np.repeat(segments[i:i + 1], count, 0),
                     np.array(subjects, "int32")]))
                results.append(self._triples(subjects, object_probs))
        return results

    def decode_labels(self, text: LabelledText):
        """The labels as probabilities of 0 and 1, decoded like model outputs."""
        examples = self.training_examples([text])
        _, (subject_labels, object_labels) = self.collate(examples)
        subjects = self._subjects(subject_labels[0])
        chosen = {subject: object_labels[i] for i, (_, subject) in enumerate(examples)}
        empty = np.zeros_like(object_labels[0])
        return self._triples(subjects, np.stack([chosen.get(s, empty) for s in subjects]))

    @staticmethod
    def _subjects(probs):
        return pointer_spans(np.flatnonzero(probs[:, 0] > THRESHOLD),
                             np.flatnonzero(probs[:, 1] > THRESHOLD))

    def _triples(self, subjects, object_probs):
        spans = []
        for subject, probs in zip(subjects, object_probs):
            for p in range(self.predicates):
                for obj in pointer_spans(np.flatnonzero(probs[:, p, 0] > THRESHOLD),
                                         np.flatnonzero(probs[:, p, 1] > THRESHOLD)):
                    spans.append((tuple(subject), p, obj))
        return spans


MODELS = {"gplinker": GPLinker, "pointer_cln": PointerCLN}
