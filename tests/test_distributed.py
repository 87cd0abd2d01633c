"""Data-parallel and model-parallel training on the engines' own machinery: the same global
batches give the same losses and weights as one device, and a run whose worker was killed
resumes. Each run is tests/training_run.py in its own process (a strategy, a device count and
a Keras backend are fixed per process)."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_training import RUN_SCRIPT, run_script

TWO_HOST_DEVICES = "--xla_force_host_platform_device_count=2"
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")


def weights(result: dict) -> dict:
    return {name: result[name] for name in result.files if not name.startswith("__")}


def assert_same_run(split, single, atol):
    """Same steps and loss curve; the split run really computed on half of each batch."""
    assert int(split["__steps__"]) == int(single["__steps__"]) == 24
    assert single["__loss__"][-1] < single["__loss__"][0] - 0.03  # it learned
    assert int(single["__local_examples__"]) == 96
    assert int(split["__local_examples__"]) == 48
    np.testing.assert_allclose(split["__loss__"], single["__loss__"], atol=atol)


def test_mirrored_training_on_two_cpus_follows_the_single_device_loss_curve(tmp_path):
    single = run_script("--work-dir", str(tmp_path / "one"), "--out", str(tmp_path / "one.npz"),
                        "--dropout", "0", KERAS_BACKEND="tensorflow")
    mirrored = run_script("--work-dir", str(tmp_path / "two"), "--out", str(tmp_path / "two.npz"),
                          "--dropout", "0", "--strategy", "mirrored", KERAS_BACKEND="tensorflow")
    assert single.returncode == 0 and mirrored.returncode == 0, mirrored.stderr[-2000:]
    # Only the summation order differs, which Adam's early sign-like steps amplify to ~1e-4.
    assert_same_run(np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz"), atol=1e-3)


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def start_workers(work_dir, outputs, kill_after=None):
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1; ``kill_after``: worker 1 kills
    itself (SIGKILL) once that many epochs are done."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index, out in enumerate(outputs):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        args = ["--work-dir", str(work_dir), "--out", str(out), "--dropout", "0",
                "--strategy", "multi-worker"]
        if kill_after is not None and index == 1:
            args += ["--kill-after-epoch", str(kill_after)]
        workers.append(subprocess.Popen(
            [sys.executable, RUN_SCRIPT, *args], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CONFIG": config}))
    return workers


def finish(workers, timeout=600):
    errors = [worker.communicate(timeout=timeout)[1] for worker in workers]
    for worker, error in zip(workers, errors):
        assert worker.returncode == 0, error[-3000:]


@pytest.fixture(scope="module")
def single_tf_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("single")
    done = run_script("--work-dir", str(where / "run"), "--out", str(where / "out.npz"),
                      "--dropout", "0", KERAS_BACKEND="tensorflow")
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(where / "out.npz")


def test_two_worker_processes_train_like_one_process(tmp_path, single_tf_run):
    outputs = [tmp_path / "chief.npz", tmp_path / "worker.npz"]
    finish(start_workers(tmp_path / "run", outputs))
    chief, worker = (np.load(out) for out in outputs)
    assert_same_run(chief, single_tf_run, atol=1e-5)
    for name, value in weights(single_tf_run).items():
        np.testing.assert_allclose(chief[name], value, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(worker[name], chief[name], err_msg=name)
    # Only the chief wrote the backup; the other worker logged in its own directory.
    assert (tmp_path / "run" / "backup" / "epoch-4.weights.h5").exists()
    assert (tmp_path / "run" / "worker-1" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "worker-1" / "backup").exists()


def backed_up_epoch(work_dir) -> int:
    try:
        with open(work_dir / "backup" / "training_metadata.json") as handle:
            return json.load(handle)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_run_whose_worker_was_killed_resumes_to_the_same_weights(tmp_path, single_tf_run):
    outputs = [tmp_path / "chief.npz", tmp_path / "worker.npz"]
    chief, worker = start_workers(tmp_path / "run", outputs, kill_after=2)
    assert worker.wait(timeout=600) == -signal.SIGKILL
    deadline = time.time() + 120  # the chief finishes backing up epoch 2, then waits for it
    while backed_up_epoch(tmp_path / "run") < 2 and time.time() < deadline:
        time.sleep(0.2)
    chief.kill()
    chief.communicate()
    assert backed_up_epoch(tmp_path / "run") == 2
    finish(start_workers(tmp_path / "run", outputs))  # the same command again, both workers
    resumed = np.load(outputs[0])
    assert len(resumed["__loss__"]) == 2  # epochs 3 and 4 only
    np.testing.assert_allclose(resumed["__loss__"], single_tf_run["__loss__"][2:], atol=1e-5)
    for name, value in weights(single_tf_run).items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-5, err_msg=name)


@needs_jax
def test_jax_data_parallel_on_two_devices_trains_like_one_device(tmp_path):
    runs = {}
    for name, extra in [("one", []), ("two", ["--strategy", "data-parallel"])]:
        done = run_script("--work-dir", str(tmp_path / name), "--out", str(tmp_path / name),
                          "--dropout", "0", *extra, KERAS_BACKEND="jax",
                          XLA_FLAGS=TWO_HOST_DEVICES)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = np.load(tmp_path / f"{name}.npz")
    assert_same_run(runs["two"], runs["one"], atol=1e-5)
    for name, value in weights(runs["one"]).items():
        np.testing.assert_allclose(runs["two"][name], value, atol=1e-5, err_msg=name)


MODEL_PARALLEL = """
import json, sys
import keras, numpy as np
from bert4x import build_transformer_model
from bert4x.training import model_parallel_layout
config = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=16)
ids = np.random.default_rng(0).integers(1, 40, (4, 10))
inputs, targets = [ids, np.zeros_like(ids)], np.random.default_rng(1).integers(0, 40, (4, 10))
results = {}
for family in ["bert", "gau_alpha"]:
    def trained(distribution, start=None):
        keras.distribution.set_distribution(distribution)
        keras.utils.set_random_seed(0)
        model = build_transformer_model(config, model=family, with_mlm=True)
        if start is not None:
            model.set_weights(start)
        start = model.get_weights()
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        before = model.predict(inputs, verbose=0)
        model.fit(inputs, targets, batch_size=4, epochs=3, verbose=0)
        halves = [tuple(v.value.sharding.shard_shape(v.shape)) == (v.shape[0], v.shape[1] // 2)
                  for v in model.weights if v.path.endswith("query/kernel")
                  or v.path.endswith("i_dense/kernel")]
        return start, before, model.get_weights(), halves
    start, before, after, _ = trained(None)
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"])
    layout = model_parallel_layout(mesh, config=config)
    split = keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")
    _, split_before, split_after, halves = trained(split, start)
    results[family] = dict(
        predict=float(np.abs(split_before - before).max()),
        trained=max(float(np.abs(a - b).max()) for a, b in zip(split_after, after)),
        moved=max(float(np.abs(a - b).max()) for a, b in zip(after, start)), halves=halves)
try:
    model_parallel_layout(mesh, config={**config, "intermediate_size": 25})
except ValueError as error:
    results["odd_size"] = str(error)
print("RESULT " + json.dumps(results))
"""


@needs_jax
def test_jax_model_parallel_layout_splits_the_weights_and_keeps_the_numbers():
    done = subprocess.run([sys.executable, "-c", MODEL_PARALLEL], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "KERAS_BACKEND": "jax",
                                            "XLA_FLAGS": TWO_HOST_DEVICES})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.rsplit("RESULT ", 1)[1])
    assert results.pop("odd_size") == ("intermediate_size=25 does not split over the 2 devices "
                                       "of the mesh axis 'model': it must be a multiple of 2")
    for family, result in results.items():
        assert result["halves"] and all(result["halves"]), (family, result)
        assert result["predict"] < 1e-5, (family, result)
        assert result["moved"] > 1e-3, (family, result)  # three Adam steps did train
        assert result["trained"] < 1e-5, (family, result)


def test_a_malformed_tf_config_is_a_clear_error(monkeypatch):
    import keras

    from bert4x.training import worker_count, worker_index
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TF_CONFIG is read under TensorFlow only")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]')
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        worker_index()
    monkeypatch.setenv("TF_CONFIG", '["127.0.0.1:1"]')
    with pytest.raises(ValueError, match="must be a JSON object"):
        worker_count()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"ps": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ValueError, match="task type 'ps'"):
        worker_index()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert (worker_index(), worker_count()) == (1, 2)
