"""Quality against time per face for several runs (presets and variants) in one picture.

    python benchmarks/plot_variants.py -o variants.png LABEL=SOURCE ... [--time LABEL=SECONDS] [--photos a,b]

SOURCE is either ``OUT/results.json[:METHOD]`` of ``python benchmarks/bench.py`` (default method
``facerefiner-vgg16``) or a folder of ``facerefiner refine`` outputs on which ``facerefiner eval``
was run (each face folder's report.json "metrics"; time = its optimise + setup timings). Medians are
taken over the photos that every run has (or ``--photos``), printed, and plotted with
:func:`bench.metrics_plot` (visible PSNR, identity, seam, completion PSNR against the
median time per face). ``--time LABEL=SECONDS`` replaces a run's time by one measured separately
(e.g. on an idle machine when the quality runs shared the CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench import flat_metrics, metrics_plot

KEYS = ("psnr", "ssim", "id", "id+30", "id-30", "seam", "fill_psnr", "fill_ssim", "time_s", "rss_mb")


def load(source: str) -> dict[str, dict[str, float | None]]:
    """{photo: {metric key: value}} of one run."""
    path, _, method = source.partition(":")
    p = Path(path)
    if p.is_file():
        doc = json.loads(p.read_text())
        method = method or "facerefiner-vgg16"
        return {r["photo"]: r["values"] for r in doc["runs"] if r["method"] == method and r["status"] == "ok"}
    out = {}
    for rep in sorted(p.glob("*/report.json")):
        d = json.loads(rep.read_text())
        if "metrics" not in d:
            continue
        v = flat_metrics(d["metrics"])
        t = d.get("timings_s", {})
        v["time_s"] = sum(float(x) for k, x in t.items() if k != "views") or None
        out[rep.parent.name] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=SOURCE")
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--time", action="append", default=[], metavar="LABEL=SECONDS")
    ap.add_argument("--photos", help="comma-separated photo stems (default: those every run has)")
    a = ap.parse_args()
    runs = {}
    for item in a.runs:
        label, _, src = item.partition("=")
        runs[label] = load(src)
    photos = a.photos.split(",") if a.photos else sorted(set.intersection(*(set(r) for r in runs.values())))
    if not photos:
        raise SystemExit("no photo is common to all runs")
    print(f"photos ({len(photos)}): {', '.join(photos)}")
    summary = {}
    for label, r in runs.items():
        missing = [p for p in photos if p not in r]
        if missing:
            raise SystemExit(f"{label}: no result for {', '.join(missing)}")
        summary[label] = {}
        for k in KEYS:
            vals = [r[p].get(k) for p in photos if r[p].get(k) is not None]
            summary[label][k] = {"median": statistics.median(vals) if vals else None, "n": len(vals)}
    for item in a.time:
        label, _, sec = item.partition("=")
        summary[label]["time_s"]["median"] = float(sec)
    for label, s in summary.items():
        print(f"{label:24s} " + "  ".join(f"{k} {s[k]['median']:.4g}" for k in KEYS if s[k]["median"] is not None))
    metrics_plot(summary, list(summary)).save(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
