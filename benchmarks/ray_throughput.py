"""Throughput of the local engine against ``--engine ray`` with 1 and 2 workers on the same photos.

Usage::

    python benchmarks/ray_throughput.py PHOTOS... -o OUT [--preset quick] [--features patches|vgg16]
        [--vgg-weights PATH] [--workers 1,2] [-o OUT]

Each engine refines every photo into its own folder under OUT (``local``, ``ray1``, ``ray2``),
from scratch. Printed per engine: wall time, photos per minute, and the scheduling overhead per
photo: (wall x workers - the sum of the photos' own seconds) / photos, i.e. what a photo costs
beyond its own work (Ray's start, the actors' model loading, the queueing), the local engine's
model loading counted the same way. A local Ray is started for each Ray run with as many CPUs as
the machine has; each worker takes ``--cpus`` of them (torch threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--features", default="patches")
    ap.add_argument("--vgg-weights", type=Path)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs (torch threads) per Ray worker")
    a = ap.parse_args(argv)

    import torch

    from facerefiner.batch import run_batch
    from facerefiner.features import get_extractor
    from facerefiner.heads import get_head
    from facerefiner.pipeline import RefineOptions, expand_inputs, refine_photo
    from facerefiner.presets import preset
    from facerefiner.ray_batch import RefineRecipe, run_batch_ray

    photos = expand_inputs(a.photos)
    cfg = preset(a.preset, features=a.features)
    opts = RefineOptions(size=cfg.size, device="cpu")
    rows = []
    shutil.rmtree(a.out, ignore_errors=True)

    out = a.out / "local"
    t0 = time.perf_counter()
    ext = get_extractor(cfg.features, weights=a.vgg_weights, device="cpu")
    layout = get_head(opts.head).layout()
    res = run_batch(photos, out, lambda p, stage: refine_photo(p, out, opts, cfg, layout=layout, extractor=ext),
                    command="refine")
    wall = time.perf_counter() - t0
    rows.append(_row("local", 1, torch.get_num_threads(), res, wall))

    for n in (int(x) for x in a.workers.split(",")):
        out = a.out / f"ray{n}"
        recipe = RefineRecipe(opts=opts, config=cfg, out=out, vgg_weights=a.vgg_weights)
        t0 = time.perf_counter()
        res = run_batch_ray(photos, out, recipe, workers=n, cpus=a.cpus, command="refine",
                            ray_init={"num_cpus": os.cpu_count()})
        wall = time.perf_counter() - t0
        rows.append(_row(f"ray, {n} worker{'s' if n > 1 else ''}", n, a.cpus, res, wall))

    print(f"{len(photos)} photos, preset {a.preset}, features {cfg.features}, {os.cpu_count()} CPUs")
    print(f"{'engine':<18}{'threads/worker':>15}{'wall s':>9}{'photos/min':>12}{'overhead s/photo':>18}{'done':>6}")
    for r in rows:
        print(f"{r['engine']:<18}{r['threads']:>15}{r['wall_s']:>9.1f}{r['photos_per_min']:>12.2f}"
              f"{r['overhead_s_per_photo']:>18.2f}{r['done']:>6}")
    (a.out / "throughput.json").write_text(json.dumps({"photos": [str(p) for p in photos], "preset": a.preset,
                                                       "features": cfg.features, "cpus": os.cpu_count(),
                                                       "rows": rows}, indent=2))
    return 0 if all(r["done"] == len(photos) for r in rows) else 2


def _row(engine: str, workers: int, threads: float, res, wall: float) -> dict:
    own = sum(r.seconds for r in res.records)
    n = max(1, len(res.records))
    return {"engine": engine, "workers": workers, "threads": threads, "wall_s": round(wall, 2),
            "photos_per_min": round(60 * len(res.records) / wall, 3),
            "overhead_s_per_photo": round((wall * workers - own) / n, 3),
            "done": res.count("done")}


if __name__ == "__main__":
    sys.exit(main())
