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
