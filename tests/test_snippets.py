"""bert4x.snippets: bert4keras' snippet names, equal to bert4keras 0.11.5 on the same inputs,
and a DataGenerator that trains under Keras 3 ``fit``."""

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.snippets import (DataGenerator, sequence_padding, text_segmentate, to_array,
                             truncate_sequences)
from tests.references import bert4keras_available, run_bert4keras

needs_bert4keras = pytest.mark.skipif(not bert4keras_available(),
                                      reason="bert4keras 0.11.5 + tf-keras not installed")


def random_cases(count, seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        seq_dims = int(rng.integers(1, 3))
        shapes = [tuple(int(n) for n in rng.integers(1, 5, seq_dims)) + (2,) * int(rng.integers(0, 2))
                  for _ in range(int(rng.integers(1, 4)))]
        trailing = shapes[0][seq_dims:]
        arrays = [rng.integers(1, 9, shape[:seq_dims] + trailing).tolist() for shape in shapes]
        # bert4keras takes one int only for seq_dims=1 (ours broadcasts it to every axis).
        length = None if rng.random() < 0.5 else [int(n) for n in rng.integers(0, 5, seq_dims)]
        if length is not None and seq_dims == 1 and rng.random() < 0.5:
            length = length[0]
        cases.append(dict(arrays=arrays, seq_dims=seq_dims, length=length,
                          mode=str(rng.choice(["post", "pre"])), value=int(rng.integers(-1, 2))))
    return cases


@needs_bert4keras
def test_sequence_padding_equals_bert4keras():
    cases = random_cases(200)
    expected = run_bert4keras(
        "from bert4keras.snippets import sequence_padding\n"
        "import numpy as np\n"
        "result = [sequence_padding([np.array(a) for a in c['arrays']], length=c['length'], "
        "value=c['value'], seq_dims=c['seq_dims'], mode=c['mode']).tolist() for c in data]",
        cases)
    for case, reference in zip(cases, expected):
        ours = sequence_padding([np.array(a) for a in case["arrays"]], length=case["length"],
                                value=case["value"], seq_dims=case["seq_dims"], mode=case["mode"])
        assert ours.tolist() == reference, case


@needs_bert4keras
def test_truncate_sequences_and_text_segmentate_equal_bert4keras():
    rng = np.random.default_rng(1)
    truncations = [dict(maxlen=int(rng.integers(0, 12)), indices=int(rng.choice([-1, 0])),
                        sequences=[rng.integers(0, 9, int(rng.integers(0, 8))).tolist()
                                   for _ in range(int(rng.integers(1, 4)))])
                   for _ in range(200)]
    alphabet = list("一二三四五，。！\n ab")
    texts = [dict(text="".join(rng.choice(alphabet, int(rng.integers(0, 60)))),
                  maxlen=int(rng.integers(1, 20)), seps=str(rng.choice(["\n。！，", "。", ""])))
             for _ in range(200)]
    expected = run_bert4keras(
        "from bert4keras.snippets import truncate_sequences, text_segmentate\n"
        "result = [[truncate_sequences(c['maxlen'], c['indices'], *c['sequences']) "
        "for c in data[0]], [text_segmentate(c['text'], c['maxlen'], c['seps']) "
        "for c in data[1]]]", [truncations, texts])
    for case, reference in zip(truncations, expected[0]):
        assert truncate_sequences(case["maxlen"], case["indices"],
                                  *[list(s) for s in case["sequences"]]) == reference, case
    for case, reference in zip(texts, expected[1]):
        assert text_segmentate(case["text"], case["maxlen"], case["seps"]) == reference, case


def test_sequence_padding_by_hand():
    assert sequence_padding([[1, 2], [3]], mode="pre").tolist() == [[1, 2], [0, 3]]
    assert sequence_padding([[1, 2, 3], [4]], length=2, value=9).tolist() == [[1, 2], [4, 9]]
    grid = sequence_padding([np.ones((2, 3)), np.ones((1, 1))], seq_dims=2)
    assert grid.shape == (2, 2, 3) and grid[1].tolist() == [[1, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="mode must be 'post' or 'pre'"):
        sequence_padding([[1]], mode="middle")
    first, second = to_array([1, 2], [[3]])
    assert isinstance(first, np.ndarray) and second.shape == (1, 1)


class PairGenerator(DataGenerator):
    """Written as bert4keras' sentence-pair example writes it."""

    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (token_ids, label) in self.sample(random):
            batch_token_ids.append(token_ids)
            batch_segment_ids.append([0] * len(token_ids))
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                yield [sequence_padding(batch_token_ids), sequence_padding(batch_segment_ids)], \
                    sequence_padding(batch_labels)
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


def classifier():
    keras.utils.set_random_seed(0)
    encoder = build_transformer_model(dict(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=24,
                                           max_position_embeddings=16))
    cls = keras.layers.Lambda(lambda x: x[:, 0])(encoder.output)
    return keras.Model(encoder.inputs, keras.layers.Dense(2)(cls))


def test_batches_of_varying_padded_length_train_under_keras_3_fit():
    """Keras fixes a plain generator's shapes from its first two batches: here they are both
    5 tokens long and the third is 8, which a plain generator cannot feed."""
    data = [([1, 2, 3, 4, 5], 0), ([5, 4, 3, 2, 1], 1), ([1, 1, 2, 2, 3], 0), ([3, 3, 4, 4, 5], 1),
            ([1, 2, 3, 4, 5, 6, 7, 8], 1), ([8, 7, 6, 5, 4, 3, 2, 1], 0)]
    generator = PairGenerator(data, batch_size=2)
    assert len(generator) == 3
    lengths = [inputs[0].shape[1] for inputs, _ in generator.__iter__()]
    assert lengths == [5, 5, 8]
    model = classifier()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    history = model.fit(generator.forfit(random=False), steps_per_epoch=len(generator), epochs=4,
                        verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    predictions = model.predict(generator.fortest(), steps=len(generator), verbose=0)
    assert predictions.shape == (6, 2)


class LossLayer(keras.layers.Layer):
    """A loss computed inside the model (bert4keras' ``Loss`` pattern): targets are None."""

    def call(self, inputs):
        logits, labels = inputs
        self.add_loss(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)))
        return logits


def test_inputs_with_no_targets_train_a_model_whose_loss_is_a_layer():
    class LabelsAsInput(PairGenerator):
        def __iter__(self, random=False):
            for (ids, segments), labels in super().__iter__(random):
                yield [ids, segments, labels], None

    base = classifier()
    labels = keras.Input(shape=(1,), dtype="int32")
    outputs = LossLayer()([base.output, labels])
    model = keras.Model([*base.inputs, labels], outputs)
    model.compile(optimizer="adam")
    generator = LabelsAsInput([([1, 2, 3], 0), ([3, 2, 1, 4], 1)] * 4, batch_size=3)
    history = model.fit(generator.forfit(), steps_per_epoch=len(generator), epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_sample_marks_the_last_item_and_shuffles_unsized_data():
    generator = DataGenerator([10, 20, 30], batch_size=2)
    assert list(generator.sample()) == [(False, 10), (False, 20), (True, 30)]
    np.random.seed(0)
    streamed = DataGenerator(iter(range(50)), batch_size=4, buffer_size=8)
    items = [item for _, item in streamed.sample(random=True)]
    assert sorted(items) == list(range(50)) and items != list(range(50))
    with pytest.raises(TypeError, match="unknown length"):
        len(streamed)
    with pytest.raises(NotImplementedError, match="subclass DataGenerator"):
        next(iter(generator))
    with pytest.raises(ValueError, match="no data"):
        list(DataGenerator([], batch_size=2).sample())


def test_parallel_apply_runs_closures_in_processes_and_threads():
    from bert4x.snippets import open as open_file, parallel_apply

    factor = 3
    assert parallel_apply(lambda x: x * factor, range(20), 2, 8, unordered=False) == \
        [x * factor for x in range(20)]
    assert sorted(parallel_apply(lambda x: x * factor, range(20), 2, 8)) == \
        [x * factor for x in range(20)]
    seen = []
    parallel_apply(lambda x: -x, range(5), 2, 4, callback=seen.append, dummy=True)
    assert sorted(seen) == [-4, -3, -2, -1, 0]
    with pytest.raises(NotImplementedError, match="indexable"):
        open_file(__file__, indexable=True)
    with open_file(__file__, encoding="utf-8") as handle:
        assert "parallel_apply" in handle.read()


def test_sequence_padding_keeps_float_labels_and_gives_int32_ids():
    soft = sequence_padding([np.array([0.25, 0.5]), np.array([0.75])])
    assert soft.dtype == np.float64 and soft.tolist() == [[0.25, 0.5], [0.75, 0.0]]
    assert sequence_padding([[1, 2], [3]]).dtype == np.int32


class SpanGenerator(DataGenerator):
    """A GlobalPointer-style generator: float64 [types, n, n] span matrices as one of two
    label arrays, yielded as lists the way bert4keras scripts yield them."""

    def __iter__(self, random=False):
        batch_token_ids, batch_spans = [], []
        for is_end, token_ids in self.sample(random):
            spans = np.zeros((2, len(token_ids), len(token_ids)))
            spans[0, 0, -1] = 1
            batch_token_ids.append(token_ids)
            batch_spans.append(spans)
            if len(batch_token_ids) == self.batch_size or is_end:
                token_ids = sequence_padding(batch_token_ids)
                yield [token_ids, np.zeros_like(token_ids)], \
                    [sequence_padding(batch_spans, seq_dims=3), token_ids[:, :1] * 0]
                batch_token_ids, batch_spans = [], []


def test_span_matrices_of_varying_length_and_several_outputs_train():
    from bert4x.layers import GlobalPointer

    data = [[1, 2, 3], [3, 2, 1], [4, 5, 6, 7, 8, 9]]  # batches of 3, 3 and 6 tokens
    generator = SpanGenerator(data, batch_size=1)
    inputs, (spans, column) = next(generator._batches(False))
    assert spans.dtype == np.float32  # Keras 2 cast float64 batches to its float32 inputs
    encoder = build_transformer_model(dict(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=24,
                                           max_position_embeddings=16))
    pointer = GlobalPointer(2, 8)(encoder.output)
    first = keras.layers.Dense(1)(keras.layers.Lambda(lambda x: x[:, 0])(encoder.output))
    model = keras.Model(encoder.inputs, [pointer, first])

    def span_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - keras.ops.sigmoid(y_pred)) * y_true)

    model.compile(optimizer="adam", loss=[span_loss, "mse"])
    history = model.fit(generator.forfit(random=False), steps_per_epoch=3, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


class ExampleGenerator(DataGenerator):
    """Yields one example at a time, for ``to_dataset`` to batch (bert4keras' usage)."""

    def __iter__(self, random=False):
        for _, (token_ids, label) in self.sample(random):
            yield [token_ids, [0] * len(token_ids)], [label]


def test_to_dataset_batches_and_pads_examples_and_names_them():
    data = [([1, 2, 3], 0), ([4, 5], 1), ([6], 0), ([7, 8, 9, 10], 1)]
    generator = ExampleGenerator(data, batch_size=2)
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(NotImplementedError, match="use forfit"):
            generator.to_dataset(types=[["int32", "int32"], "int32"],
                                 shapes=[[[None], [None]], [1]])
        return
    dataset = generator.to_dataset(types=[["int32", "int32"], "int32"],
                                   shapes=[[[None], [None]], [1]], padded_batch=True)
    (token_ids, segment_ids), labels = next(iter(dataset))
    assert token_ids.shape[0] == 2 and labels.shape == (2, 1)
    rows = {tuple(row[row > 0].tolist()) for row in token_ids.numpy()}
    assert rows <= {(1, 2, 3), (4, 5), (6,), (7, 8, 9, 10)}
    assert token_ids.shape[1] == max(len(r) for r in rows)  # padded to the longest
    flat = FlatExamples(data, batch_size=2)
    named = flat.to_dataset(types=["int32", "int32", "int32"], shapes=[[None], [None], [1]],
                            names=["Input-Token", "Input-Segment", "label"], padded_batch=True)
    batch = next(iter(named))
    assert set(batch) == {"Input-Token", "Input-Segment", "label"}
    assert batch["label"].shape == (2, 1)


class FlatExamples(ExampleGenerator):
    def __iter__(self, random=False):
        for (token_ids, segment_ids), label in super().__iter__(random):
            yield token_ids, segment_ids, label
