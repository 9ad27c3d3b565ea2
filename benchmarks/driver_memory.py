"""The batch driver's memory and time on a large synthetic batch (issue "scale": the photo list
streams, the driver does not hold every result, the gallery scales).

Usage::

    # 20,000 photos: 19,000 already finished (skipped: their folders exist in OUT), 1,000 that fail
    # at once (not images); the CLI's unwrap run twice (a first run, then a rerun of the same)
    python benchmarks/driver_memory.py many WORK --photos 20000 --failing 1000 [--engine local|ray]
        [--report REPORT.json] [--runs 2]

    # COPIES copies of one real photo, really unwrapped (the records of photos done in this run)
    python benchmarks/driver_memory.py done WORK --photo PHOTO --copies 40 [--size 512] [--count-objects]

``WORK`` is made from scratch (``WORK/in`` the photos, ``WORK/out`` the output root). In ``many``,
each finished folder holds ``report.json`` (``--report``: a copy of that file, e.g. a real refine
report with its loss history; default a small unwrap-like one) and a 64 px ``render.png``, no
``thumb.jpg``: the first run's gallery makes the thumbnails, a rerun finds them.

Each run is ``facerefiner unwrap WORK/in -o WORK/out --size S --occlusion off`` in a child Python
process that imports the package found on ``sys.path`` (``--src DIR`` puts DIR first, e.g. an
older checkout's ``src`` to measure it the same way) and records, for the driver process alone
(the CLI's own process; Ray's raylet and workers are other processes): its resident memory when
the batch starts (after the imports and models), after the 1st, 2nd, 5th, 10th, 20th, 50th, ...
and the last photo's record, and when the summary starts, its peak (VmHWM), the batch's and the
end-of-run files' (summary, gallery) seconds, and the exit code. What the driver keeps per photo
is the growth between the first record and the last; a photo's own working memory (what a real
unwrap needs while it runs) shows in the first record and stays with the process (the allocator
keeps it), so it is not counted as kept. ``--count-objects`` also counts the torch tensors and
numpy arrays alive at each sample (what Python holds, whatever the allocator keeps). Printed as a
table and written to ``WORK/driver_memory.json``. Linux only (``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _live_objects() -> list[float]:
    """[torch tensors alive, their MB, numpy arrays alive, their MB] in this process (after a
    garbage collection; what Python holds, whatever the allocator keeps)."""
    import gc

    import numpy as np
    import torch

    gc.collect()
    objs = gc.get_objects()
    ts = [o for o in objs if isinstance(o, torch.Tensor)]
    arrs = [o for o in objs if isinstance(o, np.ndarray)]
    return [len(ts), round(sum(t.numel() * t.element_size() for t in ts) / 2 ** 20, 1),
            len(arrs), round(sum(a.nbytes for a in arrs) / 2 ** 20, 1)]


def child(result: Path, cli_args: list[str]) -> None:
    """Run ``facerefiner CLI_ARGS`` in this process with the driver's clock and memory recorded
    into ``result`` (JSON) at exit."""
    import atexit

    import facerefiner.cli.common as common

    rec: dict = {"args": cli_args}
    run_photos, finish = common.run_photos, common.finish

    def timed(fn, name: str):
        """``fn`` recording the resident memory when it starts and its wall time under ``name``."""
        def wrapper(*a, **kw):
            rec[f"rss_{name}_start_mb"] = round(_status_mb("VmRSS"), 1)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                rec[f"{name}_s"] = round(time.perf_counter() - t0, 2)
        return wrapper

    # before the verbs bind them
    common.run_photos, common.finish = timed(run_photos, "batch"), timed(finish, "finish")

    # resident memory after the 1st, 2nd, 5th, 10th, 20th, 50th, ... record and the last one: flat
    # after the first photos when nothing per photo is kept beyond its small record
    samples: list[list[float]] = []
    rec["rss_by_records"] = samples
    count = os.environ.get("DRIVER_MEMORY_COUNT_OBJECTS") == "1"
    marks = {m * 10 ** k for k in range(7) for m in (1, 2, 5)}

    def sampled(engine):
        def run(*a, **kw):
            inner = kw.get("on_record")
            n = [0]

            def on_record(r):
                n[0] += 1
                if n[0] in marks:
                    samples.append([n[0], round(_status_mb("VmRSS"), 1)] + (_live_objects() if count else []))
                if inner is not None:
                    inner(r)

            kw["on_record"] = on_record
            try:
                return engine(*a, **kw)
            finally:
                samples.append([n[0], round(_status_mb("VmRSS"), 1)] + (_live_objects() if count else []))
        return run

    import facerefiner.ray_batch as ray_batch

    common.run_batch = sampled(common.run_batch)
    ray_batch.run_batch_ray = sampled(ray_batch.run_batch_ray)

    def dump() -> None:
        rec["peak_rss_mb"] = round(_status_mb("VmHWM"), 1)
        result.write_text(json.dumps(rec))

    atexit.register(dump)
    from facerefiner.cli.main import main

    sys.argv = ["facerefiner", *cli_args]
    main()


def _report_text(path: Path | None) -> str:
    if path is not None:
        return path.read_text(encoding="utf-8")
    return json.dumps({"input": "/data/in/p.jpg", "image_size": [1024, 1024], "face_box": [100.0, 120.0, 900.0, 980.0],
                       "head_pose_deg": {"yaw": 3.1, "pitch": -2.0, "roll": 0.5}, "uv_layout": "facerefiner",
                       "head": "mediapipe", "texture_size": 512, "visible_fraction": 0.61, "cos_threshold": 0.1,
                       "settings": {"size": 512}, "timings_s": {"load": 0.05, "unwrap": 0.4}}, indent=2)


def prepare_many(work: Path, photos: int, failing: int, report: Path | None) -> None:
    """``WORK/in``: ``photos`` files, the first ``photos - failing`` with finished face folders in
    ``WORK/out`` (empty photo files: a skipped photo is never read), the rest text files that fail
    as "not an image"."""
    import numpy as np
    from PIL import Image

    shutil.rmtree(work, ignore_errors=True)
    src, out = work / "in", work / "out"
    src.mkdir(parents=True)
    out.mkdir()
    text = _report_text(report)
    y, x = np.mgrid[0:64, 0:64]
    render = work / "render.png"
    Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8)).save(render)
    for i in range(photos):
        name = f"p{i:06d}"
        if i < photos - failing:
            (src / f"{name}.jpg").write_bytes(b"")
            d = out / name
            d.mkdir()
            (d / "report.json").write_text(text, encoding="utf-8")
            shutil.copyfile(render, d / "render.png")
        else:
            (src / f"{name}.jpg").write_text("not a photo")


def prepare_done(work: Path, photo: Path, copies: int) -> None:
    """``WORK/in``: ``copies`` copies of ``photo`` (hard links when possible)."""
    shutil.rmtree(work, ignore_errors=True)
    src = work / "in"
    src.mkdir(parents=True)
    (work / "out").mkdir()
    for i in range(copies):
        dst = src / f"c{i:04d}{photo.suffix}"
        try:
            os.link(photo, dst)
        except OSError:
            shutil.copyfile(photo, dst)


def run_cli(work: Path, cli_args: list[str], src: Path | None) -> dict:
    """One child run; its record (see :func:`child`) with the wall time and exit code added."""
    result = work / "child.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_child", str(result), "--", *cli_args],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rec = json.loads(result.read_text()) if result.is_file() else {}
    rec.update({"exit": p.returncode, "wall_s": round(time.perf_counter() - t0, 2)})
    if p.returncode not in (0, 2):
        rec["stderr_tail"] = p.stderr[-2000:]
    return rec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        child(Path(argv[1]), argv[3:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=("many", "done"))
    ap.add_argument("work", type=Path)
    ap.add_argument("--photos", type=int, default=20000)
    ap.add_argument("--failing", type=int, default=1000)
    ap.add_argument("--report", type=Path, help="a report.json to copy into every finished folder (many)")
    ap.add_argument("--photo", type=Path, help="the photo to copy (done)")
    ap.add_argument("--copies", type=int, default=60)
    ap.add_argument("--size", type=int, default=None, help="--size of the unwrap (default: 16 many, 512 done)")
    ap.add_argument("--engine", default="local", choices=("local", "ray"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2, help="runs of the same command (many: the first, then reruns)")
    ap.add_argument("--src", type=Path, help="put this folder first on the child's sys.path")
    ap.add_argument("--count-objects", action="store_true",
                    help="also count the torch tensors and numpy arrays alive at each sample (slow on big batches)")
    a = ap.parse_args(argv)
    import platform

    t0 = time.perf_counter()
    if a.scenario == "many":
        prepare_many(a.work, a.photos, a.failing, a.report)
        size = a.size or 16
    else:
        if a.photo is None:
            ap.error("done needs --photo")
        prepare_done(a.work, a.photo, a.copies)
        size = a.size or 512
    prep_s = time.perf_counter() - t0
    cli = ["unwrap", str(a.work / "in"), "-o", str(a.work / "out"), "--size", str(size), "--occlusion", "off"]
    if a.engine == "ray":
        cli += ["--engine", "ray", "--workers", str(a.workers)]
    if a.count_objects:
        os.environ["DRIVER_MEMORY_COUNT_OBJECTS"] = "1"
    runs = [run_cli(a.work, cli, a.src) for _ in range(a.runs if a.scenario == "many" else 1)]
    index = a.work / "out" / "index.html"
    pages = sorted((a.work / "out").glob("faces-*.html"))
    info = {"scenario": a.scenario, "photos": a.photos if a.scenario == "many" else a.copies,
            "failing": a.failing if a.scenario == "many" else 0, "engine": a.engine, "size": size,
            "src": str(a.src) if a.src else None, "prepare_s": round(prep_s, 1), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "runs": runs,
            "index_html_kb": round(index.stat().st_size / 1024, 1) if index.is_file() else None,
            "pages": len(pages), "largest_page_kb": round(max((p.stat().st_size for p in pages), default=0) / 1024, 1)}
    (a.work / "driver_memory.json").write_text(json.dumps(info, indent=2))
    print(f"{a.scenario}: {info['photos']} photos, engine {a.engine}, --size {size}"
          + (f", code from {a.src}" if a.src else ""))
    print(f"{'run':>4}{'exit':>6}{'wall s':>9}{'batch s':>9}{'finish s':>10}{'RSS start MB':>14}"
          f"{'RSS 1st rec MB':>16}{'RSS finish MB':>15}{'peak MB':>9}  RSS by records")
    for i, r in enumerate(runs, 1):
        by = r.get("rss_by_records") or [[0, 0.0]]
        print(f"{i:>4}{r.get('exit', '?'):>6}{r.get('wall_s', 0):>9.1f}{r.get('batch_s', 0):>9.1f}"
              f"{r.get('finish_s', 0):>10.1f}{r.get('rss_batch_start_mb', 0):>14.1f}{by[0][1]:>16.1f}"
              f"{r.get('rss_finish_start_mb', 0):>15.1f}{r.get('peak_rss_mb', 0):>9.1f}  "
              + " ".join(f"{x[0]}:{x[1]:.0f}" for x in by))
        if a.count_objects:
            print("      live after record k: k: tensors (MB), arrays (MB): "
                  + "; ".join(f"{x[0]}: {x[2]} ({x[3]}), {x[4]} ({x[5]})" for x in by if len(x) > 2))
        if "stderr_tail" in r:
            print(r["stderr_tail"])
    print(f"index.html {info['index_html_kb']} KB, {info['pages']} pages (largest {info['largest_page_kb']} KB)")
    return 0 if all(r.get("exit") in (0, 2) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
