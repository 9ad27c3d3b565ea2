"""Refine: the FaceRefiner optimisation (PAPER.md, "The optimisation").

The refined texture ``I_X`` starts as the content texture ``I_C`` and is optimised, parametrised as
a Laplacian pyramid (:class:`~facerefiner.pyramid.LaplacianTexture`), with SGD on

    loss = content_weight * content(I_X, I_C)                          (self-similarity)
         + style(I_X, I_S; content_weight, style_weight)               (REMD + moments + colour)
         + render_weight * L1(render(I_X), photo | eroded face mask)   (the paper's contribution)

over coarse-to-fine scales (one pyramid at the full size per pass; a coarse scale synthesises
only the coarser levels, at half the size per level left out, with all three weights multiplied
by ``coarse_factor`` per level left out, as in the authors' code), repeated for ``passes`` outer passes,
each restarting from the previous result as the new content texture with the content weight
divided and the rendering weight multiplied by 1.1.

Hypercolumns of ``I_X`` and ``I_C`` are read at the same ``content_samples`` positions (a strided
grid with a random offset inside the layout, new every step) and used by both the content and the
style terms, as in STROTSS. Style samples (``style_sets`` x ``style_samples``) are drawn once per
scale (and kept for the later passes: I_S does not change) inside the visibility mask, alternately
from the sampled texture and its left-right mirror image (the layout is symmetric, so the mirror
image is the other half of the face). The features of the style image are computed on ``I_S`` with
its holes filled from ``I_C`` (identical texels inside the mask; it keeps the black of the holes
out of the deep features near the mask's edge).

Speed options (off in the ``paper`` preset, see :class:`RefineConfig`): the features of a scale
larger than ``crop`` are computed on a random crop per step (centred on a hidden texel with
``keep_visible``), and only the ``crop_levels`` finest pyramid bands move there; the nearest
style sample of the REMD term is found with a random sketch (``nn_dims``); the covariance term
matches a random subset of ``moment_channels`` channels per step.

Quality options (also off in ``paper``): ``keep_visible`` puts the photo's texels back on the
visible region, ``render_visible`` counts the rendering term only where the render sees them, and
``keep_shading`` gives the hidden region I_C's low frequencies back, so that the refinement adds
detail without shifting the hidden side's colour.

The rendering term renders ``I_X`` through a rasterisation of the face region of the photo made
once per photo (geometry is fixed): per-pixel bilinear texture lookups, differentiable in ``I_X``.

The library is quiet: progress goes to an optional ``on_step`` callback, messages to ``logging``.

This module is the loop (:func:`refine_texture`) and the whole per-face refinement (:func:`refine`);
the settings and presets are in :mod:`facerefiner.presets`, what follows the optimisation (the
photo's texels kept on V, the shading kept, the lit texture, the export) in
:mod:`facerefiner.postprocess`. Their public names are importable from here too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import losses as L
from . import render as R
from .complete import extend_outside, lowpass
from .content import content_texture
from .errors import FaceRefinerError
from .features import FeatureExtractor, get_extractor
from .layout import UVLayout, default_layout
from .postprocess import is_grey, keep_shading, keep_visible_weight, lit_texture, upscale_texture, visible_blend_weight
from .presets import PRESETS, RefineConfig, apply_overrides, config_dict, preset
from .pyramid import LaplacianTexture, collapse
from .reconstruct import FaceGeometry
from .sampling import grid_positions, style_positions
from .unwrap import PhotoRaster, UnwrapResult, photo_raster, sample_side, unwrap, uv_raster

log = logging.getLogger(__name__)

__all__ = ["RefineConfig", "PRESETS", "preset", "RefineResult", "RenderTarget", "render_target", "render_mask_of",
           "refine_texture", "refine", "resolve_device", "is_grey", "visible_blend_weight", "keep_visible_weight",
           "keep_shading", "lowpass", "apply_overrides", "upscale_texture", "content_texture", "lit_texture",
           "config_dict"]




def resolve_device(name: str = "auto") -> torch.device:
    """``"cpu"``, ``"cuda"`` (an error when no GPU is usable) or ``"auto"`` (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FaceRefinerError("--device cuda: no CUDA GPU is available to this PyTorch (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise FaceRefinerError(f"--device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


@dataclass
class RenderTarget:
    """What the rendering term compares against: the face region of the photo, rasterised once.

    Attributes:
        photo: (1, 3, h, w) float32 RGB in [0, 1], the photo region.
        cache: :class:`~facerefiner.render.RasterCache` of the face mesh in that region.
        mask: (1, 1, h, w) bool, the rendered face mask eroded by ``kernel`` (minus untrusted pixels).
        kernel: the erosion kernel (region size / 20, odd).
    """

    photo: torch.Tensor
    cache: R.RasterCache
    mask: torch.Tensor
    kernel: int

    def to(self, device: torch.device) -> "RenderTarget":
        c = self.cache
        cache = R.RasterCache(index=c.index.to(device), uv=c.uv.to(device), size=c.size, padded=c.padded)
        return RenderTarget(self.photo.to(device), cache, self.mask.to(device), self.kernel)


def render_target(image: np.ndarray, geometry: FaceGeometry, layout: UVLayout, side: int,
                  mask: np.ndarray | None = None, raster: PhotoRaster | None = None) -> RenderTarget:
    """Rasterise the face into its photo region (long side at most ``side`` px).

    Args:
        image: (H, W, 3) uint8 RGB photo.
        mask: optional (H, W) bool, True where the photo is not to be trusted (left out of the loss).
        raster: optional precomputed :func:`facerefiner.unwrap.photo_raster` of ``geometry`` at ``side``
            (e.g. :attr:`UnwrapResult.raster`); rasterised here when absent or made for another side.
    """
    if raster is None or raster.side != int(side):
        raster = photo_raster(geometry, layout, side)
    region, rast = raster.region, raster.rast
    photo = torch.from_numpy(np.array(region.crop(np.asarray(image)))).permute(2, 0, 1)[None].float() / 255.0
    cache = R.prepare(rast, torch.as_tensor(layout.faces), layout.uv_tensor())
    covered = (rast[..., 3] > 0)[:, None]
    h, w = covered.shape[-2:]
    k = L.render_mask_kernel(max(h, w))
    m = L.erode_mask(covered, k)
    if mask is not None:
        bad = region.crop(np.asarray(mask, dtype=np.uint8) * 255) > 127
        m &= ~torch.from_numpy(np.ascontiguousarray(bad))[None, None]
    return RenderTarget(photo=photo, cache=cache, mask=m, kernel=k)


def render_mask_of(target: RenderTarget, visibility: torch.Tensor | None = None) -> torch.Tensor:
    """Where the rendering term counts: ``target.mask``, and with ``visibility`` ((S, S) bool V) only
    the pixels that see visible texels alone (:func:`facerefiner.render.visible_pixels`).

    Returns:
        (1, 1, h, w) bool on the target's device.
    """
    if visibility is None:
        return target.mask
    return target.mask & R.visible_pixels(visibility, target.cache)


def _downsample_masked(tex: torch.Tensor, vis: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, S, S) texture and (S, S) bool mask -> the texture at s x s averaged over visible texels
    only, and the texels of size s that are fully visible."""
    v = vis[None, None].to(tex.dtype)
    if tex.shape[-1] == s:
        return tex, vis
    va = F.interpolate(v, size=(s, s), mode="area")
    ta = F.interpolate(tex * v, size=(s, s), mode="area") / va.clamp_min(1e-6)
    return ta, va[0, 0] > 0.999


def _resize(tex: torch.Tensor, s: int) -> torch.Tensor:
    if tex.shape[-1] == s:
        return tex
    return F.interpolate(tex, size=(s, s), mode="bilinear", align_corners=False, antialias=s < tex.shape[-1])


def _valid_at(valid: torch.Tensor, s: int) -> torch.Tensor:
    """(S, S) bool layout coverage -> (s, s) texels that lie mostly inside the layout."""
    return F.interpolate(valid[None, None].float(), size=(s, s), mode="area")[0, 0] > 0.5




def _crop_origin(mask: torch.Tensor, c: int, gen: torch.Generator,
                 texels: torch.Tensor | None = None) -> tuple[int, int]:
    """Top-left corner of a c x c crop of an (s, s) mask, centred (where it fits) on a uniformly
    random True texel of the mask (any texel when it is empty). ``texels``: the mask's
    ``torch.nonzero`` on the CPU, when the caller draws many crops from one mask."""
    s = mask.shape[-1]
    nz = torch.nonzero(mask.cpu()) if texels is None else texels
    if nz.shape[0] == 0:
        cy, cx = (int(v) for v in torch.randint(0, s, (2,), generator=gen))
    else:
        cy, cx = (int(v) for v in nz[int(torch.randint(0, nz.shape[0], (1,), generator=gen))])
    clamp = lambda v: min(max(v - c // 2, 0), s - c)
    return clamp(cy), clamp(cx)


def _style_samples(extractor: FeatureExtractor, style_img: torch.Tensor, vis: torch.Tensor, config: RefineConfig,
                   gen: torch.Generator, crop: int | None) -> torch.Tensor:
    """The style hypercolumns y (sets x samples, C): sets alternately from the style image and its
    mirror image, inside the visibility mask; with ``crop``, each set from one crop of that size
    (centred on a random visible texel) so that the features see the same window as the texture's."""
    dev, dt = style_img.device, style_img.dtype
    if crop is None:
        sets = style_positions(vis, config.style_samples, config.style_sets, gen, device=dev, dtype=dt)
        maps_plain = extractor.forward(style_img)
        maps_mirror = extractor.forward(style_img.flip(-1))
        return torch.cat([extractor.sample(maps_mirror if mir else maps_plain, pos)[0] for pos, mir in sets])
    out = []
    for i in range(config.style_sets):
        mirrored = i % 2 == 1
        img = style_img.flip(-1) if mirrored else style_img
        m = vis.flip(-1) if mirrored else vis
        oy, ox = _crop_origin(m, crop, gen)
        mc = m[oy:oy + crop, ox:ox + crop]
        pos, _ = style_positions(mc if mc.any() else torch.ones_like(mc), config.style_samples, 1, gen,
                                 device=dev, dtype=dt)[0]
        out.append(extractor.sample(extractor.forward(img[..., oy:oy + crop, ox:ox + crop]), pos)[0])
    return torch.cat(out)



StepCallback = Callable[[dict[str, Any]], None]


def refine_texture(sampled: torch.Tensor, visibility: torch.Tensor, content: torch.Tensor,
                   target: RenderTarget | None, extractor: FeatureExtractor, config: RefineConfig,
                   valid: torch.Tensor, *, on_step: StepCallback | None = None,
                   history_every: int = 5, shading: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, list]]:
    """The optimisation itself, on tensors.

    Args:
        sampled: (3, S, S) float32 I_S in [0, 1] (values outside ``visibility`` ignored).
        visibility: (S, S) bool V.
        content: (3, S, S) float32 I_C in [0, 1], complete.
        target: the rendering term's target (:func:`render_target`), or None for no rendering
            term (the STROTSS ablation).
        extractor: hypercolumn features (:func:`~facerefiner.features.get_extractor`).
        config: the schedule and weights.
        valid: (S, S) bool texels inside the UV layout (content samples are drawn there).
        on_step: called after every step with ``{"pass", "scale", "step", "steps", "loss", ...}``.
        history_every: record the loss terms every this many steps.
        shading: optional (3, S, S) float32 per-texel Lambertian shading (:func:`facerefiner.light.shading`
            of the texel normals), >= 0: the texture is then an albedo, the inputs are de-lit, and
            the rendering term compares render(texture x shading) with the photo.

    Returns:
        ``(texture, history)``: (3, S, S) float32 I_X in [0, 1] on the inputs' device (grey,
        R = G = B, when the visible I_S and I_C are both grey: :func:`is_grey`), and the
        sampled loss curves ``{"pass": [...], "scale": [...], "step": [...], "content": [...],
        "style": [...], "render": [...], "total": [...], ...}``.
    """
    device = sampled.device
    S = sampled.shape[-1]
    gen = torch.Generator().manual_seed(int(config.seed))
    i_s = torch.where(visibility[None], sampled, content)[None]  # holes filled (see module doc)
    grey = is_grey(sampled, visibility) and is_grey(content, valid)
    current = content[None].clone()
    hist: dict[str, list] = {k: [] for k in ("pass", "scale", "step", "total", "content", "style", "render",
                                             "remd", "moment", "color")}
    cw, rw = float(config.content_weight), float(config.render_weight)
    nsc = config.num_scales
    style_cache: dict[int, tuple] = {}
    render_mask = None if target is None else render_mask_of(target, visibility if config.render_visible else None)
    for p in range(config.passes):
        content_img = current.clone()
        # One pyramid at full size per pass, in the [-1, 1] range of the authors' code (so that the
        # SGD learning rate means the same); a coarse scale synthesises only its coarser levels.
        tex = LaplacianTexture(current * 2.0 - 1.0, levels=config.levels)
        if config.optimizer == "adam":
            opt = torch.optim.Adam(tex.parameters(), lr=config.lr, betas=(config.momentum, 0.999))
        else:
            opt = torch.optim.SGD(tex.parameters(), lr=config.lr, momentum=config.momentum)
        for si, nsteps in enumerate(config.steps):
            drop = nsc - 1 - si  # finest bands left out at this scale
            f = float(config.coarse_factor) ** drop
            s = S >> drop
            if nsteps == 0:
                continue
            crop = config.crop if config.crop is not None and config.crop < s else None
            with torch.no_grad():
                style_img, vis_s = _downsample_masked(i_s, visibility, s)
                valid_s = _valid_at(valid, s)
                content_s = _resize(content_img, s)
                shade_s = None if shading is None else _resize(shading[None].to(device), s)
                c_maps = None if crop else [m.detach() for m in extractor.forward(content_s)]
                if si not in style_cache:  # I_S does not change between passes
                    y = _style_samples(extractor, style_img, vis_s if vis_s.any() else valid_s, config, gen, crop)
                    search = None
                    if config.nn_dims is not None:
                        search = L.NearestSearch(y, config.nn_dims, config.nn_candidates, generator=gen)
                    style_cache[si] = (y, L.feature_moments(y), search)
                y, y_mom, search = style_cache[si]
                centres = valid_s
                if crop and config.keep_visible:
                    # the visible interior is replaced by I_S at the end: crops go where the texture
                    # is made, the hidden region (with the boundary and some visible context)
                    hidden = valid_s & ~vis_s
                    centres = hidden if hidden.any() else valid_s
                centre_texels = torch.nonzero(centres.cpu()) if crop else None  # once per scale
            # with crop_levels, the bands coarser than that get no gradient at a cropped scale (SGD and
            # Adam skip parameters without one), and the backward pass does not compute it
            frozen_from = drop + config.crop_levels if crop and config.crop_levels is not None else len(tex.pyramid)
            for i, band in enumerate(tex.pyramid):
                band.requires_grad_(i < frozen_from)
            for it in range(nsteps):
                opt.zero_grad(set_to_none=True)
                x = (collapse(list(tex.pyramid)[drop:]) + 1.0) * 0.5
                if crop:
                    oy, ox = _crop_origin(centres, crop, gen, centre_texels)
                    win = (Ellipsis, slice(oy, oy + crop), slice(ox, ox + crop))
                    pos = grid_positions((crop, crop), config.content_samples, gen, mask=valid_s[win[1:]],
                                         device=device, dtype=x.dtype)
                    fx = extractor.sample(extractor.forward(x[win]), pos)[0]
                    with torch.no_grad():
                        fc = extractor.sample(extractor.forward(content_s[win]), pos)[0]
                else:
                    pos = grid_positions((s, s), config.content_samples, gen, mask=valid_s, device=device,
                                         dtype=x.dtype)
                    fx = extractor.sample(extractor.forward(x), pos)[0]
                    fc = extractor.sample(c_maps, pos)[0]
                mch = None
                if config.moment_channels is not None and config.moment_channels < fx.shape[1]:
                    mch = torch.randperm(fx.shape[1], generator=gen)[:config.moment_channels].to(device)
                l_content = L.content_loss(fx, fc) * (cw * f)
                l_style, parts = L.style_loss(fx, y, cw * f, config.style_weight * f, y_moments=y_mom,
                                              search=search, moment_channels=mch)
                total = l_content + l_style
                l_render = torch.zeros((), device=device)
                if target is not None and rw > 0:
                    img = R.render_cached(x if shade_s is None else x * shade_s, target.cache)
                    l_render = L.render_loss(img, target.photo, render_mask) * (rw * f)
                    total = total + l_render
                total.backward()
                opt.step()
                rec = {"pass": p, "scale": s, "step": it, "steps": nsteps, "total": float(total.detach()),
                       "content": float(l_content.detach()), "style": float(l_style.detach()),
                       "render": float(l_render.detach()), **parts}
                if it % history_every == 0 or it == nsteps - 1:
                    for k in hist:
                        hist[k].append(rec[k])
                if on_step is not None:
                    on_step(rec)
        with torch.no_grad():
            current = ((tex() + 1.0) * 0.5).clamp_(0.0, 1.0)
        cw /= config.pass_decay
        rw *= config.pass_decay
    out = current[0]
    width = config.keep_visible_feather * S
    a = keep_visible_weight(visibility, width) if config.keep_visible or config.keep_shading else None
    if config.keep_shading is not None:
        out = keep_shading(out, content, visibility, valid, config.keep_shading * S, width, weight=a)
    if grey:
        # nothing the texture is made from has colour (a black-and-white photo and a grey I_C): the
        # deep features and the colour term otherwise leave faint tints (cyan in eye creases, pink
        # on cheeks) that a grey photo cannot have
        out = out.mean(0, keepdim=True).expand_as(out)
    if config.keep_visible:
        out = a * i_s[0] + (1.0 - a) * out
    vnp = valid.cpu().numpy()
    filled = extend_outside(out.permute(1, 2, 0).cpu().numpy(), vnp)  # no junk past the layout edge
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1).to(device).contiguous(), hist


@dataclass
class RefineResult:
    """Output of :func:`refine` (all textures (3, S, S) float32 RGB in [0, 1], on the CPU).

    Attributes:
        texture: the refined complete texture I_X.
        sampled: the sampled texture I_S (0 where not visible) and ``visibility`` (S, S) bool V.
        initial: the content texture I_C the optimisation started from.
        geometry: the face.
        history: sampled loss curves (see :func:`refine_texture`).
        features: which extractor and weights were used (``get_extractor``'s info).
        timings: seconds per stage.
        config: the settings used.
    """

    texture: torch.Tensor
    sampled: torch.Tensor
    visibility: torch.Tensor
    initial: torch.Tensor
    geometry: FaceGeometry
    history: dict[str, list]
    features: dict[str, Any]
    timings: dict[str, float]
    config: RefineConfig
    device: str = "cpu"
    unwrapped: UnwrapResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    albedo: Any = None
    """With ``refine(delight=True)`` and a light found: the refined albedo
    (:class:`facerefiner.light.AlbedoResult`); ``texture`` is then that albedo under the photo's
    light beyond V (and I_S on V)."""


def refine(image: np.ndarray, geometry: FaceGeometry | None = None, *, config: RefineConfig | None = None,
           content: torch.Tensor | None = None, mask: np.ndarray | None = None,
           extractor: tuple[FeatureExtractor, dict] | None = None, layout: UVLayout | None = None,
           device: str = "auto", render: bool = True, vgg_weights: str | Path | None = None,
           vgg_format: str = "auto", on_step: StepCallback | None = None,
           unwrapped: UnwrapResult | None = None, prior: Any = None, delight: bool = False,
           source: str = "photo") -> RefineResult:
    """One photo in, a refined complete texture out.

    Args:
        image: (H, W, 3) uint8 RGB photo (:func:`facerefiner.load_image`).
        geometry: the face (default: :func:`facerefiner.reconstruct` of the largest face).
        config: settings (default: ``PRESETS["default"]``).
        content: optional (3, S', S') float I_C in [0, 1] in this project's layout (resampled to S);
            default: the project's own completion (:func:`facerefiner.complete.complete`).
        mask: optional (H, W) bool, True where the photo is not to be trusted.
        extractor: a prebuilt ``get_extractor(...)`` result (reuse it across photos).
        device: ``cpu``, ``cuda`` or ``auto``.
        render: False drops the rendering term (the STROTSS ablation).
        on_step: progress callback (see :func:`refine_texture`).
        unwrapped: a precomputed :func:`facerefiner.unwrap` of this photo at ``config.size``.
        prior: an optional :class:`facerefiner.prior.TexturePrior`: the structure of hidden eyes,
            brows, lips and nose without a visible mirror comes from it (:func:`facerefiner.prior.fit`;
            entries made from this very photo are left out). Only with the default content texture.
        delight: refine in albedo space (the default content texture only): the photo's light is
            estimated (:func:`facerefiner.light.albedo_inputs`), I_S and I_C are de-lit, and the
            rendering term compares render(albedo x shading) with the photo. ``RefineResult.albedo``
            is the refined albedo and ``texture`` the lit texture: I_S on V, the albedo under the
            photo's light beyond. When no light is found, the refinement runs on the lit texture
            as without ``delight`` and ``extra["light"]`` says why (``{"skipped": reason}``).
        source: the photo's name for error messages.

    The synthesis is recorded in ``RefineResult.extra["synthesis"]``: whether detail was added,
    the prior's entries and weights, the share of each facial feature hidden without a mirror
    (``hidden_features``), and a ``notice`` when an eye, a brow or the lips were mostly hidden so
    and filled without a prior.
    """
    from .reconstruct import reconstruct

    cfg = config or PRESETS["default"]
    layout = layout or default_layout()
    dev = resolve_device(device)
    t = {}
    t0 = time.perf_counter()
    geo = geometry or reconstruct(image)
    t["reconstruct"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    uvr = uv_raster(layout, cfg.size)
    un = unwrapped or unwrap(image, geo, cfg.size, layout=layout, mask=mask, uvr=uvr)
    t["unwrap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    synthesis: dict[str, Any] = {"detail": bool(cfg.detail and content is None)}
    extra: dict[str, Any] = {}
    inputs = None
    if delight and content is None:
        from .errors import InputError
        from .light import albedo_inputs

        try:
            inputs = albedo_inputs(image, un, geo, layout, uvr=uvr, detail=cfg.detail, seed=cfg.seed, prior=prior,
                                   source=source)
            if inputs is None:
                extra["light"] = {"skipped": NO_LIGHT}
        except InputError as e:  # a nearly black face: refined as it is, without albedo
            extra["light"] = {"skipped": str(e), "error": True}
        t["light"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    if inputs is not None:
        synthesis = inputs.synthesis
    elif content is None:
        initial, synthesis = content_texture(image, un, layout, uvr, detail=cfg.detail, seed=cfg.seed, prior=prior)
    else:
        initial = prepare_content(content, cfg.size, uvr.valid)
    t["complete"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ext, info = extractor or get_extractor(cfg.features, weights=vgg_weights, weights_format=vgg_format, device=dev)
    t["features_load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    side = cfg.render_side or sample_side(cfg.size)
    target = render_target(image, geo, layout, side, mask, raster=un.raster).to(dev) if render else None
    t["render_setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    albedo = None
    if inputs is None:
        tex, hist = refine_texture(un.texture.to(dev), un.visibility.to(dev), initial.to(dev), target, ext, cfg,
                                   uvr.valid.to(dev), on_step=on_step)
    else:
        from .light import AlbedoResult

        alb, hist = refine_texture(inputs.sampled.to(dev), inputs.visibility.to(dev), inputs.initial.to(dev), target,
                                   ext, cfg, uvr.valid.to(dev), on_step=on_step, shading=inputs.shading.to(dev))
        width = cfg.keep_visible_feather * cfg.size
        initial = lit_texture(inputs.initial, inputs.shading, un.texture, un.visibility, uvr.valid, width)
        tex = lit_texture(alb.cpu(), inputs.shading, un.texture, un.visibility, uvr.valid,
                          width if cfg.keep_visible else None)
        albedo = AlbedoResult(albedo=alb.cpu(), light=inputs.light, visibility=inputs.visibility,
                              normals=inputs.normals)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t["optimise"] = time.perf_counter() - t0
    return RefineResult(texture=tex.cpu(), sampled=un.texture, visibility=un.visibility, initial=initial.cpu(),
                        geometry=geo, history=hist, features=info, timings=t, config=cfg, device=str(dev),
                        unwrapped=un, extra={"synthesis": synthesis, **extra}, albedo=albedo)


#: ``extra["light"]["skipped"]`` when no plausible light is found.
NO_LIGHT = ("no light estimated: too little skin seen, or no plausible light fits it (the skin seen is darker "
            "at its edges than a light makes it: hair or shadows the occlusion step missed)")








def prepare_content(content: torch.Tensor, size: int, valid: torch.Tensor) -> torch.Tensor:
    """A user's content texture (3, h, w) float in [0, 1] -> (3, S, S), resampled, border-extended
    outside the layout."""
    c = content.float()
    if c.dim() != 3 or c.shape[0] != 3:
        raise ValueError(f"content: expected a (3, H, W) texture, got {tuple(c.shape)}")
    if tuple(c.shape[-2:]) != (size, size):
        c = F.interpolate(c[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=c.shape[-1] > size)[0]
    filled = extend_outside(c.permute(1, 2, 0).numpy(), valid.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1).clamp(0, 1).contiguous()


