"""Left/right balance of real photos' textures and albedos (issue "re-renderable").

For each face folder made by ``facerefiner refine`` (with albedo.png): over the skin texels seen on
both sides (the texel and its mirror in visibility.png, the facial features left out), the mean
luma of the image's left half divided by the mean luma of the mirrored texels, for texture.png (the
photo's light in it) and for albedo.png. A side-lit photo has a lit texture ratio far from 1; the
albedo's should be closer to 1. Prints a Markdown table.

    python benchmarks/light_symmetry.py OUT [OUT/<face> ...]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facerefiner.complete import mirror_uv
from facerefiner.layout import default_layout, feature_mask
from facerefiner.unwrap import uv_raster


def _luma(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return a @ np.array([0.299, 0.587, 0.114])


def balance(folder: Path) -> dict[str, float] | None:
    """``{"texture": ratio, "albedo": ratio, "texels": n}`` or None without an albedo."""
    if not (folder / "albedo.png").is_file():
        return None
    tex, alb = _luma(folder / "texture.png"), _luma(folder / "albedo.png")
    vis = np.asarray(Image.open(folder / "visibility.png").convert("L")) > 127
    S = vis.shape[0]
    if tex.shape[0] != S:  # --export-size: compare at the visibility's size
        tex = np.asarray(Image.fromarray((tex * 255).astype(np.uint8)).resize((S, S), Image.BILINEAR)) / 255.0
    if alb.shape[0] != S:
        alb = np.asarray(Image.fromarray((alb * 255).astype(np.uint8)).resize((S, S), Image.BILINEAR)) / 255.0
    lay = default_layout()
    uvr = uv_raster(lay, S)
    muv = mirror_uv(lay, S, uvr).numpy()
    mt = np.clip(np.floor(muv * S).astype(np.int64), 0, S - 1)
    my, mx = mt[..., 1], mt[..., 0]
    skin = uvr.valid.numpy() & ~feature_mask(lay, S)
    both = vis & vis[my, mx] & skin & skin[my, mx]
    xs = np.arange(S)[None, :].repeat(S, 0)
    left = both & (xs < S // 2 - 2)
    n = int(left.sum())
    if n < 50:
        return {"texture": math.nan, "albedo": math.nan, "texels": n}
    out = {"texels": n}
    for name, img in (("texture", tex), ("albedo", alb)):
        out[name] = float(img[left].mean() / max(img[my[left], mx[left]].mean(), 1e-9))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args(argv)
    folders: list[Path] = []
    for f in args.folders:
        folders += [f] if (f / "report.json").is_file() else sorted(p.parent for p in f.glob("*/report.json"))
    print("| face | texels | L/R texture | L/R albedo | closer to 1 |")
    print("|---|---:|---:|---:|---|")
    for f in folders:
        b = balance(f)
        if b is None:
            print(f"| {f.name} | - | - | - | no albedo |")
            continue
        t, a = b["texture"], b["albedo"]
        closer = "yes" if abs(math.log(a)) < abs(math.log(t)) else "no"
        print(f"| {f.name} | {b['texels']} | {t:.3f} | {a:.3f} | {closer} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
