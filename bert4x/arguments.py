"""Argument types for the command lines: a bad number is refused by the option that took it.

Without them ``--epochs 0`` surfaced as a schedule error about ``warmup_steps`` and a negative
``--learning-rate`` trained uphill without a word.
"""

from __future__ import annotations

import argparse
import math


def whole_number(at_least: int = 1):
    """An ``argparse`` type accepting integers ``>= at_least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < at_least:
            raise argparse.ArgumentTypeError(f"must be at least {at_least}, got {value}")
        return value

    parse.__name__ = f"whole number >= {at_least}"
    return parse


def positive_number(text: str) -> float:
    """An ``argparse`` type accepting finite floats ``> 0`` (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def add_optimizer_option(parser) -> None:
    """``--optimizer adamw|amos`` on a training command (bert4x.training.build_optimizer)."""
    parser.add_argument("--optimizer", choices=("adamw", "amos"), default="adamw",
                        help="amos sets each weight's decay and step from its expected scale; "
                             "with it --learning-rate is Amos' global rate, whose ratio to "
                             "sqrt(hidden size) is the kernels' first step (0.008 for a 256-wide "
                             "model starts them as AdamW at 5e-4)")


def add_precision_option(parser, training: bool = False) -> None:
    """``--precision`` on a command that runs a trained model (fp32, bf16 or int8), or on one
    that trains (fp32 or bf16) (:mod:`bert4x.models.precision`)."""
    from bert4x.models.precision import PRECISIONS, TRAINING_PRECISIONS

    if training:
        parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default="fp32",
                            help="bf16: mixed-precision training, float32 weights and loss "
                                 "with bfloat16 matmuls (load the run at any precision)")
        return
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: bfloat16 matmuls; int8: int8 kernels, activations "
                             "quantized per row. Logits, norms and softmax stay float32. "
                             "Faster where the CPU has AVX-512 BF16/VNNI (benchmarks/precision.py)")


#: The help of every option that names task data.
DATA_SOURCE_HELP = ("a file, a datasets save_to_disk directory, or files for datasets' loaders "
                    "(json:FILES, csv:FILES, text:FILES, parquet:FILES; .csv/.parquet by suffix)")


def add_column_option(parser, columns: str) -> None:
    """``--columns NAME=COLUMN ...``: which columns of a table hold what the task reads
    (``columns``, for the help), when the table names them otherwise."""
    parser.add_argument("--columns", nargs="+", metavar="NAME=COLUMN", type=_column_pair,
                        default=[], help=f"map the task's columns ({columns}) onto a table's "
                                         "own column names")


def _column_pair(text: str):
    from bert4x.training.tables import parse_column_pair

    try:
        return parse_column_pair(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
