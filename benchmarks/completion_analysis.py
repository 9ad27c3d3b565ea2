"""Why refinement does not beat I_C on the completion probe: what its change to the hidden cheek is
made of, what the metric rewards, and how much of an identity difference is noise.

    python benchmarks/completion_analysis.py BENCH_OUT [--method facerefiner-vgg16] [--sigma 2]
        [--noise-trials 3] [-o analysis.json]

BENCH_OUT is the output folder of ``python benchmarks/bench.py ... --completion`` with the
``initial`` method and METHOD; the stored ``texture_masked.png`` of both are read back (8-bit PNG)
and scored with the bench's own :func:`facerefiner.metrics.completion_score` against the probe
(:func:`facerefiner.metrics.completion_probe`, recomputed from the photo and camera), for:

- ``initial``: I_C from the masked unwrap, ``refined``: METHOD's texture from it;
- ``refined, I_C's low frequencies``: refined + Gaussian_sigma(I_C - refined), i.e. the refinement
  keeps only the detail finer than sigma texels (if this matches ``initial``, the refinement's
  effect on the score is its low-frequency colour/brightness change);
- ``I_C blurred``: Gaussian_sigma(I_C), which adds no information (if it scores higher than I_C, the
  metric rewards blur: a pixel metric against the hidden truth cannot credit plausible detail that
  is not the photo's own).

With the ``eval`` extra it also measures the identity metric's noise floor: the dlib distance of
each photo's I_C (``initial/texture.png``) at the input pose and turned +-30 degrees, against the
same texture with invisible noise (uniform, +-1/255 per channel, ``--noise-trials`` draws); the
median absolute change is the smallest identity difference that means anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from facerefiner import metrics as M
from facerefiner.errors import FaceRefinerError
from facerefiner.io import load_image
from facerefiner.pipeline import photo_to_tensor


def read_texture(path: Path) -> torch.Tensor:
    """(3, S, S) float32 in [0, 1] from a texture PNG."""
    return photo_to_tensor(load_image(path))


def blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.from_numpy(np.stack([gaussian_filter(c, sigma, mode="nearest") for c in t.numpy()]))


def main() -> None:
    try:
        run()
    except FaceRefinerError as e:  # a missing or broken output folder: one line, no traceback
        raise SystemExit(f"error: {e}") from None


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--method", default="facerefiner-vgg16")
    ap.add_argument("--sigma", type=float, default=2.0, help="Gaussian sigma in texels (default 2)")
    ap.add_argument("--noise-trials", type=int, default=3, help="0: skip the identity noise floor")
    ap.add_argument("-o", "--out", type=Path)
    a = ap.parse_args()
    runs = a.bench / "runs"
    if not (runs / a.method).is_dir():
        raise SystemExit(f"error: {runs / a.method}: missing (not a bench output folder with {a.method})")
    model = None
    if a.noise_trials:
        try:
            model = M.identity_model()
        except M.EvalExtraMissing as e:
            print(f"identity noise floor skipped: {e}")
    gen = torch.Generator().manual_seed(0)
    rows = {}
    for folder in sorted((runs / a.method).iterdir()):
        ini = runs / "initial" / folder.name
        if not (folder / "texture_masked.png").exists() or not (ini / "texture_masked.png").exists():
            continue
        o = M.load_output(folder)
        probe = M.completion_probe(o.photo, o.geometry, o.texture.shape[-1], o.layout)
        ic, rx = read_texture(ini / "texture_masked.png"), read_texture(folder / "texture_masked.png")
        variants = {"initial": ic, "refined": rx, "refined, I_C's low frequencies": rx + blur(ic - rx, a.sigma),
                    "I_C blurred": blur(ic, a.sigma)}
        r = {k: M.completion_score(v.clamp(0, 1), probe.reference, probe.hidden)["psnr"] for k, v in variants.items()}
        if model is not None:
            full = read_texture(ini / "texture.png")
            base = M.identity_distances(o.photo, full, o.geometry, o.layout, model=model)
            deltas = []
            for _ in range(a.noise_trials):
                noisy = (full + (torch.rand(full.shape, generator=gen) - 0.5) * (2 / 255)).clamp(0, 1)
                d = M.identity_distances(o.photo, noisy, o.geometry, o.layout, model=model)
                deltas += [abs(d["render"] - base["render"])] + [abs(d["turned"][k] - base["turned"][k])
                                                               for k in base["turned"]]
            r["identity noise"] = statistics.median(deltas)
            r["identity noise max"] = max(deltas)
        rows[folder.name] = r
        print(f"{folder.name:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    if not rows:
        raise SystemExit(f"{a.bench}: no photo with texture_masked.png for both initial and {a.method}")
    keys = list(next(iter(rows.values())))
    print(f"\nmedians over {len(rows)} photos (completion PSNR in dB on the hidden cheek texels):")
    for k in keys:
        print(f"  {k:32s} {statistics.median(r[k] for r in rows.values()):.3f}")
    ini = {p: r["initial"] for p, r in rows.items()}
    for k in ("refined", "refined, I_C's low frequencies", "I_C blurred"):
        better = sum(rows[p][k] > ini[p] + 0.05 for p in rows)
        worse = sum(rows[p][k] < ini[p] - 0.05 for p in rows)
        gap = max(abs(rows[p][k] - ini[p]) for p in rows)
        print(f"  {k} vs initial: better on {better}, worse on {worse}, ties {len(rows) - better - worse} "
              f"(0.05 dB); largest |difference| {gap:.2f} dB")
    if a.out:
        a.out.write_text(json.dumps({"sigma": a.sigma, "method": a.method, "photos": rows}, indent=1))


if __name__ == "__main__":
    main()
