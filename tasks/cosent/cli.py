"""``bert4x cosent train|evaluate|encode|search`` (also ``python -m tasks.cosent.cli``).

    bert4x cosent train --train train.tsv --dev dev.tsv --test test.tsv --work-dir runs/cosent
    bert4x cosent train --config C --checkpoint P --vocab V --model bert --objective both ...
    bert4x cosent evaluate --work-dir runs/cosent --data test.tsv      (a single-objective run)
    bert4x cosent encode --work-dir runs/cosent --input corpus.txt --output corpus_index
    bert4x cosent search --work-dir runs/cosent --index corpus_index --query "..." -k 5
"""

from __future__ import annotations

import sys

from bert4x.arguments import (DATA_SOURCE_HELP, add_column_option, add_optimizer_option,
                              add_precision_option, positive_number, whole_number)
from tasks.cosent.model import POOLINGS
from tasks.cosent.task import OBJECTIVES
from tasks.model_options import add_model_options, resolve_model_options


def _read_pairs(path, args):
    from tasks.cosent.data import read_pairs

    result = read_pairs(path, fmt=args.format, label_range=args.label_range,
                        on_error=args.on_error, columns=dict(args.columns))
    if result.skipped:
        print(result.summary(), file=sys.stderr)
    return result.examples


def _settings(args, objective):
    from tasks.cosent.task import Settings

    return Settings(**resolve_model_options(args, default_family="bert"), pooling=args.pooling,
                    output_dim=args.output_dim, maxlen=args.maxlen, objective=objective)


def _train(args):
    from tasks.cosent.task import compare_objectives

    objectives = ("sbert", "cosent") if args.objective == "both" else (args.objective,)
    splits = {"dev": _read_pairs(args.dev, args)}
    if args.test:
        splits["test"] = _read_pairs(args.test, args)
    compare_objectives(_settings(args, objectives[0]), objectives, _read_pairs(args.train, args),
                       splits, args.work_dir, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, seed=args.seed,
                       optimizer=args.optimizer, precision=args.precision)
    return 0


def _evaluate(args):
    from tasks.cosent.task import load_trained_encoder, spearman

    encoder = load_trained_encoder(args.work_dir, args.precision)
    print(f"Spearman ×100: {spearman(encoder, _read_pairs(args.data, args)):.2f}")
    return 0


def _encode(args):
    from bert4x.training import read_text_lines
    from tasks.cosent.task import load_trained_encoder
    from tasks.cosent.vectors import VectorIndex

    texts = read_text_lines(args.input)
    vectors = load_trained_encoder(args.work_dir, args.precision).encode(
        texts, batch_size=args.batch_size)
    print("wrote", VectorIndex(vectors, texts).save(args.output), f"({len(texts)} vectors)")
    return 0


def _search(args):
    from tasks.cosent.task import load_trained_encoder
    from tasks.cosent.vectors import VectorIndex

    index = VectorIndex.load(args.index)
    queries = args.query
    vectors = load_trained_encoder(args.work_dir, args.precision).encode(queries, progress=False)
    for query, hits in zip(queries, index.search(vectors, args.k)):
        print(query)
        for rank, (_, score, text) in enumerate(hits, start=1):
            print(f"  {rank}. {score:.4f}  {text}")
    return 0


def add_commands(subparsers) -> None:
    """Register ``cosent`` and its sub-commands on the ``bert4x`` parser."""
    cosent = subparsers.add_parser("cosent", help="CoSENT sentence vectors")
    commands = cosent.add_subparsers(dest="cosent_command", required=True)

    def data_options(parser):
        parser.add_argument("--format", choices=["tsv", "jsonl"],
                            help="pair file format (default: from the suffix)")
        parser.add_argument("--label-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                            help="reject labels outside [LOW, HIGH]")
        parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                            help="stop at a malformed line, or skip and count it")
        add_column_option(parser, "sentence1, sentence2, label")

    train = commands.add_parser("train", help="fine-tune an encoder, report Spearman")
    add_model_options(train, default_family="bert")
    train.add_argument("--train", required=True, help=DATA_SOURCE_HELP)
    train.add_argument("--dev", required=True, help=DATA_SOURCE_HELP)
    train.add_argument("--test", help=DATA_SOURCE_HELP)
    train.add_argument("--objective", choices=(*OBJECTIVES, "both"), default="cosent",
                       help="'both' trains Sentence-BERT and CoSENT with the same budget, "
                            "in WORK_DIR/sbert and WORK_DIR/cosent")
    train.add_argument("--pooling", choices=POOLINGS, default="mean")
    train.add_argument("--output-dim", type=whole_number())
    train.add_argument("--maxlen", type=whole_number(3), default=64)
    train.add_argument("--batch-size", type=whole_number(), default=32)
    train.add_argument("--epochs", type=whole_number(), default=2)
    train.add_argument("--learning-rate", type=positive_number, default=2e-5)
    add_optimizer_option(train)
    add_precision_option(train, training=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--work-dir", required=True)
    data_options(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="Spearman of a trained encoder on a file")
    evaluate.add_argument("--work-dir", required=True)
    evaluate.add_argument("--data", required=True, help=DATA_SOURCE_HELP)
    data_options(evaluate)
    add_precision_option(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    encode = commands.add_parser("encode", help="encode a text file (one per line) to an index")
    encode.add_argument("--work-dir", required=True)
    encode.add_argument("--input", required=True)
    encode.add_argument("--output", required=True, help="directory for vectors.npy + texts.json")
    encode.add_argument("--batch-size", type=whole_number(), default=64)
    add_precision_option(encode)
    encode.set_defaults(handler=_encode)

    search = commands.add_parser("search", help="top-k most similar texts of an index")
    search.add_argument("--work-dir", required=True)
    search.add_argument("--index", required=True)
    search.add_argument("--query", required=True, action="append", help="repeatable")
    search.add_argument("-k", type=whole_number(), default=5)
    add_precision_option(search)
    search.set_defaults(handler=_search)


def main(argv=None) -> int:
    from bert4x.cli import main as bert4x_main

    return bert4x_main(["cosent", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
