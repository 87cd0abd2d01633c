"""``bert4x kgclue build-kb|train|evaluate|predict`` (also ``python -m tasks.kgclue.cli``).

    bert4x kgclue build-kb Knowledge.txt --output kb_index           (embedded model's vocab)
    bert4x kgclue build-kb train.json dev.json test_public.json --from-answers --output kb
    bert4x kgclue train --kb kb --train train.json --dev dev.json --work-dir runs/kgclue
    bert4x kgclue train --config C --checkpoint P --vocab V --kb kb ...   (your checkpoint)
    bert4x kgclue evaluate --work-dir runs/kgclue --data dev.json [--unconstrained]
    bert4x kgclue predict --work-dir runs/kgclue --input test.json --output kgclue_predict.json
"""

from __future__ import annotations

import json
import sys

from bert4x.arguments import (DATA_SOURCE_HELP, add_column_option, add_optimizer_option,
                              add_precision_option, positive_number, whole_number)
from tasks.model_options import add_model_options, resolve_model_options


def _questions(path, args):
    from tasks.kgclue.data import read_questions

    result = read_questions(path, on_error=getattr(args, "on_error", "raise"),
                            columns=dict(args.columns))
    if result.skipped:
        print(result.summary(), file=sys.stderr)
    return result.examples


def _build_kb(args):
    from bert4x.tokenizers import Tokenizer
    from tasks.kgclue.data import answer_triples
    from tasks.kgclue.kb import KnowledgeBase

    if args.vocab is None:
        from pretrained.registry import default_model

        args.vocab = default_model()["vocab"]
    tokenizer = Tokenizer(args.vocab)
    if args.from_answers:
        questions = [q for path in args.files for q in _questions(path, args)]
        kb, skipped = KnowledgeBase.build(answer_triples(questions), tokenizer), []
    else:
        if len(args.files) != 1:
            raise ValueError("build-kb reads one KB file (or QA files with --from-answers)")
        kb, skipped = KnowledgeBase.from_file(args.files[0], tokenizer, on_error=args.on_error,
                                              columns=dict(args.columns))
    kb.save(args.output)
    print(f"indexed {len(kb)} keys into {args.output}")
    if skipped:
        line, reason = skipped[0]
        print(f"skipped {len(skipped)} malformed lines (first: line {line}: {reason})",
              file=sys.stderr)
    return 0


def _train(args):
    from tasks.kgclue.task import Settings, train_seq2seq

    settings = Settings(**resolve_model_options(args), kb=args.kb,
                        question_maxlen=args.question_maxlen, key_maxlen=args.key_maxlen)
    train_seq2seq(settings, _questions(args.train, args), _questions(args.dev, args),
                  args.work_dir, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, seed=args.seed, dev_limit=args.dev_limit,
                  beam_size=args.beam_size, optimizer=args.optimizer,
                  precision=args.precision)
    return 0


def _answerer(args):
    from tasks.kgclue.task import Answerer, load_trained

    settings, model, tokenizer, kb = load_trained(args.work_dir, args.precision)
    return Answerer(model, tokenizer, kb, settings, beam_size=args.beam_size,
                    constrained=not args.unconstrained, lookahead=not args.no_lookahead)


def _evaluate(args):
    from tasks.kgclue.task import evaluate

    questions = _questions(args.data, args)[:args.limit]
    results = evaluate(_answerer(args), questions)
    print(json.dumps(results, indent=1))
    if results["gold_missing_from_kb"]:
        print(f"note: {results['gold_missing_from_kb']} gold triples are not in the KB; those "
              "questions cannot be answered exactly", file=sys.stderr)
    return 0


def _predict(args):
    from tasks.kgclue.task import predict

    count = predict(_answerer(args), _questions(args.input, args), args.output)
    print(f"wrote {count} answers to {args.output}")
    return 0


def add_commands(subparsers) -> None:
    """Register ``kgclue`` and its sub-commands on the ``bert4x`` parser."""
    kgclue = subparsers.add_parser("kgclue", help="KgCLUE question answering")
    commands = kgclue.add_subparsers(dest="kgclue_command", required=True)

    build = commands.add_parser("build-kb", help="index a KB file as a prefix tree")
    build.add_argument("files", nargs="+", help="KB file (subject\\tpredicate\\tobject), or "
                                                "QA files with --from-answers")
    build.add_argument("--from-answers", action="store_true",
                       help="index the triples of the QA files' answers (a sub-KB)")
    build.add_argument("--vocab", help="the task model's vocab.txt (default: the embedded "
                                       "model's)")
    build.add_argument("--output", required=True, help="directory for the index")
    build.add_argument("--on-error", choices=["raise", "skip"], default="skip")
    add_column_option(build, "subject, predicate, object; with --from-answers question, answer")
    build.set_defaults(handler=_build_kb)

    train = commands.add_parser("train", help="fine-tune a UniLM seq2seq model")
    add_model_options(train)
    train.add_argument("--kb", required=True, help="index directory from build-kb")
    train.add_argument("--train", required=True, help=DATA_SOURCE_HELP)
    train.add_argument("--dev", required=True, help=DATA_SOURCE_HELP)
    add_column_option(train, "question, answer, id")
    train.add_argument("--work-dir", required=True)
    train.add_argument("--epochs", type=whole_number(), default=3)
    train.add_argument("--batch-size", type=whole_number(), default=32)
    train.add_argument("--learning-rate", type=positive_number, default=1e-4)
    add_optimizer_option(train)
    add_precision_option(train, training=True)
    train.add_argument("--question-maxlen", type=whole_number(3), default=64)
    train.add_argument("--key-maxlen", type=whole_number(3), default=48)
    train.add_argument("--dev-limit", type=whole_number(0), default=200,
                       help="dev questions decoded after each epoch to pick the best weights")
    train.add_argument("--beam-size", type=whole_number(), default=3)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train)

    for name, handler, text in (("evaluate", _evaluate, "EM / F1 / score on a QA file"),
                                ("predict", _predict, "answer a QA file (submission format)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--work-dir", required=True)
        command.add_argument("--beam-size", type=whole_number(), default=3)
        command.add_argument("--unconstrained", action="store_true",
                             help="decode without the KB tree (ablation)")
        command.add_argument("--no-lookahead", action="store_true",
                             help="constrained decoding without the LCS look-ahead")
        if name == "evaluate":
            command.add_argument("--data", required=True, help=DATA_SOURCE_HELP)
            command.add_argument("--limit", type=whole_number(), help="first N questions only")
        else:
            command.add_argument("--input", required=True, help=DATA_SOURCE_HELP)
            command.add_argument("--output", required=True)
        add_column_option(command, "question, answer, id")
        add_precision_option(command)
        command.set_defaults(handler=handler)


def main(argv=None) -> int:
    from bert4x.cli import main as bert4x_main

    return bert4x_main(["kgclue", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
