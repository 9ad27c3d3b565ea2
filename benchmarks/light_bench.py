"""The light benchmark: faces re-lit with known lights, de-lit again, against the albedo they were
made from.

For each photo: its complete albedo A (``facerefiner.light.albedo_texture``, occlusion auto) is
re-rendered on its mesh at its camera under known lights (a coloured key light plus ambient, from
the left, the right, above and the front-left), composited over the photo; that image is
reconstructed, unwrapped and de-lit like any photo; its albedo is compared with A, and so is its lit
texture (what ``texture.png`` would carry): per-channel scale-invariant PSNR at 128 x 128 over the
texels both show; and the estimated light's direction against the true one.

    python benchmarks/light_bench.py PHOTOS... [-o OUT.json] [--order 1|2|key] [--set NAME=VALUE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facerefiner.io import load_image
from facerefiner.layout import default_layout
from facerefiner.light import albedo_texture, directional, shading
from facerefiner.occlusion import face_mask
from facerefiner.pipeline import render_over_photo
from facerefiner.reconstruct import reconstruct
from facerefiner.unwrap import unwrap, uv_raster

S = 256
LIGHTS = {"left": ((-1.0, -0.2, -0.7), (1.0, 0.85, 0.7)), "right": ((1.0, -0.2, -0.7), (0.75, 0.85, 1.0)),
          "top": ((0.0, -1.0, -0.6), (1.0, 0.95, 0.9)), "front-left": ((-0.4, -0.3, -1.0), (1.0, 1.0, 1.0))}


def si_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, size: int = 128) -> float:
    """Per-channel scale-invariant PSNR of ``a`` against ``b`` ((3, S, S) in [0, 1]) at ``size`` over
    ``mask``: each channel of ``a`` scaled by its least-squares factor onto ``b`` first."""
    a = F.interpolate(a[None], size=(size, size), mode="area")[0]
    b = F.interpolate(b[None], size=(size, size), mode="area")[0]
    m = F.interpolate(mask[None, None].float(), size=(size, size), mode="area")[0, 0] > 0.999
    x, y = a[:, m].double(), b[:, m].double()
    k = (x * y).sum(1) / (x * x).sum(1).clamp_min(1e-12)
    mse = float(((k[:, None] * x - y) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=None)
    ap.add_argument("--order", choices=("1", "2", "key"), default=None,
                    help="the light's order (facerefiner.light.ORDER; default: the module's)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a constant of facerefiner.light (e.g. SYMMETRY_WEIGHT=0), for experiments")
    a = ap.parse_args(argv)
    import facerefiner.light as light_module

    if a.order is not None:
        light_module.ORDER = a.order if a.order == "key" else int(a.order)
    for item in a.set:
        name, _, value = item.partition("=")
        if not hasattr(light_module, name):
            ap.error(f"--set: facerefiner.light has no {name}")
        setattr(light_module, name, type(getattr(light_module, name))(value))
    lay = default_layout()
    uvr = uv_raster(lay, S)
    rows = []
    for p in a.photos:
        rgb = load_image(p)
        geo = reconstruct(rgb)
        m, _ = face_mask(rgb, geo, lay, None, "auto")
        un = unwrap(rgb, geo, S, layout=lay, mask=m, uvr=uvr)
        base = albedo_texture(rgb, un, geo, lay, uvr=uvr, source=str(p))
        if base is None:
            rows.append({"photo": p.stem, "skipped": "no light estimated on the photo itself"})
            print(f"{p.stem}: skipped (no light estimated on the photo itself)", flush=True)
            continue
        A, normals = base.albedo, base.normals
        for name, (d, colour) in LIGHTS.items():
            truth = directional(np.array(d), colour=colour, ambient=0.35)
            sh = torch.from_numpy(shading(truth.gamma, normals.numpy()).astype(np.float32)).permute(2, 0, 1)
            k = float(sh[:, normals[..., 2] < 0].mean())
            lit_uv = (A * sh / k).clamp(0, 1)
            img = render_over_photo(rgb, lit_uv, geo, lay, max_side=max(rgb.shape[:2]))
            t0 = time.perf_counter()
            try:
                # the same face again (a photo of several: the one nearest the first's box)
                from facerefiner.reconstruct import reconstruct_all

                c0 = np.array([(geo.box[0] + geo.box[2]) / 2, (geo.box[1] + geo.box[3]) / 2])
                g2 = min(reconstruct_all(img), key=lambda g: np.linalg.norm(
                    np.array([(g.box[0] + g.box[2]) / 2, (g.box[1] + g.box[3]) / 2]) - c0))
            except Exception as e:  # noqa: BLE001 - a re-lit face the detector loses is reported
                rows.append({"photo": p.stem, "light": name, "skipped": f"{type(e).__name__}: {e}"})
                continue
            m2, _ = face_mask(img, g2, lay, None, "auto")
            un2 = unwrap(img, g2, S, layout=lay, mask=m2, uvr=uvr)
            res = albedo_texture(img, un2, g2, lay, uvr=uvr)
            dt = time.perf_counter() - t0
            both = un.visibility & un2.visibility
            row = {"photo": p.stem, "light": name, "lit_si_psnr": si_psnr(un2.texture, A, both), "time_s": dt}
            if res is None:
                row["skipped"] = "no light estimated"
            else:
                dd = np.array(d) / np.linalg.norm(d)
                row["albedo_si_psnr"] = si_psnr(res.albedo, A, both & res.visibility)
                row["direction_error_deg"] = float(np.degrees(np.arccos(np.clip(res.light.direction() @ dd, -1, 1))))
            rows.append(row)
            print(p.stem, name, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
                                 if k not in ("photo", "light")}, flush=True)
    ok = [r for r in rows if "albedo_si_psnr" in r]
    summary = {"pairs": len(rows), "estimated": len(ok)}
    if ok:
        summary.update({
            "albedo_si_psnr_median": float(np.median([r["albedo_si_psnr"] for r in ok])),
            "lit_si_psnr_median": float(np.median([r["lit_si_psnr"] for r in ok])),
            "gain_median": float(np.median([r["albedo_si_psnr"] - r["lit_si_psnr"] for r in ok])),
            "direction_error_median_deg": float(np.median([r["direction_error_deg"] for r in ok])),
            "within_20_deg": sum(r["direction_error_deg"] <= 20 for r in ok)})
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.write_text(json.dumps({"size": S, "rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
