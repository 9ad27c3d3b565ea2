"""The face's crop that the occlusion sources run on, and the pixel operations they share.

:func:`face_crop` rasterises the face into a crop around it (:data:`OCCLUSION_SIDE` pixels on its
long side), with each pixel's texel on the layout's rule grid (:data:`RULE_SIZE`) and its normal;
the rules look the layout's features up through those texels (:func:`feature_pixels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import render as R
from ..layout import UVLayout, feature_mask
from ..reconstruct import FaceGeometry
from ..unwrap import Region, face_region, rasterize_face

#: Long side (px) of the crop around the face that the sources run on.
OCCLUSION_SIDE = 512
#: Margin of that crop around the landmark box, as a fraction of the face's size (room for the
#: hair, the hands and the background that the colour model and the segmentation learn from).
CROP_MARGIN = 0.5
#: Side of the UV grid the layout's rules run on.
RULE_SIZE = 128
#: Margin of the features' outlines for these rules, as a fraction of S (one texel at 128): the eye
#: is its opening and lids, not the rim of a pair of glasses around it.
RULE_FEATURE_MARGIN = 1 / 128
#: ... outside the features grown by this fraction of S (lash lines, eye bags and make-up reach
#: past the features' outlines and have strong edges too).
TEXTURE_MARGIN = 1 / 16
#: Radius of the closing that joins non-skin pixels (hair strands) into one region, as a fraction
#: of the face's size.
CLOSE = 0.01
#: The occluders found by colour grow by this fraction of the face's size (hair strands' soft
#: edges, a frame's shadow). Chosen on the occlusion benchmark (BENCHMARKS.md, "Occlusion"): 0.006
#: left the fringe's edges in (-3.0 dB against the exact mask), 0.012 -1.1 dB, 0.018 +0.3 dB
#: (+0.0 with :data:`WEAK_SHADOW_CHROMA`), at 1 to 3 points more of a clean face lost.
GROW = 0.018


@dataclass(frozen=True)
class Crop:
    region: Region
    rgb: np.ndarray          # (h, w, 3) uint8
    cover: np.ndarray        # (h, w) bool
    texel: np.ndarray        # (h, w) int64 flat index into the (RULE_SIZE,) ** 2 grid, -1 off the mesh
    normals: np.ndarray      # (h, w, 3) float64 unit normal in the camera frame (OpenCV), 0 off the mesh


def face_crop(rgb: np.ndarray, geometry: FaceGeometry, layout: UVLayout) -> Crop:
    region = face_region(geometry, margin=CROP_MARGIN, max_side=OCCLUSION_SIDE)
    crop = region.crop(rgb)
    rast = rasterize_face(geometry, layout, region)
    cache = R.prepare(rast, torch.as_tensor(layout.faces), layout.uv_tensor())
    h, w = crop.shape[:2]
    U = RULE_SIZE
    cover = R.coverage_mask(cache)[0].numpy()
    texel = -np.ones(h * w, np.int64)
    t = np.clip(np.floor(cache.uv[0].numpy() * U).astype(np.int64), 0, U - 1)
    texel[cache.index[0].numpy()] = t[:, 1] * U + t[:, 0]
    from ..unwrap import vertex_normals

    nv = vertex_normals(geometry.camera.to_camera(geometry.vertices), layout.faces, layout.weld)
    n = R.interpolate(torch.as_tensor(nv, dtype=torch.float32), rast, torch.as_tensor(layout.faces))[0].numpy()
    n = n.astype(np.float64) / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)
    n[~cover] = 0.0
    return Crop(region, crop, cover, texel.reshape(h, w), n)


def feature_pixels(c: Crop, layout: UVLayout, margin: float) -> np.ndarray:
    """(h, w) bool: the crop's pixels on the features grown by ``margin`` (a fraction of S)."""
    return feature_mask(layout, RULE_SIZE, margin).reshape(-1)[np.maximum(c.texel, 0)] & c.cover


def skin_samples(c: Crop, layout: UVLayout, feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The crop's pixels that are mostly skin: on the mesh, away from the features and from the
    layout's outline (where the background and the hair meet the face); and the part of those
    between the eyes and the mouth (cheeks and nose: under a fringe, a cap or sunglasses they still
    show), where the colour model starts from. Two (h, w) bool masks."""
    import cv2

    from ..unwrap import uv_raster

    U = RULE_SIZE
    valid = uv_raster(layout, U).valid.numpy()
    r = max(1, U // 12)
    core = cv2.erode(valid.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    allf = np.zeros((U, U), bool)
    for m in feats.values():
        allf |= m
    core = core.astype(bool) & ~grow(allf, max(1, U // 64))
    seed = core
    eyes = [feats[k] for k in ("LEFT_EYE", "RIGHT_EYE") if k in feats and feats[k].any()]
    if eyes and "LIPS" in feats and feats["LIPS"].any():
        top = max(int(np.nonzero(e.any(1))[0].max()) for e in eyes)
        bottom = int(np.nonzero(feats["LIPS"].any(1))[0].min())
        if bottom > top:
            band = np.zeros((U, U), bool)
            band[top:bottom] = True
            seed = core & band
    t = np.maximum(c.texel, 0)
    return c.cover & core.reshape(-1)[t], c.cover & seed.reshape(-1)[t]


def to_photo(m: np.ndarray, region: Region, shape: tuple[int, int]) -> np.ndarray:
    """A crop's (h, w) bool mask -> (H, W) bool in the photo (False outside the crop)."""
    import cv2

    out = np.zeros(shape, bool)
    ww, hh = region.x1 - region.x0, region.y1 - region.y0
    if region.scale != 1.0:
        m = cv2.resize(m.astype(np.float32), (ww, hh), interpolation=cv2.INTER_LINEAR) > 0.5
    out[region.y0:region.y1, region.x0:region.x1] = m[:hh, :ww]
    return out


def grow(mask: np.ndarray, r: int, within: np.ndarray | None = None) -> np.ndarray:
    import cv2

    if r <= 0 or not mask.any():
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    return out & within if within is not None else out


def clean(ns: np.ndarray, face_size: float) -> np.ndarray:
    """A 3 x 3 median (drops lone pixels, pores and noise, and keeps a frame two pixels wide), then
    a closing of :data:`CLOSE` (joins hair strands into the fringe they make)."""
    import cv2

    ns = cv2.medianBlur(ns.astype(np.uint8) * 255, 3) > 127
    r = max(1, int(round(CLOSE * face_size)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.morphologyEx(ns.astype(np.uint8), cv2.MORPH_CLOSE, k).astype(bool)


def drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[lab]


def share_around(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean of ``values`` over the ``where`` texels around every texel (a
    normalised convolution, evaluated everywhere; 0 where no ``where`` texel is near)."""
    import cv2

    w = where.astype(np.float64)
    num = cv2.GaussianBlur(values * w, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)
