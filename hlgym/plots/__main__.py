"""``python -m hlgym.plots RUN_DIR [RUN_DIR ...] [--out DIR] [--format png|svg|pdf] [--unit distance|bytes]``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hlgym.plots.figures import UNITS
from hlgym.plots.rundir import FORMATS, plot_runs


def main(argv: list[str] | None = None) -> list[Path]:
    """Draw every figure the run folders support; several folders are overlaid."""
    parser = argparse.ArgumentParser(prog="python -m hlgym.plots", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="run folders written by hlgym-train (train_meta.py)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots of the first run)")
    parser.add_argument("--format", default="png", choices=FORMATS, help="file format")
    parser.add_argument("--unit", default="distance", choices=UNITS, help="cost in distance units or bytes sent")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.runs[0]) / "plots"
    try:
        files = plot_runs(args.runs, out, args.format, args.unit)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    for f in files:
        print(f)
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
