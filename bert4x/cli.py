"""The ``bert4x`` command line.

    bert4x demo                          each task on the embedded model, against its baselines
    bert4x selfcheck                     round-trip every model family through both checkpoint formats
    bert4x models                        the checkpoints bert4x loads, with their settings
    bert4x inspect CHECKPOINT            format, likely architecture, names and shapes
    bert4x convert --config C --checkpoint P --model roformer --to-hf DIR
    bert4x enlarge --config C --checkpoint P --model roformer --width 2 --layers 8 --to-hf DIR
    bert4x export --work-dir RUN --output DIR       a task run as SavedModel + ONNX
    bert4x export --model M.keras --vocab V --maxlen N --output DIR
    bert4x serve --work-dir RUN [--work-dir RUN2 ...] [--index DIR]   HTTP JSON + a web page
    bert4x serve --model M.keras --vocab V                          a model as POST /predict
    bert4x cosent train|evaluate|encode|search ...   CoSENT sentence vectors (tasks/cosent)
    bert4x kgclue build-kb|train|evaluate|predict ... KgCLUE QA (tasks/kgclue)
    bert4x triples train|evaluate|predict ...         triple extraction (tasks/triple_extraction)
"""

from __future__ import annotations

import argparse
import os
import sys


def _demo(args):
    from pretrained.registry import model_directory
    from tasks.demo import run_demo

    if args.model and not args.model_dir:
        raise SystemExit("bert4x demo: --model names the family of --model-dir's model")
    try:
        model = model_directory(args.model_dir, args.model) if args.model_dir else None
    except (OSError, ValueError) as error:
        raise SystemExit(f"bert4x demo: {error}")
    run_demo(args.work_dir, args.tasks, model=model)
    print(f"table, plot and runs in {os.path.abspath(args.work_dir)}")
    return 0


def _selfcheck(args):
    from bert4x.selfcheck import run_selfcheck

    rows = run_selfcheck()
    failed = [row for row in rows if row[2] is not None and row[2] > 1e-4]
    if failed:
        print(f"FAILED: {len(failed)} round trip(s) differ by more than 1e-4", file=sys.stderr)
        return 1
    return 0


def _models(args):
    from pretrained.registry import table

    print(table())
    return 0


def _inspect(args):
    from bert4x.checkpoints import guess_architecture, open_checkpoint

    checkpoint = open_checkpoint(args.checkpoint)
    names = checkpoint.names
    print(f"{checkpoint.path}\n  format: {checkpoint.fmt}\n  "
          f"looks like: {guess_architecture(checkpoint) or 'unknown'}\n  entries: {len(names)}")
    shown = names if args.all else names[:40]
    for name in shown:
        print(f"  {name:70s} {checkpoint.shapes[name]}")
    if len(shown) < len(names):
        print(f"  ... {len(names) - len(shown)} more (--all to list them)")
    return 0


def _load_for_writing(args):
    """The checkpoint of ``convert``/``enlarge``, after checking that it will be written."""
    from bert4x.models import build_transformer_model

    if not (args.to_hf or args.to_google):
        raise SystemExit(f"bert4x {args.command}: give --to-hf DIR and/or --to-google PREFIX")
    built = build_transformer_model(
        args.config, args.checkpoint, model=args.model, with_mlm=args.with_mlm,
        with_pool=args.with_pool, return_keras_model=False)
    print(built.load_report)
    return built


def _write(built, args):
    """Write ``built`` where --to-hf / --to-google say; the vocabulary files of a checkpoint
    directory go along, so the output loads as that directory did."""
    import shutil

    if args.to_hf:
        print("wrote", built.export_huggingface(args.to_hf))
        for name in ("vocab.txt", "keep_tokens.json"):
            source = os.path.join(args.checkpoint, name)
            if os.path.isdir(args.checkpoint) and os.path.exists(source):
                shutil.copy(source, os.path.join(args.to_hf, name))
    if args.to_google:
        print("wrote", built.save_google_checkpoint(args.to_google))
    return 0


def _convert(args):
    return _write(_load_for_writing(args), args)


def _enlarge(args):
    from bert4x.models.enlarge import enlarge_model

    built = _load_for_writing(args)
    bigger = enlarge_model(built, width=args.width, layers=args.layers)
    config = bigger.config
    print(f"enlarged {built.config.num_hidden_layers}×{built.config.hidden_size} to "
          f"{config.num_hidden_layers}×{config.hidden_size} ({config.num_attention_heads} heads, "
          f"intermediate {config.intermediate_size}); the outputs are the original's")
    return _write(bigger, args)


def _export(args):
    from bert4x.export import export_model

    if (args.work_dir is None) == (args.model is None):
        raise SystemExit("bert4x export: give --work-dir RUN (a task run) or --model FILE")
    if args.work_dir is not None and (args.vocab or args.maxlen):
        raise SystemExit("bert4x export: --vocab and --maxlen go with --model; a task run "
                         "brings its own")
    if (args.vocab is None) != (args.maxlen is None):
        raise SystemExit("bert4x export: the raw-text signature needs both --vocab and --maxlen")
    if args.work_dir is not None:
        from tasks.exports import export_run

        written = export_run(args.work_dir, args.output, args.format)
    else:
        import keras

        from bert4x.tokenizers import Tokenizer

        model = keras.saving.load_model(args.model, compile=False)
        tokenizer = Tokenizer(args.vocab) if args.vocab else None
        written = export_model(model, args.output, args.format, tokenizer=tokenizer,
                               maxlen=args.maxlen)
    for kind, path in written.items():
        print(f"{kind:12s} {path}")
    return 0


def _serve(args):
    try:
        import uvicorn
    except ImportError:
        raise SystemExit('bert4x serve needs the serving extra: pip install -e ".[serve]"')
    from bert4x.serving import Limits
    from tasks.serving import build_app

    limits = Limits(max_body_bytes=args.max_body_bytes, max_items=args.max_items,
                    max_text_chars=args.max_text_chars, timeout_seconds=args.timeout,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    if bool(args.model) != bool(args.vocab):
        raise SystemExit("bert4x serve: --model and --vocab go together")
    models = [(args.model, args.vocab, args.maxlen)] if args.model else []
    app = build_app(args.work_dir or [], limits, index_dir=args.index, beam_size=args.beam_size,
                    models=models, precision=args.precision)
    print(f"bert4x serve: http://{args.host}:{args.port}/ (GET /health lists the endpoints)",
          flush=True)
    # uvicorn finishes in-flight requests on SIGINT/SIGTERM (up to --graceful-seconds), then
    # the app drains its batch queues.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=args.graceful_seconds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bert4x.arguments import add_precision_option, positive_number, whole_number
    from bert4x.export import DEFAULT_FORMATS, FORMATS
    from bert4x.models import MODELS

    parser = argparse.ArgumentParser(prog="bert4x", description="bert4x: Chinese NLP on Keras 3")
    commands = parser.add_subparsers(dest="command", required=True)

    from tasks.demo import TASKS

    demo = commands.add_parser(
        "demo", help="fine-tune the embedded model on each task and score it against baselines")
    demo.add_argument("--work-dir", default="bert4x_demo",
                      help="where the runs, results.md and results.png go (default %(default)s)")
    demo.add_argument("--tasks", nargs="+", choices=[t.name for t in TASKS],
                      default=[t.name for t in TASKS], help="which tasks (default all)")
    demo.add_argument("--model-dir", help="fine-tune this model directory instead (as "
                      "pretrain --export, bert4x enlarge or convert --to-hf write it), to "
                      "compare models on the same recipes")
    demo.add_argument("--model", choices=sorted(MODELS),
                      help="its family (default: the model_type of its config.json)")
    demo.set_defaults(handler=_demo)

    selfcheck = commands.add_parser(
        "selfcheck", help="round-trip each model family through Google and HF checkpoints")
    selfcheck.set_defaults(handler=_selfcheck)

    models = commands.add_parser("models", help="list the checkpoints bert4x knows how to load")
    models.set_defaults(handler=_models)

    inspect = commands.add_parser("inspect", help="list a checkpoint's weights")
    inspect.add_argument("checkpoint")
    inspect.add_argument("--all", action="store_true", help="list every entry")
    inspect.set_defaults(handler=_inspect)

    convert = commands.add_parser("convert", help="load a checkpoint, write it in other formats")
    enlarge = commands.add_parser(
        "enlarge", help="grow a trained model wider and deeper, its outputs unchanged")
    for command in (convert, enlarge):
        command.add_argument("--config", required=True, help="BERT-style config.json")
        command.add_argument("--checkpoint", required=True, help="Google TF or HF checkpoint")
        command.add_argument("--model", choices=sorted(MODELS), default="bert")
        command.add_argument("--with-mlm", action="store_true", help="keep the MLM head")
        command.add_argument("--with-pool", action="store_true", help="keep the pooler")
        command.add_argument("--to-hf", metavar="DIR",
                             help="write model.safetensors + config.json (and the vocabulary "
                                  "files of a checkpoint directory)")
        command.add_argument("--to-google", metavar="PREFIX",
                             help="write a Google TF checkpoint")
    convert.set_defaults(handler=_convert)
    enlarge.add_argument("--width", type=whole_number(), default=1,
                         help="multiply hidden size, heads and FFN width by this")
    enlarge.add_argument("--layers", type=whole_number(),
                         help="blocks of the result (default: as many as now)")
    enlarge.set_defaults(handler=_enlarge)

    export = commands.add_parser(
        "export", help="write a TF SavedModel and an ONNX file for serving outside Keras")
    export.add_argument("--work-dir", help="a finished task run (cosent, kgclue, triples)")
    export.add_argument("--model", help="a .keras model file instead of a task run")
    export.add_argument("--vocab", help="with --model: vocab.txt, for the raw-text signature")
    export.add_argument("--maxlen", type=whole_number(3),
                        help="with --model and --vocab: tokens per text in the raw-text signature")
    export.add_argument("--output", required=True, help="directory for the exported files")
    export.add_argument("--format", nargs="+", choices=FORMATS, default=list(DEFAULT_FORMATS),
                        help="onnx_int8: also model.int8.onnx, ONNX Runtime's dynamic int8 "
                             "quantization of model.onnx (about 2x its speed on a VNNI CPU)")
    export.set_defaults(handler=_export)

    serve = commands.add_parser("serve", help="serve task runs over HTTP, with a web page")
    serve.add_argument("--work-dir", action="append",
                       help="a finished task run; repeat for several tasks")
    serve.add_argument("--model", help="a .keras model on token and segment ids, as /predict")
    serve.add_argument("--vocab", help="with --model: its vocab.txt")
    serve.add_argument("--maxlen", type=whole_number(3), default=512,
                       help="with --model: tokens per text (default %(default)s)")
    serve.add_argument("--index", help="a CoSENT vector index (bert4x cosent encode) for /search")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=whole_number(0), default=8000)
    serve.add_argument("--max-batch", type=whole_number(), default=32,
                       help="most texts per model call (default %(default)s)")
    serve.add_argument("--batch-wait-ms", type=positive_number, default=5.0,
                       help="how long a batch waits for more texts (default %(default)s)")
    serve.add_argument("--max-items", type=whole_number(), default=64,
                       help="most texts per request (default %(default)s)")
    serve.add_argument("--max-text-chars", type=whole_number(), default=1000)
    serve.add_argument("--max-body-bytes", type=whole_number(), default=64 * 1024)
    serve.add_argument("--timeout", type=positive_number, default=30.0,
                       help="seconds per request before a 504 (default %(default)s)")
    serve.add_argument("--beam-size", type=whole_number(), default=3, help="KgCLUE beam")
    add_precision_option(serve)  # the task runs' models; a --model file runs as saved
    serve.add_argument("--graceful-seconds", type=positive_number, default=30.0,
                       help="on SIGTERM, how long in-flight requests may still take")
    serve.add_argument("--log-level", default="warning",
                       choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=_serve)

    from tasks.cosent.cli import add_commands as add_cosent_commands

    from tasks.kgclue.cli import add_commands as add_kgclue_commands

    from tasks.triple_extraction.cli import add_commands as add_triples_commands

    add_cosent_commands(commands)
    add_kgclue_commands(commands)
    add_triples_commands(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:
        # ConfigError, CheckpointError, DataError, argument checks, missing or unwritable files
        # (a full disk, say): the message says it all.
        print(f"bert4x {args.command}: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from bert4x.input_checks import failed_check_message

        message = failed_check_message(error)
        if message is None:
            raise
        print(f"bert4x {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
