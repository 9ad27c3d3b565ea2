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
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import losses as L
from . import render as R
from .complete import complete, extend_outside, lowpass
from .errors import FaceRefinerError
from .features import FeatureExtractor, get_extractor
from .layout import UVLayout, default_layout
from .pyramid import LaplacianTexture, collapse
from .reconstruct import FaceGeometry
from .sampling import grid_positions, style_positions
from .unwrap import PhotoRaster, UnwrapResult, photo_raster, sample_side, unwrap, uv_raster

log = logging.getLogger(__name__)

__all__ = ["RefineConfig", "PRESETS", "preset", "RefineResult", "RenderTarget", "render_target", "render_mask_of",
           "refine_texture", "refine", "resolve_device", "is_grey", "visible_blend_weight", "keep_visible_weight",
           "keep_shading", "lowpass", "apply_overrides", "upscale_texture", "content_texture", "lit_texture"]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the refinement (every field is recorded in ``report.json``)."""

    size: int = 512
    """Texture size S of the output (S x S texels)."""
    steps: tuple[int, ...] = (150, 150)
    """SGD steps at each scale, coarse to fine; scale k of n works at size / 2**(n - 1 - k) texels
    (two scales at S = 512: 256 then 512), synthesised from the coarser pyramid levels only."""
    passes: int = 5
    """Outer passes; each restarts from the previous result as the new content texture."""
    content_weight: float = 8.0
    """Weight of the self-similarity content term (divided by ``pass_decay`` every pass)."""
    style_weight: float = 1.7
    """Weight of the style term (REMD + moments + colour)."""
    render_weight: float = 20.0
    """Weight of the rendering L1 term (multiplied by ``pass_decay`` every pass)."""
    pass_decay: float = 1.1
    """Per-pass factor: content weight / pass_decay, rendering weight * pass_decay."""
    coarse_factor: float = 2.0
    """All weights are multiplied by this at every scale but the last."""
    optimizer: str = "sgd"
    """Optimiser of the pyramid levels: sgd (the paper's, with momentum) or adam."""
    lr: float = 0.3
    """Learning rate."""
    momentum: float = 0.9
    """SGD momentum (Adam's beta1)."""
    levels: int = 5
    """Laplacian pyramid levels of the parametrisation."""
    content_samples: int = 2048
    """Hypercolumn samples of I_X (and I_C) per step."""
    style_samples: int = 1000
    """Style samples per set."""
    style_sets: int = 5
    """Style sample sets, alternately from I_S and its mirror image."""
    render_side: int | None = None
    """Long side (px) of the photo region the rendering term compares against (default: unwrap's, ``facerefiner.unwrap.sample_side`` = 2 S, whose raster it then reuses)."""
    features: str = "auto"
    """Feature extractor: vgg16, patches or auto (vgg16 when weights resolve, else patches)."""
    seed: int = 0
    """Random seed (sample positions): same seed, photo and machine -> same texture."""
    keep_visible: bool = False
    """Put the sampled texture I_S back on the visible region at the end, and blend from I_C to the
    refined texture across a band of the hidden region just outside it (:func:`keep_visible_weight`):
    on V the back-projected photo is already the best texture (unwrap's round trip is >= 39 dB) and
    the style term only costs fidelity; the refinement supplies the hidden region. False = the
    optimisation's raw I_X (the paper)."""
    keep_visible_feather: float = 1 / 64
    """Width of that band, as a fraction of the texture size (1/64: 8 texels at S = 512)."""
    crop: int | None = None
    """Side (texels) of a random square crop the features are computed on at each step, at every
    scale larger than it (the content samples of the step are drawn inside it, the content features
    are those of the same crop of I_C, and the style samples come from crops of the same size, so
    that the network sees the same kind of window everywhere). With ``keep_visible`` the crops are
    centred on hidden texels (the visible interior is replaced by I_S at the end anyway).
    None: the whole texture (the paper)."""
    nn_dims: int | None = None
    """Approximate nearest-style-sample search for the REMD term: random projection to this many
    dimensions, then exact among ``nn_candidates`` (losses.NearestSearch). None: exact search."""
    nn_candidates: int = 8
    """Candidates re-ranked exactly per sample by the approximate search."""
    moment_channels: int | None = None
    """Channels (random per step) whose covariance the moment term matches. None: all (the paper)."""
    crop_levels: int | None = None
    """At scales whose features are computed on crops, update only this many of the finest pyramid
    bands (the coarser bands, shared by texels far outside any one crop, keep what the full-view
    scales before made of them). None: all bands."""
    render_visible: bool = False
    """Count the rendering term only on the pixels that see visible texels alone (V rendered >= 0.999,
    the pixels the visible-fidelity metric compares), not on the whole eroded face mask. The mask
    also covers the far cheek at grazing angles, where the photo is smeared or shows hair and
    background past a slightly wide mesh outline: there the term pulls hidden texels towards
    those colours (a green patch beside the mouth of deca_exp_1). False: the eroded render mask
    alone (the paper)."""
    keep_shading: float | None = None
    """Give the hidden region I_C's low frequencies (its brightness, colour and shading) back at the
    end: I_X + G_sigma * (I_C - I_X) there (:func:`keep_shading`), with sigma this fraction of the
    texture size, feathered to nothing on V like ``keep_visible``; the refinement then supplies only
    the detail finer than sigma. The style term is global: it pulls the hidden region's colour
    towards the statistics of the whole visible face (hidden cheeks a few levels brighter than
    their truth: completion PSNR worse than I_C on 14 of 19 photos, BENCHMARKS.md), where I_C's
    fill, lit by the photo's texels around the hole, is the better estimate. None: off (the paper,
    whose content texture is a morphable model's albedo with no shading of its own)."""

    detail: bool = False
    """Start from a content texture whose hidden texels without a visible mirror carry fine detail
    made of the person's own visible skin (:func:`facerefiner.complete.synthesize_detail`), not a
    smooth Poisson fill: the optimisation's short schedules barely move away from its start, so the
    detail has to be there already (the refinement then makes it coherent). False: the smooth fill
    (the paper, whose content texture is a morphable model's albedo)."""

    def __post_init__(self) -> None:
        if not self.steps or len(self.steps) > self.levels + 1:
            raise ValueError(f"steps {self.steps}: one entry per scale, 1 to levels + 1 = {self.levels + 1} scales")
        if min(self.scales) < 16:
            raise ValueError(f"texture sizes must be at least 16, got scales {self.scales} for size {self.size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.passes < 1 or any(n < 0 for n in self.steps):
            raise ValueError("passes must be >= 1 and steps >= 0")
        if self.crop is not None and self.crop < 32:
            raise ValueError(f"crop must be at least 32 texels (or None), got {self.crop}")
        if (self.nn_dims is not None and self.nn_dims < 1) or self.nn_candidates < 1:
            raise ValueError("nn_dims (or None) and nn_candidates must be >= 1")
        if self.crop_levels is not None and self.crop_levels < 1:
            raise ValueError(f"crop_levels must be >= 1 (or None), got {self.crop_levels}")
        if self.keep_shading is not None and not 0.0 < self.keep_shading <= 0.25:
            raise ValueError(f"keep_shading must be in (0, 0.25] (a fraction of the size) or None, "
                             f"got {self.keep_shading}")
        if self.moment_channels is not None and self.moment_channels < 2:
            raise ValueError(f"moment_channels must be >= 2 (or None), got {self.moment_channels}")

    @property
    def num_scales(self) -> int:
        return len(self.steps)

    @property
    def scales(self) -> tuple[int, ...]:
        """Texture size at each scale, coarse to fine."""
        n = len(self.steps)
        return tuple(self.size >> (n - 1 - k) for k in range(n))


#: Named presets. ``paper`` is the authors' literal schedule; ``default`` the everyday one (fast on
#: a CPU: fewer steps, features of the finest scale on 256-texel crops, approximate style search,
#: covariance on 512 random channels per step); ``quick`` a smoke-test schedule (seconds, low quality).
PRESETS: dict[str, RefineConfig] = {
    "paper": RefineConfig(lr=0.03),
    # issue "fast": median 49-51 s per face at 512 on a 2-core CPU (BENCHMARKS.md); every speed option
    # measured against the previous default (60 + 20 steps x 2 passes, full texture, exact losses)
    "default": RefineConfig(steps=(40, 12), passes=1, lr=0.03, keep_visible=True, content_samples=1024,
                            crop=256, crop_levels=1, nn_dims=128, nn_candidates=8, moment_channels=512,
                            render_visible=True, keep_shading=1 / 128, detail=True),
    "quick": RefineConfig(size=128, steps=(20, 20), passes=1, lr=0.03, content_samples=512, style_samples=256,
                          keep_visible=True, render_visible=True, detail=True),
}


def preset(name: str, **overrides: Any) -> RefineConfig:
    """A preset with some fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **overrides)


def apply_overrides(cfg: RefineConfig, items: "list[str] | tuple[str, ...]") -> RefineConfig:
    """``cfg`` with fields replaced from ``FIELD=VALUE`` strings (for benchmark variants).

    Values are parsed by the field's current type: int, float, bool (1/true/yes), tuples of ints
    (``60,20``), ``none`` for an optional field. Raises ValueError naming a bad field or value."""
    names = {f.name for f in fields(cfg)}
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in names:
            raise ValueError(f"{item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(names))}")
        cur = getattr(cfg, key)
        try:
            if raw.lower() == "none":
                val: Any = None
            elif isinstance(cur, bool):
                val = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(cur, tuple):
                val = tuple(int(v) for v in raw.split(","))
            elif isinstance(cur, float):
                val = float(raw)
            elif isinstance(cur, int) or (cur is None and raw.lstrip("-").isdigit()):
                val = int(raw)
            else:
                val = raw
        except ValueError:
            raise ValueError(f"{item!r}: bad value for {key} (currently {cur!r})") from None
        out[key] = val
    return replace(cfg, **out)


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


def _feather(region: torch.Tensor, width: float, beyond_edge: bool = False) -> np.ndarray:
    """(S, S) bool region -> (S, S) float32 smoothstep of the Euclidean distance (in texels) from
    outside the region, divided by ``width`` and clipped to [0, 1]: 0 outside, 1 deep inside.
    ``beyond_edge``: whether the texels past the image edge count as inside the region."""
    import cv2

    r = region.cpu().numpy().astype(np.uint8)
    d = cv2.distanceTransform(np.pad(r, 1, constant_values=int(beyond_edge)), cv2.DIST_L2, 5)[1:-1, 1:-1]
    t = np.clip(d / max(float(width), 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def visible_blend_weight(visibility: torch.Tensor, width: float) -> torch.Tensor:
    """Weight of a sampled texture blended over the visible region from the inside (used by
    :func:`upscale_texture` for the photo's texels at an export size).

    Args:
        visibility: (S, S) bool V.
        width: feather width in texels.

    Returns:
        (S, S) float32 in [0, 1] on V's device: 0 outside V, rising smoothly to 1 at ``width``
        texels inside V's boundary (a Euclidean distance transform, smoothstep).
    """
    return torch.from_numpy(_feather(visibility, width)).to(visibility.device)


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


#: A texture is grey when 99 % of its texels have channels within this of each other (2/255 leaves
#: room for JPEG rounding; over the whole photos of the dev set the 99th percentile of the channel
#: spread is 0 for the black-and-white deca_exp_2 and 47 to 146 levels for every colour photo).
GREY_SPREAD = 2.0 / 255.0


def is_grey(texture: torch.Tensor, mask: torch.Tensor | None = None) -> bool:
    """Whether a texture has no colour.

    Args:
        texture: (3, S, S) float RGB in [0, 1].
        mask: optional (S, S) bool, the texels to look at (default all).

    Returns:
        True when the 99th percentile of ``max - min`` over the channels is at most
        :data:`GREY_SPREAD` (False for an empty mask).
    """
    spread = texture.amax(0) - texture.amin(0)
    if mask is not None:
        spread = spread[mask]
    if spread.numel() == 0:
        return False
    flat = spread.flatten().float()
    flat = flat[:: max(1, flat.numel() // 1_000_000)]  # torch.quantile takes at most 2**24 values
    return float(torch.quantile(flat, 0.99)) <= GREY_SPREAD


def keep_shading(texture: torch.Tensor, content: torch.Tensor, visibility: torch.Tensor, valid: torch.Tensor,
                 sigma: float, width: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The texture with the hidden region's low frequencies replaced by the content texture's
    (``RefineConfig.keep_shading``).

    Args:
        texture: (3, S, S) float I_X in [0, 1].
        content: (3, S, S) float I_C in [0, 1], same dtype and device.
        visibility: (S, S) bool V.
        valid: (S, S) bool texels inside the layout (the blur stays inside it).
        sigma: Gaussian sigma in texels.
        width: feather width in texels: the correction is 0 on V and reaches full strength ``width``
            texels outside it (:func:`keep_visible_weight`'s complement).
        weight: ``keep_visible_weight(visibility, width)`` when the caller has it already (opt-in).

    Returns:
        (3, S, S) tensor: ``texture + (1 - a) * G_sigma * (content - texture)`` clipped to [0, 1],
        with ``a = keep_visible_weight(visibility, width)``: on the hidden region its blur equals the
        content's, only the detail finer than sigma is the texture's own.
    """
    a = (keep_visible_weight(visibility, width) if weight is None else weight).to(texture.dtype)
    return (texture + (1.0 - a) * lowpass(content - texture, valid, sigma)).clamp(0.0, 1.0)


def keep_visible_weight(visibility: torch.Tensor, width: float) -> torch.Tensor:
    """Weight of the photo's texture (I_S on V, I_C beyond it) in the final blend (``keep_visible``).

    Args:
        visibility: (S, S) bool V.
        width: feather width in texels.

    Returns:
        (S, S) float32 in [0, 1] on V's device: exactly 1 on V, falling smoothly to 0 at ``width``
        texels outside V (a Euclidean distance transform of the complement, smoothstep). The visible
        region is left exactly as unwrapped (no fidelity is lost there), and the refined texture
        takes over across a band of the hidden region where I_C, seamless with I_S by construction,
        carries the transition.
    """
    hidden = _feather(~visibility, width, beyond_edge=True)  # 0 on V, 1 from ``width`` texels outside it
    return torch.from_numpy(1.0 - hidden).to(visibility.device)


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


def lit_texture(albedo: torch.Tensor, shading: torch.Tensor, sampled: torch.Tensor, visibility: torch.Tensor,
                valid: torch.Tensor, width: float | None) -> torch.Tensor:
    """The lit texture of a refinement in albedo space: the photo's texels on V, the albedo under
    the photo's light (albedo x shading) beyond, blended across ``width`` texels outside V as the
    lit refinement blends (:func:`keep_visible_weight`); ``width`` None: albedo x shading everywhere.

    Args:
        albedo: (3, S, S) float32 in [0, 1].
        shading: (3, S, S) float32 >= 0.
        sampled: (3, S, S) float32 I_S (ignored outside ``visibility``).
        visibility: (S, S) bool V.
        valid: (S, S) bool texels inside the layout.

    Returns:
        (3, S, S) float32 in [0, 1] on the CPU, the border colours extended outside the layout.
    """
    lit = (albedo.detach().float().cpu() * shading.cpu()).clamp(0.0, 1.0)
    if width is not None:
        vis = visibility.cpu()
        a = keep_visible_weight(vis, width)
        i_s = torch.where(vis[None], sampled.detach().float().cpu(), lit)
        lit = a * i_s + (1.0 - a) * lit
    filled = extend_outside(lit.permute(1, 2, 0).numpy().astype(np.float64), valid.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1).float().contiguous()


#: A notice is given when more than this share of an eye's, a brow's or the lips' texels is hidden
#: with no visible mirror and no prior is given (on the 19 dev photos without a mask the most is
#: 0.35, a turned face's far eye corner, at S = 128 and 512; under the sunglasses probe both eyes are at 1.0).
HIDDEN_FEATURE_NOTICE = 0.5
#: The features the notice names (the nose's underside is never seen, so it is left out).
NOTICE_FEATURES = {"LEFT_EYE": "the left eye", "RIGHT_EYE": "the right eye", "LEFT_EYEBROW": "the left brow",
                   "RIGHT_EYEBROW": "the right brow", "LIPS": "the lips"}


def synthesis_report(visibility: torch.Tensor, layout: UVLayout, uvr: Any) -> dict[str, float]:
    """Share of each facial feature's texels (:func:`facerefiner.layout.feature_masks`) that are
    hidden and whose mirror texel is hidden too (what only a prior can give structure)."""
    from .complete import mirror_texture, mirror_uv
    from .layout import feature_masks

    S = visibility.shape[-1]
    feats = feature_masks(layout, S)
    if not feats or layout.mirror is None:
        return {}
    valid = uvr.valid.cpu()
    vis = visibility.cpu() & valid
    lost = valid & ~vis & ~(mirror_texture(vis[None].float(), mirror_uv(layout, S, uvr))[0] > 0.999)
    out = {}
    for name, m in feats.items():
        m = torch.as_tensor(np.array(m)) & valid  # (the cached masks are read-only)
        out[name] = round(float((m & lost).sum()) / max(1.0, float(m.sum())), 4)
    return out


def content_texture(image: np.ndarray, unwrapped: UnwrapResult, layout: UVLayout, uvr: Any, *, detail: bool,
                    seed: int = 0, prior: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The project's content texture I_C for one photo: the Poisson completion, with the hidden
    region synthesised when ``detail`` (the person's skin grain) and ``prior`` (structure of hidden
    features; entries of this very photo, found by its pixel digest, are left out).

    Args:
        image: (H, W, 3) uint8 RGB photo (for its digest).
        unwrapped: the photo's :func:`facerefiner.unwrap` at the texture size.
        uvr: the layout's :func:`facerefiner.unwrap.uv_raster` at that size.

    Returns:
        ``(initial, synthesis)``: (3, S, S) float32 I_C in [0, 1] and the record of what was done
        (``detail``, ``hidden_features`` per feature, ``prior``'s entries, or a ``notice``).
    """
    synthesis: dict[str, Any] = {"detail": bool(detail)}
    hidden = synthesis_report(unwrapped.visibility, layout, uvr)
    synthesis["hidden_features"] = hidden
    lost = [NOTICE_FEATURES[k] for k, v in hidden.items() if k in NOTICE_FEATURES and v > HIDDEN_FEATURE_NOTICE]
    guide = None
    if prior is not None:
        from .prior import fit, photo_digest

        img, where, info = fit(prior, unwrapped.texture, unwrapped.visibility, uvr.valid,
                               exclude=[photo_digest(image)])
        guide = (img, where)
        synthesis["prior"] = info
    elif lost:
        synthesis["notice"] = (f"{', '.join(lost)} {'is' if len(lost) == 1 else 'are'} hidden on both sides and "
                               "filled without a prior (as skin); --prior FILE gives them structure "
                               "(facerefiner prior build)")
    initial = complete(unwrapped.texture, unwrapped.visibility, layout, uvr=uvr, detail=detail, seed=seed,
                       guide=guide)
    return initial, synthesis


def upscale_texture(image: np.ndarray, geometry: FaceGeometry, texture: torch.Tensor, size: int, *,
                    layout: UVLayout | None = None, mask: np.ndarray | None = None,
                    feather: float = 1 / 64) -> torch.Tensor:
    """The refined texture at a larger export size, with the photo's own detail where it has it.

    I_X is upsampled (bicubic) to ``size``; the photo is unwrapped again at ``size`` and its texels
    blended over the visible region, feathered inwards from the visibility boundary over
    ``feather * size`` texels (as ``keep_visible``); outside the layout the border is extended.

    Args:
        image: (H, W, 3) uint8 RGB photo.
        texture: (3, S, S) float32 I_X in [0, 1].
        size: export size (texels), usually 1024 or 2048.
        mask: optional (H, W) bool, True where the photo is not to be trusted.

    Returns:
        (3, size, size) float32 RGB in [0, 1] on the CPU.
    """
    layout = layout or default_layout()
    uvr = uv_raster(layout, size)
    un = unwrap(image, geometry, size, layout=layout, mask=mask, uvr=uvr)
    up = F.interpolate(texture.detach().float().cpu()[None], size=(size, size), mode="bicubic",
                       align_corners=False)[0].clamp_(0.0, 1.0)
    a = visible_blend_weight(un.visibility, feather * size)
    out = a * un.texture + (1.0 - a) * up
    filled = extend_outside(out.permute(1, 2, 0).numpy(), uvr.valid.numpy())
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()


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


def config_dict(cfg: RefineConfig) -> dict[str, Any]:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    d["scales"] = list(cfg.scales)
    return d
