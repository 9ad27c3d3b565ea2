"""The cost of ``--occlusion auto`` per face: :func:`facerefiner.occlusion.find_occlusions` on each
photo, the MediaPipe graphs loaded once beforehand (as in a batch), median of ``--repeat`` runs.

    python benchmarks/time_occlusion.py PHOTOS... [--repeat 3]

Prints one line per photo and the median and maximum over the photos.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from facerefiner.io import load_image
from facerefiner.layout import default_layout
from facerefiner.occlusion import default_models, find_occlusions
from facerefiner.reconstruct import reconstruct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    layout, models = default_layout(), default_models()
    faces = [(p, load_image(p)) for p in args.photos]
    faces = [(p, rgb, reconstruct(rgb)) for p, rgb in faces]
    find_occlusions(faces[0][1], faces[0][2], layout, models=models)      # load the graphs
    medians = []
    for p, rgb, geo in faces:
        ts = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            find_occlusions(rgb, geo, layout, models=models)
            ts.append(time.perf_counter() - t0)
        medians.append(statistics.median(ts))
        print(f"{p.name}: {medians[-1]:.2f} s")
    print(f"median {statistics.median(medians):.2f} s, max {max(medians):.2f} s per face over {len(medians)} photos")


if __name__ == "__main__":
    main()
