"""Time the refinement on a GPU and compare presets there, for machines without MediaPipe or dlib.

A GPU machine here has torch but no MediaPipe (its numpy is 2.x) and no dlib, so the work is split
in three steps:

    # 1. here (CPU): load and reconstruct the photos, pickle (photo, geometry) per face
    python benchmarks/gpu_refine.py prepare ../shared/data/faces/*.jpg -o gpu_inputs
    # 2. there (CUDA): refine each face with each preset, warm (models loaded once, one warm-up
    #    face first), timed with torch.cuda.synchronize; textures and timings into one .npz + .json
    python benchmarks/gpu_refine.py run gpu_inputs -o OUT --presets default,paper \\
        --vgg-weights vgg16_imagenet_caffe_conv.pth --device cuda [--completion]
    # 3. here: score the textures with the bench's metrics (visible fidelity, identity at the
    #    input pose and +-30 degrees, seam) and print a Markdown table per preset
    python benchmarks/gpu_refine.py score gpu_inputs OUT/textures.npz [OUT2/textures.npz ...]

Time per face (step 2) is ``refine()`` end to end from the decoded photo and geometry: unwrap,
completion, the rendering term's rasterisation and the optimisation; not the photo decoding and
MediaPipe (about 0.01 s per photo on the dev CPU, BENCHMARKS.md "Unwrap", reconstruct column).
The summary line per preset gives the median wall time, the median of each stage of
``RefineResult.timings`` and the peak GPU memory. Textures travel back as 8-bit (the GPU machine
returns at most 16 MiB per file), so visible PSNR tops out near 63 dB in ``score``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def prepare(a: argparse.Namespace) -> None:
    from facerefiner.errors import FaceRefinerError
    from facerefiner.io import load_image
    from facerefiner.reconstruct import reconstruct

    a.out.mkdir(parents=True, exist_ok=True)
    for p in a.photos:
        try:
            rgb = load_image(p)
            geo = reconstruct(rgb)
        except FaceRefinerError as e:
            print(f"skip {p.name}: {e}", file=sys.stderr)
            continue
        with open(a.out / f"{p.stem}.pkl", "wb") as f:  # the photo travels as its file (smaller)
            pickle.dump({"name": p.stem, "photo": p.name, "geometry": geo}, f)
        (a.out / p.name).write_bytes(p.read_bytes())
        print(f"ok {p.name}")


def load_inputs(folder: Path) -> list[dict]:
    from facerefiner.io import load_image

    out = []
    for f in sorted(folder.glob("*.pkl")):
        with open(f, "rb") as fh:
            d = pickle.load(fh)
        d["rgb"] = load_image(folder / d["photo"])
        out.append(d)
    return out


def run(a: argparse.Namespace) -> None:
    from facerefiner.features import get_extractor
    from facerefiner.io import to_uint8
    from facerefiner.refine import preset, refine

    dev = torch.device(a.device)
    faces = load_inputs(a.inputs)[: a.limit or None]
    t = time.perf_counter()
    ext = get_extractor("vgg16", weights=a.vgg_weights, device=dev)
    load_s = time.perf_counter() - t
    info = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "torch": torch.__version__, "extractor_load_s": round(load_s, 3), "faces": [f["name"] for f in faces],
            "runs": []}
    textures: dict[str, np.ndarray] = {}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for name in a.presets.split(",") if not a.only_masked else []:
        cfg = preset(name)
        refine(faces[0]["rgb"], faces[0]["geometry"], config=cfg, extractor=ext, device=str(dev))  # warm-up
        for face in faces:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            sync()
            t = time.perf_counter()
            r = refine(face["rgb"], face["geometry"], config=cfg, extractor=ext, device=str(dev))
            sync()
            wall = time.perf_counter() - t
            peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
            textures[f"{name}/{face['name']}"] = to_uint8(r.texture)
            info["runs"].append({"preset": name, "face": face["name"], "wall_s": round(wall, 3),
                                 "gpu_peak_mb": None if peak is None else round(peak, 1),
                                 "timings": {k: round(v, 3) for k, v in r.timings.items()}})
            print(f"{name} {face['name']} {wall:.2f} s", flush=True)
            save(a.out, textures, info)  # after every face: a run cut short keeps what it made
        runs = [r for r in info["runs"] if r["preset"] == name]
        walls = [r["wall_s"] for r in runs]
        stages = {k: statistics.median(r["timings"].get(k, 0.0) for r in runs) for k in runs[0]["timings"]}
        peaks = [r["gpu_peak_mb"] for r in runs if r["gpu_peak_mb"] is not None]
        print(f"{name}: median {statistics.median(walls):.2f} s ({min(walls):.2f} to {max(walls):.2f}); stages "
              + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
              + (f"; peak GPU memory {max(peaks):.0f} MB" if peaks else ""), flush=True)
    if a.completion or a.only_masked:  # the completion probe's runs (untimed): the cheek facing the camera hidden
        from facerefiner.layout import default_layout
        from facerefiner.metrics import cheek_mask

        for name in a.presets.split(","):
            for face in faces:
                mask, _ = cheek_mask(face["geometry"], "auto", default_layout())
                r = refine(face["rgb"], face["geometry"], config=preset(name), extractor=ext, device=str(dev),
                           mask=mask)
                textures[f"{name}-masked/{face['name']}"] = to_uint8(r.texture)
                save(a.out, textures, info)
                print(f"{name} masked {face['name']}", flush=True)


def save(out: Path, textures: dict[str, np.ndarray], info: dict) -> None:
    """Both files written whole or not at all (temporary name, then rename)."""
    from facerefiner.io import save_json

    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "textures.tmp.npz", **textures)
    (out / "textures.tmp.npz").replace(out / "textures.npz")
    save_json(out / "timings.json", info)


def score(a: argparse.Namespace) -> None:
    from facerefiner import metrics as M
    from bench import flat_metrics, wins
    from facerefiner.layout import default_layout
    from facerefiner.pipeline import photo_to_tensor
    from facerefiner.unwrap import uv_raster

    faces = {f["name"]: f for f in load_inputs(a.inputs)}
    tex: dict[str, np.ndarray] = {}
    for path in a.textures:  # several runs' textures.npz (e.g. the timed and the masked runs)
        with np.load(path) as z:
            tex.update({k: z[k] for k in z.files})
    layout = default_layout()
    model = M.identity_model()
    rows: dict[str, dict[str, dict]] = {}
    probes: dict[tuple[str, int], M.CompletionProbe] = {}  # per face: both presets share it
    for key in sorted(tex, key=lambda k: k.split("/")[0].endswith("-masked")):  # masked runs last
        name, face = key.split("/")
        f = faces[face]
        t = photo_to_tensor(tex[key])
        S = t.shape[-1]
        if (face, S) not in probes:  # the unmasked unwrap (its V) and the masked one, once per face
            probes[face, S] = M.completion_probe(f["rgb"], f["geometry"], S, layout)
        probe = probes[face, S]
        if name.endswith("-masked"):
            c = M.completion_score(t, probe.reference, probe.hidden)
            rows.setdefault(name[: -len("-masked")], {}).setdefault(face, {}).update(
                {"fill_psnr": c["psnr"], "fill_ssim": c["ssim"]})
            continue
        fid = M.visible_fidelity(f["rgb"], t, f["geometry"], layout, probe.visibility)
        ident = M.identity_distances(f["rgb"], t, f["geometry"], layout, None, yaws=M.IDENTITY_YAWS, model=model)
        seam = M.seam_ratio(t, probe.visibility, uv_raster(layout, S).valid)
        rows.setdefault(name, {})[face] = flat_metrics({"fidelity": fid, "identity": ident, "seam": seam})
    names = list(rows)
    cols = ["psnr", "ssim", "id", "id+30", "id-30", "seam"]
    if all(v.get("fill_psnr") is not None for n in names for v in rows[n].values()):
        cols += ["fill_psnr", "fill_ssim"]
    print("| preset | photo | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for n in names:
        for face, v in rows[n].items():
            print(f"| {n} | {face} | " + " | ".join(f"{v[c]:.4f}" for c in cols) + " |")
        med = {c: statistics.median(v[c] for v in rows[n].values()) for c in cols}
        print(f"| {n} | **median** | " + " | ".join(f"{med[c]:.4f}" for c in cols) + " |")
    if len(names) == 2:
        a_, b_ = names
        common = [f for f in rows[a_] if f in rows[b_]]
        print(f"\n{a_} minus {b_}, per photo (median, min, max):")
        for c in cols:
            d = [rows[a_][f][c] - rows[b_][f][c] for f in common]
            print(f"  {c}: {statistics.median(d):+.4f} ({min(d):+.4f}, {max(d):+.4f})")
        w = wins(rows, a_, b_, common)
        print(f"{a_} beats {b_} : loses : ties (the bench's tolerances): "
              + ", ".join(f"{k} {v['a']}:{v['b']} ={v['ties']}" for k, v in w.items() if k in cols))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("inputs", type=Path)
    r.add_argument("-o", "--out", type=Path, required=True)
    r.add_argument("--presets", default="default,paper")
    r.add_argument("--vgg-weights", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--limit", type=int, default=0)
    r.add_argument("--completion", action="store_true", help="also the completion probe's masked runs")
    r.add_argument("--only-masked", action="store_true", help="the masked runs alone (no timed runs)")
    s = sub.add_parser("score")
    s.add_argument("inputs", type=Path)
    s.add_argument("textures", type=Path, nargs="+")
    s.add_argument("--json", type=Path)
    a = ap.parse_args()
    from facerefiner.errors import FaceRefinerError

    try:
        {"prepare": prepare, "run": run, "score": score}[a.cmd](a)
    except FaceRefinerError as e:  # missing weights, the eval extra, a broken input: one line
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
