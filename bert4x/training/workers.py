"""Which worker of a multi-machine run this process is, so that exactly one of them writes.

Every worker of a data-parallel run holds the same weights after each step, so one copy of
the run's state is enough, and several processes writing it to shared storage would race.
Worker 0 (the chief) owns the work directory; worker ``i`` keeps its own logs and lock in
``work_dir/worker-i`` and resumes from the chief's backup. The engines say who is who:
TensorFlow in ``TF_CONFIG`` (``tf.distribute.MultiWorkerMirroredStrategy``), JAX in
``jax.process_index()`` after ``keras.distribution.initialize``.

Keras 3.15's ``fit`` fails under TensorFlow's ``MultiWorkerMirroredStrategy`` in two places
(keras-team/keras#20585, open); :func:`prepare_multi_worker_fit` mends both for the model
:func:`~bert4x.training.train` is about to fit.
"""

from __future__ import annotations

import json
import os

import keras


def worker_index() -> int:
    """0 for the chief (and for any single-process run), else this worker's index."""
    if keras.backend.backend() == "jax":
        import jax
        return jax.process_index()
    config = _tf_config()
    return 0 if config is None else _tf_config_index(config)


def worker_count() -> int:
    """How many processes train together (1 without a multi-worker set-up)."""
    if keras.backend.backend() == "jax":
        import jax
        return jax.process_count()
    config = _tf_config()
    if config is None:
        return 1
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _tf_config():
    """The parsed ``TF_CONFIG`` under TensorFlow, None where there is none."""
    text = os.environ.get("TF_CONFIG")
    if keras.backend.backend() != "tensorflow" or not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got "
                         f"{text[:200]!r}")
    return config


def _tf_config_index(config: dict) -> int:
    """TensorFlow's rule: the "chief" task if the cluster names one, else worker 0. Workers
    after a named chief are numbered from 1, so that 0 always means the chief."""
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return 0
    if kind != "worker":
        raise ValueError(f"TF_CONFIG task type {kind!r}: bert4x trains with "
                         "MultiWorkerMirroredStrategy, whose tasks are 'chief' and 'worker'")
    return index + 1 if "chief" in config.get("cluster", {}) else index


def worker_dir(work_dir: str, index: int) -> str:
    """Where worker ``index`` keeps what is its own: the run's directory for the chief."""
    return work_dir if index == 0 else os.path.join(work_dir, f"worker-{index}")


def prepare_multi_worker_fit(model: keras.Model, dataset) -> None:
    """Work around keras-team/keras#20585: under ``MultiWorkerMirroredStrategy`` Keras 3's
    ``fit`` first all-reduces a whole input batch to learn its shapes, which fails with
    "Attempt to convert a value (PerReplica...)". Build the model's training state from one
    local batch here, and skip that step of this model's ``fit``."""
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset)))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    from keras.src.backend.tensorflow import trainer
    if not getattr(trainer.reduce_per_replica, "bert4x", False):
        trainer.reduce_per_replica = _scalar_safe_reduce(trainer.reduce_per_replica)


def _scalar_safe_reduce(reduce_per_replica):
    """Keras 3 averages each step's logs over workers with ``reduce(..., axis=0)``, which fails
    on the scalar losses and metrics it logs ("Invalid reduction dimension 0 for input with 0
    dimensions"); the mean over replicas is ``axis=None``."""
    import tensorflow as tf

    def reduce(values, strategy, reduction):
        if reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return reduce_per_replica(values, strategy, reduction)

    reduce.bert4x = True
    return reduce
