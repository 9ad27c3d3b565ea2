"""Where a face folder's visible-fidelity error comes from: the PSNR of ``facerefiner eval``'s
re-render (texture.png on mesh.obj at camera.json, the same crop, erosion and fully-visible mask)
split by the surface each pixel shows (the ICT head's materials; one "face" for the face mask).

Usage::

    python benchmarks/visible_error_by_part.py FACE_DIR [FACE_DIR ...] [--map OUT.png]

Prints per folder the overall PSNR (equal to ``facerefiner eval``'s) and, per surface, its pixels,
PSNR and share of the squared error. ``--map`` writes the photo crop beside the error (x4) of the
last folder.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--map")
    a = ap.parse_args(argv)

    from facerefiner.folder import FaceReport
    from facerefiner.heads import get_head
    from facerefiner.losses import erode_mask, render_mask_kernel
    from facerefiner.metrics import _face_crop, _render_rgba, load_output
    from facerefiner.render import FULLY_VISIBLE, face_raster
    from facerefiner.unwrap import sample_side

    for folder in a.folders:
        out = load_output(folder)
        head = get_head(FaceReport(out.report).head)
        S = out.report.get("texture_size") or out.texture.shape[-1]
        c = _face_crop(out.photo, out.geometry, out.layout, sample_side(int(out.texture.shape[-1])))
        h, w = c.covered.shape
        img, vis = _render_rgba(out.texture, out.visibility, c.cache)
        m = (erode_mask(c.covered[None, None], render_mask_kernel(max(h, w)))[0, 0] & (vis >= FULLY_VISIBLE)).numpy()
        ref = c.photo.astype(np.float64) / 255
        e = ((img.permute(1, 2, 0).numpy().astype(np.float64) - ref) ** 2).mean(-1)
        total = e[m].mean()
        print(f"{folder}: PSNR {10 * np.log10(1 / total):.2f} dB over {int(m.sum())} px (crop {w}x{h}, S {S})")
        rast, _ = face_raster(out.geometry.vertices, c.camera, out.layout)
        tid = rast[0, ..., 3].long().numpy() - 1
        names = getattr(head, "materials", None)
        mat = getattr(head, "face_material", None)
        label = np.where(tid >= 0, mat[np.clip(tid, 0, None)], -1) if mat is not None else np.where(tid >= 0, 0, -1)
        for k in np.unique(label[m]):
            sel = m & (label == k)
            name = names[k] if names is not None else "face"
            print(f"  {name:<16}{int(sel.sum()):>9} px  {10 * np.log10(1 / max(e[sel].mean(), 1e-12)):6.1f} dB"
                  f"  {e[sel].sum() / e[m].sum() * 100:5.1f} % of the squared error")
        if a.map:
            from PIL import Image

            err = np.clip(np.sqrt(e * m) * 4 * 255, 0, 255).astype(np.uint8)
            Image.fromarray(np.concatenate([c.photo, np.repeat(err[..., None], 3, -1)], 1)).save(a.map)
    return 0


if __name__ == "__main__":
    sys.exit(main())
