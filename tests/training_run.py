"""A small real training run for the loop's fault and multi-device tests (run as a subprocess).

Fine-tunes a tiny random BERT to tell similar STS-B-zh pairs (score >= 3) from dissimilar ones,
through ``bert4x.training.train``. Writes the final weights (and the loss per epoch) to
``--out`` as .npz. ``--kill-after-epoch K`` kills the process (SIGKILL, no clean-up) once
epoch K is backed up; ``--devices 2`` splits the CPU into two logical devices under
``tf.distribute.MirroredStrategy``.
"""

import argparse
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kill-after-epoch", type=int)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--examples", type=int, default=96)
    args = parser.parse_args()

    import tensorflow as tf
    if args.devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices)
    import keras
    import numpy as np

    from bert4x import build_transformer_model
    from bert4x.tokenizers import Tokenizer
    from bert4x.training import (BucketedBatches, WarmupDecay, build_optimizer, read_records,
                                 sequence_padding, train)
    from pretrained import CHINESE_BERT_VOCAB, STSB_ZH_DIR

    keras.utils.set_random_seed(0)
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
    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.devices)])
                if args.devices > 1 else tf.distribute.get_strategy())
    with strategy.scope():
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
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
