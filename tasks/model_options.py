"""The backbone options every task's command line shares, defaulting to the embedded model."""

from __future__ import annotations


def add_model_options(parser, default_family: str = "roformer") -> None:
    from bert4x.models import MODELS

    group = parser.add_argument_group("backbone (default: the embedded roformer_zh_tiny)")
    group.add_argument("--config", help="BERT-style config.json")
    group.add_argument("--checkpoint", help="Google TF or HF checkpoint")
    group.add_argument("--vocab", help="vocab.txt")
    group.add_argument("--model", choices=sorted(MODELS),
                       help=f"model family (default {default_family})")
    group.add_argument("--keep-tokens", help="JSON list of vocabulary ids to keep")
    group.add_argument("--random-init", action="store_true",
                       help="same architecture, random weights (the baseline to beat)")


def resolve_model_options(args, default_family: str = "roformer") -> dict:
    """``config``, ``checkpoint``, ``vocab``, ``model``, ``keep_tokens`` for the task settings."""
    if args.config is None:
        if args.checkpoint or args.vocab:
            raise ValueError("--checkpoint/--vocab need --config too (or none of them for the "
                             "embedded default model)")
        from pretrained.registry import default_model

        options = default_model()
    else:
        if args.vocab is None:
            raise ValueError("--config needs --vocab")
        options = {"config": args.config, "checkpoint": args.checkpoint, "vocab": args.vocab,
                   "model": default_family}
    if args.model:
        options["model"] = args.model
    if args.random_init:
        options["checkpoint"] = None
    return {**options, "keep_tokens": args.keep_tokens}
