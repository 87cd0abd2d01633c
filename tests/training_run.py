"""A small real training run for the loop's fault and multi-device tests (run as a subprocess).

Fine-tunes a tiny random BERT to tell similar STS-B-zh pairs (score >= 3) from dissimilar ones,
through ``bert4x.training.train``. Writes the final weights (and the loss per epoch) to
``--out`` as .npz. ``--kill-after-epoch K`` kills the process (SIGKILL, no clean-up) once
epoch K is backed up. ``--strategy`` spreads each global batch over two replicas:

    mirrored      TensorFlow, two logical CPU devices in this process (MirroredStrategy)
    multi-worker  TensorFlow, one replica per process; the caller starts each worker with its
                  TF_CONFIG (MultiWorkerMirroredStrategy)
    data-parallel JAX, two host devices (XLA_FLAGS=--xla_force_host_platform_device_count=2,
                  set by the caller) under keras.distribution.DataParallel
"""

import argparse
import contextlib
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def distribution_scope(strategy: str):
    """Set up ``strategy`` before the model is built; the scope to build it in."""
    if strategy in ("mirrored", "multi-worker"):
        import tensorflow as tf
        if strategy == "multi-worker":
            return tf.distribute.MultiWorkerMirroredStrategy().scope()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()
    if strategy == "data-parallel":
        import keras
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == 2, devices
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return contextlib.nullcontext()


def local_examples_per_epoch(model, data) -> int:
    """How many examples of an epoch this process computes on: the whole epoch unless the
    strategy splits the batches (it is what shows that a split run really is split)."""
    import keras
    if keras.backend.backend() != "tensorflow":
        distribution, count = keras.distribution.distribution(), 0
        for index in range(len(data)):
            labels = data[index][1]
            if distribution is not None:  # laid out as Keras lays out each input batch
                labels = keras.distribution.distribute_tensor(
                    labels, distribution.get_data_layout(labels.shape))
                labels = labels.addressable_shards[0].data
            count += len(labels)
        return count
    import tensorflow as tf
    strategy = model.distribute_strategy
    batches = strategy.experimental_distribute_dataset(data.as_tf_dataset())
    return sum(int(tf.shape(strategy.experimental_local_results(labels)[0])[0])
               for _, labels in batches)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kill-after-epoch", type=int)
    parser.add_argument("--strategy", choices=["none", "mirrored", "multi-worker",
                                               "data-parallel"], default="none")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--examples", type=int, default=96)
    args = parser.parse_args()

    scope = distribution_scope(args.strategy)
    import keras
    import numpy as np

    from bert4x import build_transformer_model
    from bert4x.tokenizers import Tokenizer
    from bert4x.training import (BucketedBatches, WarmupDecay, build_optimizer, read_records,
                                 sequence_padding, train)
    from pretrained import CHINESE_BERT_VOCAB, STSB_ZH_DIR

    keras.utils.set_random_seed(0)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    tokenizer = Tokenizer(CHINESE_BERT_VOCAB)
    records = read_records(STSB_ZH_DIR / "train.data",
                           lambda f: (f[0], f[1], int(float(f[2]) >= 3)), fields=3)
    examples = [(*tokenizer.encode(a, b, maxlen=48), label)
                for a, b, label in records.examples[:args.examples]]

    def collate(batch):
        ids, segments, labels = zip(*batch)
        return (sequence_padding(ids), sequence_padding(segments)), np.array(labels, "int32")

    data = BucketedBatches(examples, batch_size=16, collate=collate, length=lambda e: len(e[0]),
                           seed=1, bucket_batches=2)
    with scope:
        encoder = build_transformer_model(
            dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                 hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout),
            with_pool=True)
        logits = keras.layers.Dense(2, name="classifier")(encoder.outputs[0])
        model = keras.Model(encoder.inputs, logits)
        steps = args.epochs * len(data)
        model.compile(optimizer=build_optimizer(WarmupDecay(1e-3, steps, warmup_steps=2),
                                                ema_momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class KillAfter(keras.callbacks.Callback):
        """At the start of the next epoch every epoch-end callback, the backup included, is done."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == args.kill_after_epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    history = train(model, data, args.epochs, args.work_dir, verbose=0, callbacks=[KillAfter()])
    arrays = {v.path: v.numpy() for v in model.weights}
    arrays["__loss__"] = np.array(history.history["loss"])
    arrays["__steps__"] = np.array(int(model.optimizer.iterations.numpy()))
    arrays["__local_examples__"] = np.array(local_examples_per_epoch(model, data))
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
