"""Complete: the project's own initial texture I_C from the sampled texture I_S.

The hidden texels are filled in one Poisson solve (Perez et al., "Poisson image editing", 2003):
the visible texels are fixed (Dirichlet), texels whose mirror texel is visible take the mirror's
gradients (its detail), texels with no visible mirror take zero gradients (a harmonic, smooth fill).
Because only gradients are copied, the mirrored half is re-lit to match the visible texels around
it (the light differs left and right), and the fill meets the visible region without a seam. The
mirror point of a texel comes from the layout's left-right vertex pairing, so this works for any
layout of MediaPipe's topology; with the shipped symmetric layout it is the horizontal flip.

The result is complete over the layout and seam-free but may be blurry where nothing was visible:
that is what refinement fixes. Texels outside the layout are filled by extending the border colours
outward, so bilinear lookups at the layout's edge do not bleed black.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from . import render as R
from .layout import UVLayout, default_layout
from .unwrap import UVRaster, uv_raster

log = logging.getLogger(__name__)


def mirror_uv(layout: UVLayout | None = None, size: int = 512, uvr: UVRaster | None = None) -> torch.Tensor:
    """UV coordinates of each texel's mirror point: (S, S, 2) float32, (u, v) in [0, 1] image
    convention (0 outside the layout). For a symmetric layout this is (1 - u, v)."""
    layout = layout or default_layout()
    uvr = uvr or uv_raster(layout, size)
    if layout.mirror is None:
        raise ValueError(f"layout {layout.name!r} has no left-right vertex pairing")
    uv_m = torch.as_tensor(layout.uv[layout.mirror], dtype=torch.float32)
    return uvr.interpolate(uv_m)


def mirror_texture(texture: torch.Tensor, muv: torch.Tensor) -> torch.Tensor:
    """(C, S, S) texture -> (C, S, S) the texture seen through the mirror (bilinear)."""
    return R.texture(texture[None], muv[None])[0]


def _laplace_system(unknown: np.ndarray, valid: np.ndarray):
    """Index map and the 4-neighbour pairs among ``valid`` texels touching ``unknown`` ones."""
    h, w = unknown.shape
    idx = -np.ones((h, w), np.int64)
    n = int(unknown.sum())
    idx[unknown] = np.arange(n)
    pairs = []
    for dy, dx in ((0, 1), (1, 0)):
        a = valid[: h - dy, : w - dx] & valid[dy:, dx:]
        ys, xs = np.nonzero(a)
        pairs.append((ys, xs, ys + dy, xs + dx))
    return idx, n, pairs


def poisson_fill(target: np.ndarray, known: np.ndarray, valid: np.ndarray, guide: np.ndarray,
                 use_guide: np.ndarray) -> np.ndarray:
    """Solve for the texels ``valid & ~known``.

    Args:
        target: (H, W, C) float64, values at ``known`` texels are kept.
        known: (H, W) bool Dirichlet texels.
        valid: (H, W) bool the domain (outside: no neighbours, i.e. Neumann at the domain edge).
        guide: (H, W, C) float64 the image whose gradients are copied where ``use_guide``.
        use_guide: (H, W) bool texels whose gradients come from ``guide``; elsewhere zero gradients.

    Returns:
        (H, W, C) float64 with the unknown texels filled.
    """
    unknown = valid & ~known
    out = target.copy()
    idx, n, pairs = _laplace_system(unknown, valid)
    if n == 0:
        return out
    C = target.shape[2]
    rows, cols, vals = [], [], []
    diag = np.zeros(n)
    rhs = np.zeros((n, C))
    for ys, xs, yt, xt in pairs:
        p, q = idx[ys, xs], idx[yt, xt]
        # Guidance gradient along the edge p->q: from the guide where both ends use it.
        g = np.where((use_guide[ys, xs] & use_guide[yt, xt])[:, None], guide[ys, xs] - guide[yt, xt], 0.0)
        for a, b, ya, xa, yb, xb, sign in ((p, q, ys, xs, yt, xt, 1.0), (q, p, yt, xt, ys, xs, -1.0)):
            m = a >= 0
            diag_idx = a[m]
            np.add.at(diag, diag_idx, 1.0)
            np.add.at(rhs, diag_idx, sign * g[m])
            bu = b[m] >= 0
            rows.append(diag_idx[bu])
            cols.append(b[m][bu])
            vals.append(-np.ones(bu.sum()))
            bk = ~bu
            np.add.at(rhs, diag_idx[bk], target[yb[m][bk], xb[m][bk]])
    # Texels of an unknown component with no known neighbour at all get a tiny pull toward the
    # guide (or grey), which keeps the system non-singular.
    eps = 1e-6
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    A = A + sp.diags(diag + eps)
    ys, xs = np.nonzero(unknown)
    anchor = np.where(use_guide[ys, xs][:, None], guide[ys, xs], 0.5)
    rhs += eps * anchor
    solve = spla.factorized(A.tocsc())
    sol = np.stack([solve(rhs[:, c]) for c in range(C)], axis=1)
    out[ys, xs] = sol
    return out


def extend_outside(image: np.ndarray, valid: np.ndarray, iterations: int | None = None) -> np.ndarray:
    """Fill texels outside ``valid`` with the colour of the nearest valid texel (pull-push free,
    via a distance transform), so bilinear lookups at the layout edge see no black."""
    from scipy import ndimage

    if valid.all():
        return image
    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return image[iy, ix]


def complete(texture: torch.Tensor, visibility: torch.Tensor, layout: UVLayout | None = None, *,
             uvr: UVRaster | None = None) -> torch.Tensor:
    """The initial complete texture I_C from the sampled texture I_S.

    Args:
        texture: (3, S, S) float RGB in [0, 1], the sampled texture (values outside ``visibility``
            are ignored).
        visibility: (S, S) bool, texels that show the photo.
        layout: the UV layout (default: the shipped one); its vertex pairing gives the mirror.
        uvr: optional precomputed :func:`~facerefiner.unwrap.uv_raster` of the layout at S.

    Returns:
        (3, S, S) float32 in [0, 1]: equal to ``texture`` on visible texels, filled elsewhere inside
        the layout, border colours extended outside it.
    """
    layout = layout or default_layout()
    S = texture.shape[-1]
    uvr = uvr or uv_raster(layout, S)
    valid = uvr.valid.cpu().numpy()
    vis = visibility.cpu().numpy() & valid
    tex = texture.detach().float().cpu()
    if not vis.any():
        raise ValueError("complete: no visible texel to start from")
    muv = mirror_uv(layout, S, uvr)
    mir_tex = mirror_texture(tex, muv).permute(1, 2, 0).numpy().astype(np.float64)
    # The mirror point is usable where it falls on visible texels (bilinear footprint inside V).
    mir_vis = mirror_texture(torch.from_numpy(vis.astype(np.float32))[None], muv)[0].numpy() > 0.999
    use_guide = valid & ~vis & mir_vis
    img = tex.permute(1, 2, 0).numpy().astype(np.float64)
    out = poisson_fill(img, vis, valid, mir_tex, valid & mir_vis)
    out = extend_outside(out, valid)
    return torch.from_numpy(np.clip(out, 0.0, 1.0)).permute(2, 0, 1).float().to(texture.device).contiguous()
