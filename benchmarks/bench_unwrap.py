"""Speed of reconstruct + unwrap + one render for 1024x1024 photos at S = 512 (warm, CPU).

Run:  python benchmarks/bench_unwrap.py [--photos DIR] [--size 512] [--repeat 5] [--roundtrip]

The face-mesh model is loaded once (one warm-up photo), then each 1024x1024 photo of DIR is timed
``--repeat`` times; prints the median per stage and in total, and the round-trip PSNR.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from facerefiner.io import load_image
from facerefiner.layout import default_layout
from facerefiner.pipeline import render_over_photo
from facerefiner.reconstruct import FaceMeshDetector, reconstruct
from facerefiner.unwrap import unwrap, uv_raster

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--roundtrip", action="store_true", help="also print the round-trip PSNR of every face")
    args = ap.parse_args()
    photos = [p for p in sorted(args.photos.iterdir()) if p.suffix.lower() in (".png", ".jpg")]
    images = {p.name: load_image(p) for p in photos}
    images = {k: v for k, v in images.items() if v.shape[:2] == (1024, 1024)}
    if not images:
        raise SystemExit(f"no 1024x1024 photo in {args.photos}")
    layout = default_layout()
    det = FaceMeshDetector()
    uvr = uv_raster(layout, args.size)
    first = next(iter(images.values()))
    g = reconstruct(first, detector=det)  # warm-up: loads the model
    render_over_photo(first, unwrap(first, g, args.size, uvr=uvr).texture, g, layout)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; S = {args.size}; {len(images)} photos x {args.repeat}")
    print(f"{'photo':20s} {'reconstruct':>11s} {'unwrap':>8s} {'render':>8s} {'total':>8s}  (median s)")
    totals = []
    for name, rgb in images.items():
        rows = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            g = reconstruct(rgb, detector=det)
            t1 = time.perf_counter()
            un = unwrap(rgb, g, args.size, uvr=uvr)
            t2 = time.perf_counter()
            render_over_photo(rgb, un.texture, g, layout, un.visibility)
            t3 = time.perf_counter()
            rows.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        med = [statistics.median(c) for c in zip(*rows)]
        totals.append(med[3])
        print(f"{name:20s} {med[0]:11.3f} {med[1]:8.3f} {med[2]:8.3f} {med[3]:8.3f}")
    print(f"median total over photos: {statistics.median(totals):.3f} s, max {max(totals):.3f} s")
    if args.roundtrip:
        round_trip(photos, det, layout, args.size)


def round_trip(photos: list[Path], det: FaceMeshDetector, layout, size: int) -> None:
    """Per face: PSNR of the sampled texture rendered back at the input camera against the photo,
    inside the visible region (pixels whose texels are all visible) eroded by 2 pixels."""
    import cv2

    from facerefiner.errors import NoFaceError
    from facerefiner.pipeline import photo_to_tensor
    from facerefiner.reconstruct import reconstruct_all
    from facerefiner.render import render_face

    print(f"\nround trip at S = {size} (every face of every photo)")
    print(f"{'photo':28s} {'face':>5s} {'size px':>8s} {'yaw':>6s} {'pixels':>8s} {'PSNR dB':>8s}")
    for p in photos:
        rgb = load_image(p)
        try:
            geos = reconstruct_all(rgb, detector=det)
        except NoFaceError as e:
            print(f"{p.name:28s} no face: {e}")
            continue
        for i, g in enumerate(geos):
            un = unwrap(rgb, g, size, layout=layout)
            rgba, mask = render_face(torch.cat([un.texture, un.visibility[None].float()]), g.vertices, g.camera, layout)
            m = cv2.erode((mask & (rgba[3] > 0.999)).numpy().astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            d = ((rgba[:3] - photo_to_tensor(rgb)) ** 2).mean(0).numpy()[m].mean()
            print(f"{p.name:28s} {i:5d} {g.face_size:8.0f} {g.yaw:6.1f} {int(m.sum()):8d} {10 * np.log10(1 / d):8.2f}")


if __name__ == "__main__":
    main()
