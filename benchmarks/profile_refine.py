"""Where the time of one refinement goes: setup stages, then one optimisation step per scale split
into its parts (each part timed forward + backward on its own, in the refiner's shapes).

    python benchmarks/profile_refine.py PHOTO [--preset default] [--features vgg16] [--vgg-weights PATH]
                                        [--repeats 5] [--threads 2] [--set field=value ...]

``--set`` overrides RefineConfig fields (``--set content_samples=1024 --set crop=256``), so the same
script profiles the schedule before and after a change. Parts of a step:

* ``pyramid``: collapse of the Laplacian pyramid to the texture (and its backward);
* ``vgg x``: the feature extractor on the texture being optimised (on the crop when ``crop`` is set),
  sampled at the content positions, forward + backward;
* ``vgg c``: the content texture's features at the same positions (no grad; per step only with a crop);
* ``remd``, ``moments``, ``colour``, ``content``: the loss terms, forward + backward, on hypercolumns;
* ``render``: the rendering term, forward + backward;
* ``sgd``: the optimiser step on the pyramid.

Prints the median over ``--repeats`` after one warm-up, and the sum = the cost of one step.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from pathlib import Path

import torch

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared" / "models" / "vgg16_imagenet_caffe_conv.pth"


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--features", default="vgg16")
    ap.add_argument("--vgg-weights", default=str(SHARED_VGG) if SHARED_VGG.exists() else None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", action="append", dest="sets", metavar="FIELD=VALUE")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    C = importlib.import_module("facerefiner.complete")
    from facerefiner import losses as L
    from facerefiner import render as R


    RF = importlib.import_module("facerefiner.refine")
    from facerefiner.features import get_extractor
    from facerefiner.io import load_image
    from facerefiner.layout import default_layout
    from facerefiner.pyramid import LaplacianTexture, collapse
    from facerefiner.reconstruct import reconstruct
    from facerefiner.sampling import grid_positions
    from facerefiner.unwrap import unwrap, uv_raster

    cfg = RF.apply_overrides(RF.preset(a.preset, features=a.features), a.sets or [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; preset {a.preset}; "
          f"features {a.features}; size {cfg.size}, steps {cfg.steps}, passes {cfg.passes}")
    stages = {}
    t0 = time.perf_counter()
    image = load_image(a.photo)
    stages["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    geo = reconstruct(image)
    stages["reconstruct"] = time.perf_counter() - t0
    layout = default_layout()
    t0 = time.perf_counter()
    uvr = uv_raster(layout, cfg.size)
    un = unwrap(image, geo, cfg.size, layout=layout, uvr=uvr)
    stages["unwrap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    initial = C.complete(un.texture, un.visibility, layout, uvr=uvr)
    stages["complete"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ext, _ = get_extractor(cfg.features, weights=a.vgg_weights, device=torch.device("cpu"))
    stages["features_load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    target = RF.render_target(image, geo, layout, cfg.render_side or 2 * cfg.size)
    render_mask = RF.render_mask_of(target, un.visibility if cfg.render_visible else None)
    stages["render_setup"] = time.perf_counter() - t0
    print("setup (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))

    gen = torch.Generator().manual_seed(0)
    S = cfg.size
    total_step = 0.0
    for si, nsteps in enumerate(cfg.steps):
        drop = cfg.num_scales - 1 - si
        s = S >> drop
        i_s = torch.where(un.visibility[None], un.texture, initial)[None]
        style_img, vis_s = RF._downsample_masked(i_s, un.visibility, s)
        valid_s = RF._valid_at(uvr.valid, s)
        crop = cfg.crop if cfg.crop is not None and cfg.crop < s else None
        t0 = time.perf_counter()
        with torch.no_grad():
            y = RF._style_samples(ext, style_img, vis_s, cfg, gen, crop)
            y_mom = L.feature_moments(y)
            search = L.NearestSearch(y, cfg.nn_dims, cfg.nn_candidates, generator=gen) if cfg.nn_dims else None
        t_style = time.perf_counter() - t0
        content_img = initial[None]
        with torch.no_grad():
            c_maps = ext.forward(RF._resize(content_img, s))
        tex = LaplacianTexture(content_img * 2 - 1, levels=cfg.levels)
        opt = torch.optim.SGD(tex.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        pos = grid_positions((s, s), cfg.content_samples, gen, mask=valid_s)
        x0 = RF._resize(content_img, s).clone()
        parts = {}

        def pyr():
            x = collapse(list(tex.pyramid)[drop:])
            x.sum().backward()

        parts["pyramid"] = _median_time(pyr, a.repeats)
        if crop:
            cpos = grid_positions((crop, crop), cfg.content_samples, gen)
            xc0 = x0[..., :crop, :crop].clone()

            def vggx():
                xx = xc0.clone().requires_grad_(True)
                f = ext.sample(ext.forward(xx), cpos)[0]
                f.square().mean().backward()

            def vggc():
                with torch.no_grad():
                    ext.sample(ext.forward(xc0), cpos)

            parts["vgg x"] = _median_time(vggx, a.repeats)
            parts["vgg c"] = _median_time(vggc, a.repeats)
        else:
            def vggx():
                xx = x0.clone().requires_grad_(True)
                f = ext.sample(ext.forward(xx), pos)[0]
                f.square().mean().backward()

            def vggc():
                with torch.no_grad():
                    ext.sample(c_maps, pos)

            parts["vgg x"] = _median_time(vggx, a.repeats)
            parts["vgg c"] = _median_time(vggc, a.repeats)
        with torch.no_grad():
            fx0 = ext.sample(ext.forward(x0 + 0.01 * torch.randn_like(x0)), pos)[0]
            fc = ext.sample(c_maps, pos)[0]

        def term(fn):
            def run():
                fx = fx0.clone().requires_grad_(True)
                fn(fx).backward()
            return run

        nch = cfg.moment_channels if cfg.moment_channels and cfg.moment_channels < y.shape[1] else None
        mch = (lambda: torch.randperm(y.shape[1], generator=gen)[:nch]) if nch else (lambda: None)
        parts["remd"] = _median_time(term(lambda fx: L.remd(fx, y, search=search)), a.repeats)
        parts["moments"] = _median_time(term(lambda fx: L.moment_loss(fx, y_moments=y_mom, channels=mch())),
                                        a.repeats)
        parts["colour"] = _median_time(term(lambda fx: L.color_loss(fx[:, :3], y[:, :3])), a.repeats)
        parts["content"] = _median_time(term(lambda fx: L.content_loss(fx, fc)), a.repeats)

        def rend():
            xx = x0.clone().requires_grad_(True)
            L.render_loss(R.render_cached(xx, target.cache), target.photo, render_mask).backward()

        parts["render"] = _median_time(rend, a.repeats)
        pyr()

        def sgd():
            opt.step()

        parts["sgd"] = _median_time(sgd, a.repeats)
        step = sum(parts.values())
        total_step += (step * nsteps + t_style) * cfg.passes
        print(f"scale {s}{' crop ' + str(crop) if crop else ''}: style target {t_style:.2f} s once; step {step:.3f} s = "
              + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    print(f"estimated optimisation: {total_step:.1f} s for {sum(cfg.steps) * cfg.passes} steps")


if __name__ == "__main__":
    main()
