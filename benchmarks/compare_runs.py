"""Side-by-side metrics of single bench runs (one photo, several methods or benchmark folders).

Reads the ``metrics`` block that ``python benchmarks/bench.py`` (or ``facerefiner eval``) wrote
into each run folder's ``report.json`` and prints one Markdown row per folder. Useful where pairs
come from different bench folders, e.g. the slow ``paper`` method run on its own:

    python benchmarks/compare_runs.py paper=benchE/runs/paper/3ddfa_emma_multi \\
        default=benchG/runs/facerefiner-vgg16/3ddfa_emma_multi
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import (  # the bench's columns (seam: the local ratio)
    METRICS,
    flat_metrics,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=FOLDER (a bench run folder with report.json)")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.runs:
        label, sep, folder = spec.partition("=")
        if not sep:
            print(f"error: {spec}: expected LABEL=FOLDER", file=sys.stderr)
            return 1
        rep = Path(folder) / "report.json"
        try:
            metrics = json.loads(rep.read_text())["metrics"]
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {rep}: no metrics ({type(e).__name__}: {e})", file=sys.stderr)
            return 1
        flat = flat_metrics(metrics)
        cells = ["-" if flat[m.key] is None else format(flat[m.key], m.fmt) for m in METRICS]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    print("| run | " + " | ".join(m.label for m in METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
