"""Low-frequency colour drift of the refinement in the hidden region, for preset variants.

    python benchmarks/drift.py PHOTO -o OUT [--features patches|vgg16] [--vgg-weights PATH]
        LABEL[:FIELD=VALUE,...] ...

Each variant (the default preset with ``FIELD=VALUE`` overrides, as ``bench --set``) refines the
photo once; printed per variant: wall time, :func:`facerefiner.metrics.chroma_drift` of the result
against I_C over the hidden texels (99th percentile of the sigma = S/64 blurred chroma change) (blotches of colour the photo
does not have show up here; the visible region is kept by ``keep_visible`` and not counted), and
the mean high-frequency magnitude (texture minus its sigma-2 blur, in 8-bit levels) of I_C and of
the result over the hidden texels (the detail the refinement adds). The textures are written to
OUT/LABEL.png for looking at.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from facerefiner import load_image, reconstruct
from facerefiner.features import get_extractor
from facerefiner.errors import FaceRefinerError
from facerefiner.layout import default_layout
from facerefiner.metrics import chroma_drift
from facerefiner.refine import apply_overrides, preset, refine
from facerefiner.unwrap import uv_raster


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def main() -> None:
    try:
        run()
    except FaceRefinerError as e:  # a bad photo or weights path: one line, no traceback
        raise SystemExit(f"error: {e}") from None


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo")
    ap.add_argument("variants", nargs="+", metavar="LABEL[:FIELD=VALUE,...]")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--features", default="patches", choices=("patches", "vgg16"))
    ap.add_argument("--vgg-weights")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rgb = load_image(a.photo)
    geo = reconstruct(rgb)
    ext = get_extractor(a.features, weights=a.vgg_weights)
    for spec in a.variants:
        label, _, sets = spec.partition(":")
        cfg = apply_overrides(preset("default", features=a.features), [s for s in sets.split(",") if s])
        t = time.perf_counter()
        r = refine(rgb, geo, config=cfg, extractor=ext, device="cpu")
        dt = time.perf_counter() - t
        hidden_t = uv_raster(default_layout(), cfg.size).valid & ~r.visibility
        hidden = hidden_t.numpy()
        drift = chroma_drift(r.texture, r.initial, hidden_t, cfg.size / 64)

        def detail(img: np.ndarray) -> float:
            return float(np.abs(img - cv2.GaussianBlur(img, (0, 0), 2.0))[hidden].mean() * 255)

        print(f"{label:12s} {dt:6.1f} s  chroma drift p99 {drift:.4f}  hidden detail: I_C {detail(hwc(r.initial)):.2f}, "
              f"refined {detail(hwc(r.texture)):.2f}", flush=True)
        Image.fromarray((hwc(r.texture) * 255).round().astype(np.uint8)).save(a.out / f"{label}.png")


if __name__ == "__main__":
    main()
