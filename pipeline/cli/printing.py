"""How the commands write to the terminal: notes on stderr, figures in tables."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """A note on stderr, at once: stdout keeps the results (and the JSON line) for a pipe."""
    print(message, file=sys.stderr, flush=True)


def accuracy(value: float | None) -> str:
    """An accuracy in a table column: four decimals, or ``-`` where there is none."""
    return "-" if absent(value) else f"{value:.4f}"


def absent(value) -> bool:
    """None, or pandas' NaN for it in a column of numbers."""
    return value is None or value != value

