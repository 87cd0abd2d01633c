"""The backbone options every task's command line shares, defaulting to the embedded model."""

from __future__ import annotations

import json


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


def build_backbone(settings, tokenizer, maxlen: int, load_checkpoint: bool = True, **options):
    """The task's backbone from its settings (``config``, ``checkpoint``, ``model``,
    ``keep_tokens``), checked against what the task will feed it.

    A vocabulary larger than the token table, or texts longer than the position table, would
    otherwise fail only at predict time inside the graph, or (on JAX) be clamped silently.
    ``options`` go to :func:`~bert4x.build_transformer_model` (``application``, heads...).
    The tasks' losses weigh positions themselves, so the backbone carries no Keras padding mask
    (which Keras would apply to a compiled loss a second time).
    """
    from bert4x import build_transformer_model

    keep_tokens = None
    if settings.keep_tokens:
        with open(settings.keep_tokens, encoding="utf-8") as handle:
            keep_tokens = json.load(handle)
    backbone = build_transformer_model(
        settings.config, settings.checkpoint if load_checkpoint else None, model=settings.model,
        keep_tokens=keep_tokens, padding_mask=False, **options)
    token_table = backbone.get_layer("Embedding-Token").input_dim
    if tokenizer.vocab_size > token_table:
        raise ValueError(
            f"{settings.vocab} has {tokenizer.vocab_size} tokens but the model's token table has "
            f"{token_table} rows (vocab_size of {settings.config}, or the --keep-tokens list): "
            "give the vocabulary the model was trained with")
    positions = {layer.name: layer for layer in backbone.layers}.get("Embedding-Position")
    if positions is not None and maxlen > positions.input_dim:
        raise ValueError(f"maxlen {maxlen} is longer than the model's position table "
                         f"(max_position_embeddings={positions.input_dim} in {settings.config})")
    return backbone
