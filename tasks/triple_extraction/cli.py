"""``bert4x triples train|evaluate|predict`` (also ``python -m tasks.triple_extraction.cli``).

    bert4x triples train --train train.json --dev dev.json --schema schema.json \\
        --kind gplinker --work-dir runs/triples                  (embedded model)
    bert4x triples evaluate --work-dir runs/triples --data dev.json
    bert4x triples predict --work-dir runs/triples --input texts.txt --output spo.json

``predict`` reads plain text lines or DuIE JSON lines (their ``text``) and writes DuIE lines.
"""

from __future__ import annotations

import json
import sys

from bert4x.arguments import (DATA_SOURCE_HELP, add_column_option, add_optimizer_option,
                              add_precision_option, positive_number, whole_number)
from tasks.model_options import add_model_options, resolve_model_options
from tasks.triple_extraction.models import KINDS


def _examples(path, schema, args, require_triples=True):
    from tasks.triple_extraction.data import read_duie

    result = read_duie(path, schema, require_triples=require_triples,
                       on_error=getattr(args, "on_error", "raise"), columns=dict(args.columns))
    if result.skipped:
        print(result.summary(), file=sys.stderr)
    return result.examples


def _train(args):
    from tasks.triple_extraction.data import read_schema
    from tasks.triple_extraction.task import Settings, train_extractor

    settings = Settings(**resolve_model_options(args), schema=args.schema, kind=args.kind,
                        maxlen=args.maxlen, head_size=args.head_size)
    schema = read_schema(args.schema)
    extractor = train_extractor(settings, _examples(args.train, schema, args),
                                _examples(args.dev, schema, args),
                                args.work_dir, epochs=args.epochs, batch_size=args.batch_size,
                                learning_rate=args.learning_rate, seed=args.seed,
                                optimizer=args.optimizer, precision=args.precision)
    print(json.dumps(extractor.evaluate(_examples(args.dev, schema, args))["all"], indent=1))
    return 0


def _evaluate(args):
    from tasks.triple_extraction.metrics import format_scores
    from tasks.triple_extraction.task import load_trained

    extractor = load_trained(args.work_dir, args.precision)
    print(format_scores(extractor.evaluate(_examples(args.data, extractor.schema, args))))
    return 0


def _predict(args):
    from bert4x.training import is_table_source, read_text_lines
    from tasks.triple_extraction.data import write_duie
    from tasks.triple_extraction.task import load_trained

    extractor = load_trained(args.work_dir, args.precision)
    if args.input.endswith((".json", ".jsonl")) or is_table_source(args.input):
        texts = [e.text for e in _examples(args.input, extractor.schema, args,
                                           require_triples=False)]
    else:
        # Blank lines stay (with no triples), so output line i answers input line i.
        texts = read_text_lines(args.input, keep_blank=True)
    written = [i for i, text in enumerate(texts) if text.strip()]
    found = dict(zip(written, extractor.extract([texts[i] for i in written])))
    write_duie(args.output, texts, [found.get(i, []) for i in range(len(texts))],
               extractor.schema)
    print(f"wrote {len(texts)} texts' triples to {args.output}")
    return 0


def add_commands(subparsers) -> None:
    """Register ``triples`` and its sub-commands on the ``bert4x`` parser."""
    triples = subparsers.add_parser("triples", help="triple (relation) extraction")
    commands = triples.add_subparsers(dest="triples_command", required=True)

    train = commands.add_parser("train", help="train GPLinker or the pointer + CLN model")
    add_model_options(train)
    train.add_argument("--train", required=True, help=f"DuIE JSON lines, or {DATA_SOURCE_HELP}")
    train.add_argument("--dev", required=True, help=DATA_SOURCE_HELP)
    train.add_argument("--schema", required=True, help="DuIE schema JSON lines")
    train.add_argument("--kind", choices=KINDS, default="gplinker")
    train.add_argument("--work-dir", required=True)
    train.add_argument("--epochs", type=whole_number(), default=20)
    train.add_argument("--batch-size", type=whole_number(), default=16)
    train.add_argument("--learning-rate", type=positive_number, default=1e-4)
    add_optimizer_option(train)
    add_precision_option(train, training=True)
    train.add_argument("--maxlen", type=whole_number(3), default=128)
    train.add_argument("--head-size", type=whole_number(), default=64)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    add_column_option(train, "text, spo_list")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="P / R / F1 overall and per predicate")
    evaluate.add_argument("--work-dir", required=True)
    evaluate.add_argument("--data", required=True, help=DATA_SOURCE_HELP)
    add_column_option(evaluate, "text, spo_list")
    add_precision_option(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="extract triples, write DuIE JSON lines")
    predict.add_argument("--work-dir", required=True)
    predict.add_argument("--input", required=True,
                         help=f"text lines, or DuIE JSON lines, or {DATA_SOURCE_HELP}")
    predict.add_argument("--output", required=True)
    add_column_option(predict, "text")
    add_precision_option(predict)
    predict.set_defaults(handler=_predict)


def main(argv=None) -> int:
    from bert4x.cli import main as bert4x_main

    return bert4x_main(["triples", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
