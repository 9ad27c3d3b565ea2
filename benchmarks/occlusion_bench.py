"""The occlusion benchmark: synthetic occluders pasted on dev photos, and the clean photos' shrink.

For each target photo and each occluder (a hair fringe cut from another photo's hair, a pair of
sunglasses, a textured object over a cheek cut from another photo's background, a hand cut from
another photo), the occluded photo is completed three ways (unwrap + the synthesis, no optimisation):
``none`` (no mask: what the default did before, the occluder copied into the texture), ``exact``
(``--mask`` with the pasted occluder's exact mask) and ``auto`` (``--occlusion auto``). Scored on
the occluder's texels (visible in the clean photo's unwrap, hidden by the exact mask) against the
clean photo's sampled texture: the share of them the auto mask hides, PSNR and the detail ratio.
With ``--clean``, each photo is also unwrapped as it is with the occlusion on and off: the share of
visible texels the auto mask takes, and what it found.

    python benchmarks/occlusion_bench.py TARGETS... --sources DIR -o OUT [--prior prior.npz] [--clean PHOTOS...]

Writes OUT/results.json, OUT/results.md and OUT/sheet.png (per target and occluder: the occluded
photo, the auto mask over it, the none / exact / auto textures and the truth).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from facerefiner.errors import NoFaceError
from facerefiner.io import load_image
from facerefiner.layout import default_layout
from facerefiner.metrics import completion_score, probe_mask
from facerefiner.occlusion import OcclusionModels, face_mask, hand_mask
from facerefiner.reconstruct import reconstruct
from facerefiner.content import content_texture
from facerefiner.unwrap import unwrap, uv_raster

S = 512
OCCLUDERS = ("fringe", "sunglasses", "object", "hand")


def _box_patch(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return rgb[max(0, y0):y1, max(0, x0):x1]


def hair_patch(rgb: np.ndarray, geo) -> np.ndarray:
    """The hair above the forehead: the band above the landmark box, inner 60 % of its width."""
    x0, y0, x1, y1 = geo.box
    w, h = x1 - x0, y1 - y0
    return _box_patch(rgb, (int(x0 + 0.2 * w), int(y0 - 0.3 * h), int(x1 - 0.2 * w), int(y0 - 0.02 * h)))


def paste_texture(rgb: np.ndarray, mask: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """``patch`` resized to the mask's bounding box and pasted where the mask is."""
    import cv2

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    p = cv2.resize(patch, (int(x1 - x0), int(y1 - y0)), interpolation=cv2.INTER_LINEAR)
    out = rgb.copy()
    sub = out[y0:y1, x0:x1]
    m = mask[y0:y1, x0:x1]
    sub[m] = p[m]
    return out


def lenses(rgb: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Dark tinted glass with a vertical gradient, a little noise and no skin showing through."""
    rng = np.random.default_rng(seed)
    ys = np.nonzero(mask)[0]
    t = (np.arange(rgb.shape[0])[:, None] - ys.min()) / max(1, np.ptp(ys))
    base = np.stack([18 + 22 * t, 20 + 22 * t, 28 + 26 * t], -1) * np.ones((1, rgb.shape[1], 1))
    glass = np.clip(base + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
    out = rgb.copy()
    out[mask] = glass[mask]
    return out


def paste_hand(rgb: np.ndarray, geo, hand_rgb: np.ndarray, hand: np.ndarray, hand_geo) -> tuple[np.ndarray, np.ndarray]:
    """The hand of ``hand_rgb`` (its MediaPipe landmarks ``hand``), scaled by the faces' sizes and
    put with its palm's centre on the target's chin, above the mouth corners."""
    import cv2

    m = hand_mask([hand], hand_rgb.shape[:2])
    f = geo.face_size / hand_geo.face_size
    hx, hy = hand[[0, 5, 9, 13, 17]].mean(0)
    lm = geo.landmarks
    tx, ty = (lm[61, 0] + lm[291, 0]) / 2, (lm[17, 1] + lm[152, 1]) / 2  # mouth centre x, chin
    A = np.array([[f, 0, tx - f * hx], [0, f, ty - f * hy]])
    H, W = rgb.shape[:2]
    warped = cv2.warpAffine(hand_rgb, A, (W, H), flags=cv2.INTER_LINEAR)
    wm = cv2.warpAffine(m.astype(np.uint8), A, (W, H), flags=cv2.INTER_NEAREST).astype(bool)
    out = rgb.copy()
    out[wm] = warped[wm]
    return out, wm


def complete_with(rgb, geo, layout, uvr, mask, mode, prior, models):
    m, rep = face_mask(rgb, geo, layout, mask, mode, models=models)
    un = unwrap(rgb, geo, S, layout=layout, mask=m, uvr=uvr)
    tex, _ = content_texture(rgb, un, layout, uvr, detail=True, prior=prior)
    return tex, un.visibility, m, rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", type=Path)
    ap.add_argument("--sources", type=Path, required=True, help="folder of the dev photos the occluders are cut from")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--prior", type=Path, default=None)
    ap.add_argument("--clean", nargs="*", type=Path, default=[], help="photos to measure the clean shrink on")
    a = ap.parse_args(argv)
    layout = default_layout()
    uvr = uv_raster(layout, S)
    models = OcclusionModels()
    prior = None
    if a.prior:
        from facerefiner.prior import load_prior

        prior = load_prior(a.prior, layout)
    src = a.sources
    hair_rgb = load_image(src / "ffhq_00145.png")
    hair = hair_patch(hair_rgb, reconstruct(hair_rgb))
    grass_rgb = load_image(src / "ffhq_18358.png")
    grass = _box_patch(grass_rgb, (0, 700, 300, 1000))
    hand_rgb = load_image(src / "deca_ex_alfw1.png")
    hand_geo = reconstruct(hand_rgb)
    hands = models.hands(hand_rgb)
    if not hands:
        print("no hand found in deca_ex_alfw1.png", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    rows, tiles = [], []
    for t in a.targets:
        rgb = load_image(t)
        geo = reconstruct(rgb)
        un0 = unwrap(rgb, geo, S, layout=layout, uvr=uvr)
        for occ in OCCLUDERS:
            if occ == "fringe":
                m = probe_mask(geo, "fringe")
                img = paste_texture(rgb, m, hair)
            elif occ == "sunglasses":
                m = probe_mask(geo, "sunglasses")
                img = lenses(rgb, m)
            elif occ == "object":
                m = probe_mask(geo, "cheek")
                img = paste_texture(rgb, m, grass)
            else:
                img, m = paste_hand(rgb, geo, hand_rgb, hands[0], hand_geo)
            try:
                g = reconstruct(img)  # the occluded photo is reconstructed as a user's would be
            except NoFaceError:
                rows.append({"photo": t.stem, "occluder": occ, "skipped": "no face found in the occluded photo"})
                print(f"{t.stem} {occ}: no face found in the occluded photo", flush=True)
                continue
            ve = unwrap(img, g, S, layout=layout, mask=m, uvr=uvr).visibility
            hidden = un0.visibility & ~ve
            if hidden.sum() < 100:
                continue
            res = {"photo": t.stem, "occluder": occ, "texels": int(hidden.sum())}
            texs = {}
            for mode, mask, how in (("none", None, "off"), ("exact", m, "off"), ("auto", None, "auto")):
                t0 = time.perf_counter()
                tex, vis, mm, rep = complete_with(img, g, layout, uvr, mask, how, prior, models)
                sc = completion_score(tex, un0.texture, hidden, valid=un0.visibility)
                res[mode] = {"psnr": sc["psnr"], "ssim": sc["ssim"], "detail": sc["detail"],
                             "time_s": time.perf_counter() - t0}
                if mode == "auto":
                    res["coverage"] = float((hidden & ~vis).sum()) / float(hidden.sum())
                    res["found"] = rep.get("face_share", {})
                    auto_mask = mm
                texs[mode] = tex
            rows.append(res)
            print(f"{t.stem} {occ}: coverage {res['coverage']:.2f}, PSNR none {res['none']['psnr']:.2f} exact "
                  f"{res['exact']['psnr']:.2f} auto {res['auto']['psnr']:.2f}; detail auto {res['auto']['detail']:.2f}",
                  flush=True)
            tiles.append(_tile_row(img, auto_mask, g, [texs["none"], texs["exact"], texs["auto"], un0.texture], hidden))
    clean = []
    for p in a.clean:
        rgb = load_image(p)
        geo = reconstruct(rgb)
        v_off = unwrap(rgb, geo, S, layout=layout, uvr=uvr).visibility
        t0 = time.perf_counter()
        m, rep = face_mask(rgb, geo, layout, None, "auto", models=models)
        dt = time.perf_counter() - t0
        v_on = unwrap(rgb, geo, S, layout=layout, mask=m, uvr=uvr).visibility
        shrink = 1.0 - float(v_on.sum()) / max(1.0, float(v_off.sum()))
        clean.append({"photo": p.stem, "shrink": shrink, "found": rep.get("face_share", {}), "time_s": dt})
        print(f"{p.stem}: visible texels -{100 * shrink:.1f} % ({dt:.2f} s) {rep.get('face_share')}", flush=True)
    doc = {"size": S, "rows": rows, "clean": clean, "prior": str(a.prior) if a.prior else None}
    (a.out / "results.json").write_text(json.dumps(doc, indent=1))
    (a.out / "results.md").write_text(markdown(doc))
    if tiles:
        from PIL import Image

        Image.fromarray(np.concatenate(tiles, 0)).save(a.out / "sheet.png")
    print((a.out / "results.md").read_text())
    return 0


def _tile_row(img, mask, geo, texs, hidden, tile=192):
    import cv2

    x0, y0, x1, y1 = map(int, geo.box)
    mg = int(0.3 * max(x1 - x0, y1 - y0))
    sl = (slice(max(0, y0 - mg), y1 + mg), slice(max(0, x0 - mg), x1 + mg))
    crop = img[sl]
    ov = crop.astype(np.float32)
    if mask is not None:
        mm = mask[sl]
        ov[mm] = 0.4 * ov[mm] + 0.6 * np.array([255, 0, 200])
    cells = [crop, ov.astype(np.uint8)]
    for t in texs:
        a = (t.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        cells.append(a)
    out = []
    for c in cells:
        h, w = c.shape[:2]
        f = tile / max(h, w)
        r = cv2.resize(np.ascontiguousarray(c), (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:r.shape[0], :r.shape[1]] = r
        out.append(canvas)
    return np.concatenate(out, 1)


def _med(xs):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.median(xs)) if xs else float("nan")


def markdown(doc) -> str:
    skipped = [f"{x['photo']} {x['occluder']}" for x in doc["rows"] if "skipped" in x]
    L = ["| occluder | n | auto covers (median, min) | PSNR none / exact / auto dB | auto - exact | auto - none | detail exact / auto |",
         "|---|---:|---|---|---:|---:|---|"]
    for occ in OCCLUDERS:
        r = [x for x in doc["rows"] if x["occluder"] == occ and "skipped" not in x]
        if not r:
            continue
        cov = [x["coverage"] for x in r]
        pn, pe, pa = ([x[k]["psnr"] for x in r] for k in ("none", "exact", "auto"))
        de, da = ([x[k]["detail"] for x in r] for k in ("exact", "auto"))
        L.append(f"| {occ} | {len(r)} | {_med(cov):.2f}, {min(cov):.2f} | {_med(pn):.2f} / {_med(pe):.2f} / {_med(pa):.2f} | "
                 f"{_med([b - a for a, b in zip(pe, pa)]):+.2f} | {_med([b - a for a, b in zip(pn, pa)]):+.2f} | "
                 f"{_med(de):.2f} / {_med(da):.2f} |")
    if skipped:
        L += ["", "No face found in the occluded photo (left out): " + ", ".join(skipped) + "."]
    if doc["clean"]:
        L += ["", "| photo | visible texels lost | found (share of the face) | time s |", "|---|---:|---|---:|"]
        for c in doc["clean"]:
            f = ", ".join(f"{k} {100 * v:.1f} %" for k, v in c["found"].items() if v)
            L.append(f"| {c['photo']} | {100 * c['shrink']:.1f} % | {f or 'nothing'} | {c['time_s']:.2f} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
