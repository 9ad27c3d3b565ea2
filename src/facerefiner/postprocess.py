"""After the optimisation: keeping the photo's own texels on V (feathered), the content's low
frequencies in the hidden region, the lit texture from the refined albedo, the export at a
larger size; and the grey test. The loop is :mod:`facerefiner.refine`."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from .complete import extend_outside, lowpass
from .layout import UVLayout, default_layout
from .reconstruct import FaceGeometry
from .unwrap import unwrap, uv_raster

log = logging.getLogger(__name__)


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



#: Beyond V the lit texture's shading is no darker than this quantile of the shading over V (per
#: channel): the photo's light leaves the far side of a whole head (its back, under a frontal key
#: light) nearly black, a colour the photo never shows; a viewer without lights would show it so
#: (deca_exp_1 on the ICT head: a third of its hidden skin texels came out black, under 1.5/255).
HIDDEN_SHADING_FLOOR = 0.1


def lit_texture(albedo: torch.Tensor, shading: torch.Tensor, sampled: torch.Tensor, visibility: torch.Tensor,
                valid: torch.Tensor, width: float | None, floor: float | None = HIDDEN_SHADING_FLOOR) -> torch.Tensor:
    """The lit texture of a refinement in albedo space: the photo's texels on V, the albedo under
    the photo's light (albedo x shading) beyond, blended across ``width`` texels outside V as the
    lit refinement blends (:func:`keep_visible_weight`); ``width`` None: albedo x shading everywhere.
    The shading is raised to at least its ``floor`` quantile over V (:data:`HIDDEN_SHADING_FLOOR`;
    None: as the light gives it).

    Args:
        albedo: (3, S, S) float32 in [0, 1].
        shading: (3, S, S) float32 >= 0.
        sampled: (3, S, S) float32 I_S (ignored outside ``visibility``).
        visibility: (S, S) bool V.
        valid: (S, S) bool texels inside the layout.

    Returns:
        (3, S, S) float32 in [0, 1] on the CPU, the border colours extended outside the layout.
    """
    shading = shading.float().cpu()
    seen = visibility.cpu() & valid.cpu()
    if floor is not None and int(seen.sum()) > 0:
        low = torch.quantile(shading[:, seen], float(floor), dim=1)  # (3,)
        shading = torch.maximum(shading, low[:, None, None])
    lit = (albedo.detach().float().cpu() * shading).clamp(0.0, 1.0)
    if width is not None:
        vis = visibility.cpu()
        a = keep_visible_weight(vis, width)
        i_s = torch.where(vis[None], sampled.detach().float().cpu(), lit)
        lit = a * i_s + (1.0 - a) * lit
    filled = extend_outside(lit.permute(1, 2, 0).numpy().astype(np.float64), valid.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1).float().contiguous()


def upscale_texture(image: np.ndarray, geometry: FaceGeometry, texture: torch.Tensor, size: int, *,
                    layout: UVLayout | None = None, mask: np.ndarray | None = None,
                    feather: float = 1 / 64, part_colours: dict | None = None) -> torch.Tensor:
    """The refined texture at a larger export size, with the photo's own detail where it has it.

    I_X is upsampled (bicubic) to ``size``; the photo is unwrapped again at ``size`` and its texels
    blended over the visible region, feathered inwards from the visibility boundary over
    ``feather * size`` texels (as ``keep_visible``); outside the layout the border is extended.

    Args:
        image: (H, W, 3) uint8 RGB photo.
        texture: (3, S, S) float32 I_X in [0, 1].
        size: export size (texels), usually 1024 or 2048.
        mask: optional (H, W) bool, True where the photo is not to be trusted.
        part_colours: the head's :meth:`~facerefiner.heads.HeadModel.part_colours`: its unseen
            teeth, gums and eyeballs get their flat colours again at ``size`` (the upsampling
            would blur them into their gutters).

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
    if part_colours:
        from .complete import fill_parts

        out = fill_parts(out, un.visibility, layout, part_colours, uvr=uvr)
    filled = extend_outside(out.permute(1, 2, 0).numpy(), uvr.valid.numpy())
    return torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()
