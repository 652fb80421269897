"""The console scripts' entries: each parses its command line before it imports what runs it,
so ``--help`` and a malformed option come back without loading a trainer."""

from __future__ import annotations

import sys


def train(argv: list[str] | None = None) -> None:
    """``hlgym-train``: :mod:`hlgym.options` parses (``--help`` and a malformed option exit
    here), then :func:`hlgym.train.main` runs."""
    from hlgym import options

    argv = sys.argv[1:] if argv is None else argv
    options.build_parser().parse_args(argv)
    from hlgym import train as training

    training.main(argv)
