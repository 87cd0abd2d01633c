"""The shared training loop: batches, readers, optimiser options, schedule, callbacks, resume,
multi-device and mixed precision."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bert4x import build_transformer_model
from bert4x.models.precision import building_at
from bert4x.training import (
    BucketedBatches, DataError, Evaluator, WarmupDecay, build_optimizer, ema_weights,
    layerwise_multipliers, read_metrics_log, read_records, sequence_padding, train,
)

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
RUN_SCRIPT = os.path.join(os.path.dirname(__file__), "training_run.py")


def classifier(seed=0, **config):
    """A tiny BERT + linear classifier on the [CLS] vector, deterministic weights."""
    keras.utils.set_random_seed(seed)
    encoder = build_transformer_model(dict(TINY, **config))
    cls = keras.layers.Lambda(lambda x: x[:, 0])(encoder.output)
    return keras.Model(encoder.inputs, keras.layers.Dense(3, name="classifier")(cls))


def random_examples(count, seed=0):
    rng = np.random.default_rng(seed)
    return [(list(rng.integers(1, TINY["vocab_size"], rng.integers(3, 20))), int(rng.integers(3)))
            for _ in range(count)]


def collate(batch):
    ids = sequence_padding([ids for ids, _ in batch])
    return (ids, np.zeros_like(ids)), np.array([label for _, label in batch], "int32")


def compiled(model, optimizer):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# ---------------------------------------------------------------- data
def test_sequence_padding_pads_cuts_and_rejects_ragged_trailing_dims():
    np.testing.assert_array_equal(sequence_padding([[1, 2], [3]]), [[1, 2], [3, 0]])
    np.testing.assert_array_equal(sequence_padding([[1, 2, 3], [4]], length=2, value=-1),
                                  [[1, 2], [4, -1]])
    assert sequence_padding([np.ones((2, 3)), np.ones((4, 3))]).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="trailing dimensions"):
        sequence_padding([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="at least one sequence"):
        sequence_padding([])


def test_bucketed_batches_cover_every_example_once_with_less_padding_and_replay_by_epoch():
    examples = random_examples(203)
    data = BucketedBatches(examples, batch_size=8, collate=collate, length=lambda e: len(e[0]),
                           seed=3, bucket_batches=8)
    assert len(data) == 26
    seen = sorted(i for batch in data._batches for i in batch)
    assert seen == list(range(203))
    padded = sum(data[i][0][0].size for i in range(len(data)))
    unbucketed = BucketedBatches(examples, 8, collate, length=lambda e: len(e[0]), seed=3,
                                 bucket_batches=1)
    assert padded < 0.8 * sum(unbucketed[i][0][0].size for i in range(len(unbucketed)))
    epoch0 = [list(b) for b in data._batches]
    data.on_epoch_end()
    assert [list(b) for b in data._batches] != epoch0
    data.set_epoch(0)
    assert [list(b) for b in data._batches] == epoch0
    with pytest.raises(ValueError, match="the dataset is empty"):
        BucketedBatches([], 8, collate)
    with pytest.raises(ValueError, match="no full batch"):
        BucketedBatches(examples[:3], 8, collate, drop_remainder=True)


def test_epoch_size_walks_through_the_data_before_repeating_any_example():
    data = BucketedBatches(random_examples(50), batch_size=5, collate=collate, seed=2,
                           epoch_size=20, bucket_batches=2)
    used = []
    for epoch in range(5):  # 100 examples drawn: each of the 50 exactly twice, once per pass
        data.set_epoch(epoch)
        assert len(data) == 4
        used.extend(int(i) for batch in data._batches for i in batch)
    assert sorted(used[:40]) != list(range(40))
    assert len(set(used[:40])) == 40
    assert sorted(used) == sorted(list(range(50)) * 2)
    data.set_epoch(3)
    replay = [list(b) for b in data._batches]
    data.set_epoch(0)
    data.set_epoch(3)
    assert [list(b) for b in data._batches] == replay


def test_readers_report_file_and_line_and_can_skip_and_count(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("今天\t明天\t3\n\n坏行只有一列\n好\t的\t9\n一\t二\t1\n", encoding="utf-8")

    def parse(fields):
        label = int(fields[2])
        if not 0 <= label <= 5:
            raise ValueError(f"label {label} outside 0..5")
        return fields[0], fields[1], label

    with pytest.raises(DataError, match=r"pairs.tsv:3: expected 3 tab-separated fields, found 1"):
        read_records(path, parse, fields=3)
    result = read_records(path, parse, fields=3, on_error="skip")
    assert result.examples == [("今天", "明天", 3), ("一", "二", 1)]
    assert result.skipped == [(3, "expected 3 tab-separated fields, found 1"),
                              (4, "label 9 outside 0..5")]
    assert "2 malformed lines skipped" in result.summary()
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "好"}\n{"text": \n{"other": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data.jsonl:2: not valid JSON"):
        read_records(jsonl, lambda r: r["text"], fmt="jsonl")
    skipped = read_records(jsonl, lambda r: r["text"], fmt="jsonl", on_error="skip").skipped
    assert [line for line, _ in skipped] == [2, 3] and skipped[1][1] == "missing field 'text'"
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable records"):
        read_records(empty, parse, fields=3)


# ---------------------------------------------------------------- optimisation
def test_gradient_accumulation_of_k_batches_equals_one_batch_k_times_larger():
    examples = random_examples(32, seed=1)
    x, y = collate(examples)
    big = compiled(classifier(), build_optimizer(1e-2, weight_decay=0.01))
    big.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    accumulated = compiled(classifier(), build_optimizer(1e-2, weight_decay=0.01,
                                                         accumulation_steps=4))
    accumulated.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(classifier().get_weights(),
                                                            big.get_weights()))
    assert moved > 1e-3
    for a, b in zip(big.get_weights(), accumulated.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_ema_weights_equal_a_numpy_ema_of_the_trajectory():
    examples = random_examples(40, seed=2)
    x, y = collate(examples)
    model = compiled(classifier(), build_optimizer(1e-2, ema_momentum=0.8))
    trajectory = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            trajectory.append([v.numpy() for v in self.model.trainable_variables])

    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[Record()])
    expected = trajectory[0]
    for weights in trajectory[1:]:
        expected = [0.8 * e + 0.2 * w for e, w in zip(expected, weights)]
    current = [v.numpy() for v in model.trainable_variables]
    with ema_weights(model):
        for variable, value in zip(model.trainable_variables, expected):
            np.testing.assert_allclose(variable.numpy(), value, atol=1e-6)
    for variable, value in zip(model.trainable_variables, current):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="IndexedSlices, the sparse gradients at issue, exist only in TensorFlow")
def test_adam_on_repeated_tokens_matches_the_dense_formula():
    """Keras' TF Adam squares sparse embedding gradients per occurrence; ours must not."""
    import tensorflow as tf
    slices = tf.IndexedSlices(tf.ones((2, 2)), tf.constant([1, 1]), tf.constant([3, 2]))

    def two_steps(optimizer):
        embedding = keras.Variable(np.zeros((3, 2), "float32"), name="embeddings")
        optimizer.apply([slices], [embedding])
        optimizer.apply([slices], [embedding])
        return embedding.numpy()

    # Dense Adam: gradient 2 on row 1 twice -> m_hat / sqrt(v_hat) = 1 each step.
    expected = [[0, 0], [-0.2, -0.2], [0, 0]]
    np.testing.assert_allclose(two_steps(build_optimizer(0.1, weight_decay=0.0, epsilon=1e-12)),
                               expected, atol=1e-5)
    keras_result = two_steps(keras.optimizers.AdamW(0.1, weight_decay=0.0, epsilon=1e-12))
    np.testing.assert_allclose(keras_result[1], [-0.2 * 2 ** 0.5] * 2, rtol=1e-4)  # sqrt(2) off


def test_weight_decay_skips_biases_and_norms():
    model = compiled(classifier(), build_optimizer(1e-3, weight_decay=0.1))
    model.optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if model.optimizer._use_weight_decay(v)}
    assert "Transformer-0-MultiHeadSelfAttention/query/kernel" in decayed
    assert not any(p.endswith(("bias", "gamma", "beta")) for p in decayed)


def test_layerwise_decay_scales_each_layers_first_adam_step():
    x, y = collate(random_examples(16, seed=4))
    model = classifier()
    multipliers = layerwise_multipliers(model, 0.5)
    assert multipliers["Transformer-1-FeedForward/output/kernel"] == 0.5
    assert multipliers["Transformer-0-FeedForward/output/kernel"] == 0.25
    assert multipliers["Embedding-Token/embeddings"] == 0.125
    # epsilon ~0: Adam's first step is then lr * multiplier for every weight with a gradient,
    # however small the gradients a backend's initialisation happens to give.
    compiled(model, build_optimizer(1e-3, weight_decay=0.0, layerwise_decay=0.5, model=model,
                                    epsilon=1e-12))
    before = {v.path: v.numpy() for v in model.trainable_variables}
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for path, factor in [("Transformer-1-FeedForward/output/kernel", 0.5),
                         ("Transformer-0-FeedForward/output/kernel", 0.25),
                         ("classifier/kernel", 1.0)]:
        after = {v.path: v for v in model.trainable_variables}[path].numpy()
        step = np.abs(after - before[path])
        assert np.median(step) == pytest.approx(1e-3 * factor, rel=0.05)
    with pytest.raises(ValueError, match="needs the model"):
        build_optimizer(1e-3, layerwise_decay=0.5)


def test_warmup_decay_schedule_follows_its_formula():
    for decay, shape in [("linear", lambda p: 1 - p),
                         ("cosine", lambda p: 0.5 * (1 + np.cos(np.pi * p))),
                         ("constant", lambda p: 1.0)]:
        schedule = WarmupDecay(2e-3, total_steps=110, warmup_steps=10, decay=decay,
                               final_fraction=0.1)
        for step in [0, 5, 10, 40, 110, 500]:
            expected = (2e-3 * step / 10 if step < 10 else
                        2e-3 * (0.1 + 0.9 * shape(min((step - 10) / 100, 1.0))))
            assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-12)
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        WarmupDecay(1e-3, total_steps=5, warmup_steps=10)
    restored = WarmupDecay.from_config(schedule.get_config())
    assert float(restored(50)) == pytest.approx(float(schedule(50)))


# ---------------------------------------------------------------- the loop
def test_train_evaluates_keeps_best_weights_logs_plots_and_stops_early(tmp_path):
    examples = random_examples(48, seed=5)
    data = BucketedBatches(examples, 8, collate, length=lambda e: len(e[0]))
    model = compiled(classifier(), build_optimizer(3e-3, ema_momentum=0.5))
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    seen_weights = []

    def evaluate(model):
        seen_weights.append(model.get_layer("classifier").weights[0].numpy())
        return {"accuracy": next(scores)}

    raw_weights = []

    class RecordRaw(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raw_weights.append(None)

        def on_train_batch_end(self, batch, logs=None):
            raw_weights[-1] = self.model.get_layer("classifier").weights[0].numpy()

    evaluator = Evaluator(evaluate, monitor="accuracy", patience=2, verbose=False)
    train(model, data, epochs=5, work_dir=str(tmp_path), evaluator=evaluator, verbose=0,
          callbacks=[RecordRaw()])
    records = read_metrics_log(str(tmp_path / "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]  # stopped: 2 evaluations without gain
    assert [r["dev_accuracy"] for r in records] == [0.5, 0.7, 0.6, 0.65]
    assert records[-1]["loss"] < records[0]["loss"]
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert not any(p.name.startswith(".partial.") for p in tmp_path.rglob("*"))  # no partial files
    best = compiled(classifier(seed=9), build_optimizer(1e-3))
    best.load_weights(str(tmp_path / "best.weights.h5"))
    # The best weights are the EMA weights at epoch 2 (what the evaluator saw then).
    np.testing.assert_array_equal(best.get_layer("classifier").weights[0].numpy(),
                                  seen_weights[1])
    assert not np.array_equal(seen_weights[1], raw_weights[1])
    state = json.loads((tmp_path / "best.weights.h5.json").read_text())
    assert state["best"] == 0.7 and state["waited"] == 2


def test_evaluator_every_n_steps(tmp_path):
    data = BucketedBatches(random_examples(48, seed=7), 8, collate)  # 6 batches an epoch
    model = compiled(classifier(), build_optimizer(1e-3))
    calls = []
    evaluator = Evaluator(lambda m: calls.append(1) or {"f1": float(len(calls))}, "f1",
                          every_steps=4, verbose=False)
    train(model, data, epochs=2, work_dir=str(tmp_path), evaluator=evaluator, verbose=0)
    assert [(h["epoch"], h["step"]) for h in evaluator.history] == [(1, 4), (2, 8), (2, 12)]
    assert (tmp_path / "best.weights.h5").exists()


def test_resumed_evaluator_counts_steps_like_an_uninterrupted_run(tmp_path):
    """A second train() call in the same work dir resumes at epoch 2; the evaluations must
    land on the same global steps as in one uninterrupted two-epoch run."""
    data = BucketedBatches(random_examples(48, seed=7), 8, collate)  # 6 batches an epoch
    calls = []

    def evaluator():
        return Evaluator(lambda m: calls.append(1) or {"f1": float(len(calls))}, "f1",
                         every_steps=4, verbose=False)

    train(compiled(classifier(), build_optimizer(1e-3)), data, epochs=1,
          work_dir=str(tmp_path), evaluator=evaluator(), verbose=0)
    resumed = evaluator()
    train(compiled(classifier(), build_optimizer(1e-3)), data, epochs=2,
          work_dir=str(tmp_path), evaluator=resumed, verbose=0)
    assert [(h["epoch"], h["step"]) for h in resumed.history] == [(1, 4), (2, 8), (2, 12)]


def test_resuming_a_work_dir_of_another_model_is_refused_clearly(tmp_path):
    data = BucketedBatches(random_examples(16), 8, collate)
    train(compiled(classifier(), build_optimizer(1e-3)), data, 1, str(tmp_path), verbose=0)
    other = compiled(classifier(intermediate_size=24), build_optimizer(1e-3))
    with pytest.raises(ValueError, match=r"holds the backup of a run of another model \(weight "
                                         r".*is \[16, 32\] there and \[16, 24\] here"):
        train(other, data, 2, str(tmp_path), verbose=0)
    deeper = compiled(classifier(num_hidden_layers=3), build_optimizer(1e-3))
    with pytest.raises(ValueError, match="weight arrays, this model"):
        train(deeper, data, 2, str(tmp_path), verbose=0)
    # The same model resumes as before.
    train(compiled(classifier(), build_optimizer(1e-3)), data, 2, str(tmp_path), verbose=0)
    assert len(read_metrics_log(str(tmp_path / "metrics.jsonl"))) == 2


def test_resuming_with_another_optimizer_or_seed_is_refused_clearly(tmp_path):
    """Same model, other learning rate, schedule, seed, batches per epoch or precision:
    resuming would end with weights that neither run's settings give."""
    data = BucketedBatches(random_examples(16), 8, collate)
    train(compiled(classifier(), build_optimizer(1e-3)), data, 1, str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=r"learning_rate: 0\.001 there, 0\.002 now"):
        train(compiled(classifier(), build_optimizer(2e-3)), data, 2, str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=r"learning_rate: 0\.001 there, None now.*"
                                         r"learning_rate\.config\.total_steps: None there, 4 now"):
        train(compiled(classifier(), build_optimizer(WarmupDecay(1e-3, 4))), data, 2,
              str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match="seed: 0 there, 1 now"):
        train(compiled(classifier(), build_optimizer(1e-3)), data, 2, str(tmp_path), seed=1,
              verbose=0)
    smaller_batches = BucketedBatches(random_examples(16), 4, collate)
    with pytest.raises(ValueError, match="steps_per_epoch: 2 there, 4 now"):
        train(compiled(classifier(), build_optimizer(1e-3)), smaller_batches, 2, str(tmp_path),
              verbose=0)
    with building_at("bf16"):
        mixed = classifier()
    with pytest.raises(ValueError, match=r"dtype_policies: \['float32'\] there, "
                                         r"\['mixed_bfloat16'\] now"):
        train(compiled(mixed, build_optimizer(1e-3)), data, 2, str(tmp_path), verbose=0)
    # The same settings resume the run, for more epochs too.
    train(compiled(classifier(), build_optimizer(1e-3)), data, 2, str(tmp_path), verbose=0)
    assert len(read_metrics_log(str(tmp_path / "metrics.jsonl"))) == 2


def test_train_refuses_uncompiled_models_and_bad_evaluators(tmp_path):
    data = BucketedBatches(random_examples(8), 4, collate)
    with pytest.raises(ValueError, match="compile the model"):
        train(classifier(), data, 1, str(tmp_path))
    with pytest.raises(ValueError, match="must end in .weights.h5"):
        Evaluator(lambda m: {}, "f1", best_path="best.h5")
    model = compiled(classifier(), build_optimizer(1e-3))
    with pytest.raises(KeyError, match="not the monitored 'f1'"):
        train(model, data, 1, str(tmp_path), evaluator=Evaluator(lambda m: {"acc": 1.0}, "f1"),
              verbose=0)


def run_script(*args, **env):
    """Run tests/training_run.py with ``args``, its environment updated by ``env``."""
    return subprocess.run([sys.executable, RUN_SCRIPT, *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def test_a_run_ends_with_the_same_weights_whatever_was_built_before_it(tmp_path):
    """Dropout masks must follow the seed, not Keras' process-wide layer-name counter (the
    second model's layers, built later in the same process, get other names)."""
    data = BucketedBatches(random_examples(32, seed=3), 8, collate)

    def trained(work_dir):
        model = compiled(classifier(hidden_dropout_prob=0.3), build_optimizer(1e-2))
        train(model, data, epochs=2, work_dir=str(work_dir), seed=4, verbose=0)
        return model.get_layer("classifier").weights[0].numpy()

    first = trained(tmp_path / "first")
    again = trained(tmp_path / "again")
    np.testing.assert_allclose(again, first, atol=1e-6)
    untrained = classifier(hidden_dropout_prob=0.3).get_layer("classifier").weights[0].numpy()
    assert not np.allclose(first, untrained, atol=1e-3)  # it did train


def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    """Dropout on, EMA on, warmup schedule: SIGKILL after epoch 2, re-run, compare."""
    whole = run_script("--work-dir", str(tmp_path / "whole"), "--out", str(tmp_path / "a.npz"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run_script("--work-dir", str(tmp_path / "cut"), "--out", str(tmp_path / "b.npz"),
                        "--kill-after-epoch", "2")
    assert killed.returncode == -9 and not (tmp_path / "b.npz").exists()
    resumed = run_script("--work-dir", str(tmp_path / "cut"), "--out", str(tmp_path / "b.npz"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert len(b["__loss__"]) == 2  # only epochs 3 and 4 ran again
    np.testing.assert_allclose(b["__loss__"], a["__loss__"][2:], rtol=1e-6)
    assert int(a["__steps__"]) == int(b["__steps__"]) == 24
    for name in a.files:
        if not name.startswith("__"):
            np.testing.assert_allclose(b[name], a[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_runs_and_learns(policy):
    x, y = collate(random_examples(32, seed=6))
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = compiled(classifier(), build_optimizer(3e-3))
        assert model.get_layer("Transformer-0-FeedForward").compute_dtype == policy.split("_")[1]
        history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]


# ---------------------------------------------------------------- run safety and faults
def three_epochs(work_dir, callbacks=(), learning_rate=1e-3, model=None):
    """A 3-epoch run of the tiny classifier; its final classifier kernel."""
    data = BucketedBatches(random_examples(24, seed=5), 8, collate)
    model = model or compiled(classifier(), build_optimizer(learning_rate))
    train(model, data, 3, str(work_dir), callbacks=callbacks, verbose=0)
    return model.get_layer("classifier").weights[0].numpy()


class FailAtEpoch(keras.callbacks.Callback):
    """Interrupt a run as a crash would, at the start of ``epoch`` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return three_epochs(tmp_path_factory.mktemp("whole"))


def backup_epochs(work_dir):
    with open(work_dir / "backup" / "training_metadata.json") as handle:
        return [entry["epoch"] for entry in json.load(handle)["backups"]]


def test_a_truncated_backup_falls_back_to_the_one_before(tmp_path, uninterrupted, capsys):
    with pytest.raises(KeyboardInterrupt):
        three_epochs(tmp_path, [FailAtEpoch(2)])
    assert backup_epochs(tmp_path) == [1, 2]
    latest = tmp_path / "backup" / "epoch-2.weights.h5"
    latest.write_bytes(latest.read_bytes()[:1000])
    resumed = three_epochs(tmp_path)
    assert "epoch-2.weights.h5" in capsys.readouterr().err  # said which file was damaged
    np.testing.assert_allclose(resumed, uninterrupted, atol=1e-6)
    assert [r["epoch"] for r in read_metrics_log(str(tmp_path / "metrics.jsonl"))] == [1, 2, 3]


def test_when_every_backup_is_damaged_resuming_says_so_and_trains_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        three_epochs(tmp_path, [FailAtEpoch(2)])
    for epoch in (1, 2):
        (tmp_path / "backup" / f"epoch-{epoch}.weights.h5").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match=r"cannot resume the run in .*backup: every backup is "
                                         r"damaged: .*epoch-2\.weights\.h5.*epoch-1\.weights\.h5"
                                         r".*Delete .* to train from the start"):
        three_epochs(tmp_path)


def test_a_full_disk_while_backing_up_leaves_the_last_backup_to_resume_from(
        tmp_path, uninterrupted, monkeypatch):
    real_save = keras.Model.save_weights
    calls = []

    def disk_fills_on_second_backup(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as handle:
                handle.write(b"\x89HDF\r\n half a file")
            raise OSError(28, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", disk_fills_on_second_backup)
    with pytest.raises(ValueError, match=r"cannot write the backup of epoch 2 to .*backup "
                                         r"\(\[Errno 28\] No space left on device\); the backup "
                                         r"of epoch 1 is intact"):
        three_epochs(tmp_path)
    monkeypatch.setattr(keras.Model, "save_weights", real_save)
    assert backup_epochs(tmp_path) == [1]
    assert not list((tmp_path / "backup").glob(".partial.*"))  # the half file is gone
    np.testing.assert_allclose(three_epochs(tmp_path), uninterrupted, atol=1e-6)


def test_a_crash_between_weights_and_step_counter_resumes_from_the_counted_epoch(
        tmp_path, uninterrupted, monkeypatch):
    from bert4x.training.backup import AtomicBackup

    real_write = AtomicBackup._write_metadata

    def crash_on_second(self, metadata):
        if metadata["epoch"] == 2:
            raise KeyboardInterrupt  # the weights of epoch 2 are on disk, the counter is not
        real_write(self, metadata)

    monkeypatch.setattr(AtomicBackup, "_write_metadata", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        three_epochs(tmp_path)
    monkeypatch.setattr(AtomicBackup, "_write_metadata", real_write)
    assert (tmp_path / "backup" / "epoch-2.weights.h5").exists()
    assert backup_epochs(tmp_path) == [1]
    np.testing.assert_allclose(three_epochs(tmp_path), uninterrupted, atol=1e-6)
    assert backup_epochs(tmp_path) == [2, 3]


def test_a_diverging_run_stops_at_once_and_keeps_the_last_good_backup(tmp_path):
    class Diverge(keras.callbacks.Callback):
        """What a too-high learning rate does, at a known moment: epoch 2's weights go NaN."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = self.model.get_layer("classifier").weights[0]
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    with pytest.raises(ValueError, match=r"training stopped: the loss became nan in epoch 2, "
                                         r"batch 1\. Likely causes: a learning rate too high, it "
                                         r"is 0\.001 now.*The backup of epoch 1 in .* is intact"):
        three_epochs(tmp_path, [Diverge()])
    assert backup_epochs(tmp_path) == [1]
    assert [r["epoch"] for r in read_metrics_log(str(tmp_path / "metrics.jsonl"))] == [1]


def test_a_huge_learning_rate_stops_the_run_naming_the_rate(tmp_path):
    with pytest.raises(ValueError, match=r"training stopped: the loss became (nan|inf) in epoch "
                                         r"\d, batch \d+\. Likely causes: a learning rate too "
                                         r"high, it is 1e\+06 now"):
        three_epochs(tmp_path, learning_rate=1e6)


def test_a_run_without_backups_says_so_when_it_stops(tmp_path):
    data = BucketedBatches(random_examples(16), 8, collate)
    with pytest.raises(ValueError, match=r"the loss became .*This run keeps no backups"):
        train(compiled(classifier(), build_optimizer(1e6)), data, 3, str(tmp_path),
              resume=False, verbose=0)


def test_weights_that_are_not_finite_are_refused_before_training(tmp_path):
    model = compiled(classifier(), build_optimizer(1e-3))
    bias = model.get_layer("classifier").weights[1]
    bias.assign(np.array([0, np.inf, 0], "float32"))
    with pytest.raises(ValueError, match=r"weight classifier/bias holds NaN or infinite values "
                                         r"before training"):
        three_epochs(tmp_path, model=model)


def test_a_dev_metric_that_is_nan_stops_the_run(tmp_path):
    data = BucketedBatches(random_examples(16), 8, collate)
    evaluator = Evaluator(lambda m: {"f1": float("nan")}, "f1", verbose=False)
    with pytest.raises(ValueError, match=r"training stopped: the dev f1 is nan after epoch 1"):
        train(compiled(classifier(), build_optimizer(1e-3)), data, 2, str(tmp_path),
              evaluator=evaluator, verbose=0)


def test_two_runs_on_one_work_dir_cannot_overlap(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bert4x.training import work_dir_lock\n"
         "with work_dir_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"{tmp_path} is in use by process {holder.pid} "
                                             r"on .*, started .*; wait for that run to end"):
            three_epochs(tmp_path)
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    three_epochs(tmp_path)  # a killed holder leaves no stale lock
