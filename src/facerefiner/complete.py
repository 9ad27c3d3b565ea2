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

import functools
import logging

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from . import render as R
from .check import check_shape
from .errors import NothingVisibleError
from .layout import UVLayout, default_layout, feature_mask
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


def seam_links(layout: UVLayout, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Texel pairs that are neighbours on the surface across the layout's UV seams.

    A seam edge is a mesh edge whose two triangles put it in two places of the atlas (its
    vertices are copies of the same model vertices, :attr:`UVLayout.weld`). Both copies are
    walked in step (about two samples per texel of the longer one) and each pair of texels they
    fall in is linked, so that a fill diffuses across the seam as across any other neighbour:
    a chart the photo does not show (the back of the head, the neck) is filled from the charts
    it joins on the head, not left to itself.

    Returns:
        ``(ys, xs, yt, xt)``: (n,) int64 texel rows and columns of each linked pair, both ends in
        the layout; empty when the layout has no seams (``weld`` is None).
    """
    return _seam_links(layout, int(size))


@functools.lru_cache(maxsize=16)
def _seam_links(layout: UVLayout, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    empty = (np.zeros(0, np.int64),) * 4
    if layout.weld is None:
        return empty
    weld = np.asarray(layout.weld)
    f = np.asarray(layout.faces)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])      # (3F, 2) layout vertex ids
    w = weld[e]
    flip = w[:, 0] > w[:, 1]                                            # orient by the model ids
    e = np.where(flip[:, None], e[:, ::-1], e)
    w = np.sort(w, axis=1)
    e = np.unique(np.concatenate([w, e], 1), axis=0)                   # distinct (model edge, copy) rows
    order = np.lexsort((e[:, 3], e[:, 2], e[:, 1], e[:, 0]))
    e = e[order]
    same = (e[1:, 0] == e[:-1, 0]) & (e[1:, 1] == e[:-1, 1])
    i = np.nonzero(same & ((e[1:, 2] != e[:-1, 2]) | (e[1:, 3] != e[:-1, 3])))[0]
    if len(i) == 0:
        return empty
    uv = np.asarray(layout.uv, np.float64) * size - 0.5                 # texel centres at integers
    a0, a1 = uv[e[i, 2]], uv[e[i, 3]]
    b0, b1 = uv[e[i + 1, 2]], uv[e[i + 1, 3]]
    n = np.ceil(2 * np.maximum(np.linalg.norm(a1 - a0, axis=1), np.linalg.norm(b1 - b0, axis=1))).astype(np.int64) + 1
    edge = np.repeat(np.arange(len(i)), n)
    t = (np.arange(len(edge)) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(np.repeat(n, n) - 1, 1)
    pa = np.rint(a0[edge] + t[:, None] * (a1 - a0)[edge]).astype(np.int64).clip(0, size - 1)
    pb = np.rint(b0[edge] + t[:, None] * (b1 - b0)[edge]).astype(np.int64).clip(0, size - 1)
    valid = uv_raster(layout, size).valid.cpu().numpy()
    pairs = np.stack([pa[:, 1], pa[:, 0], pb[:, 1], pb[:, 0]], 1)      # (y, x) of both ends
    keep = valid[pairs[:, 0], pairs[:, 1]] & valid[pairs[:, 2], pairs[:, 3]]
    keep &= (np.abs(pairs[:, 0] - pairs[:, 2]) + np.abs(pairs[:, 1] - pairs[:, 3])) > 1  # not already neighbours
    pairs = np.unique(pairs[keep], axis=0)
    return tuple(np.ascontiguousarray(pairs[:, k]) for k in range(4))


def poisson_fill(target: np.ndarray, known: np.ndarray, valid: np.ndarray, guide: np.ndarray,
                 use_guide: np.ndarray, links: tuple[np.ndarray, ...] | None = None,
                 labels: np.ndarray | None = None) -> np.ndarray:
    """Solve for the texels ``valid & ~known``.

    Args:
        target: (H, W, C) float64, values at ``known`` texels are kept.
        known: (H, W) bool Dirichlet texels.
        valid: (H, W) bool the domain (outside: no neighbours, i.e. Neumann at the domain edge).
        guide: (H, W, C) float64 the image whose gradients are copied where ``use_guide``.
        use_guide: (H, W) bool texels whose gradients come from ``guide``; elsewhere zero gradients.
            Or (H, W) int labels (0 = none): an edge takes the guide's gradient only when both ends
            carry the same label, so two guides meeting (the mirror image, a prior) leave no step.
        links: optional ``(ys, xs, yt, xt)`` more neighbour pairs (:func:`seam_links`: across the
            atlas's seams), with zero gradient.
        labels: optional (H, W) int surface label per texel (:func:`part_map`): texels of two
            surfaces are no neighbours (a mouth socket's dark interior beside the back of the head
            in one chart, or welded to the lips' inner edge, does not flow into the skin).

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
    anchored = np.zeros(n, bool)  # unknown texels with a known neighbour
    extra = [(*links, True)] if links is not None and len(links[0]) else []
    for ys, xs, yt, xt, *seam in [(*p, False) for p in pairs] + extra:
        if labels is not None:
            same = labels[ys, xs] == labels[yt, xt]
            ys, xs, yt, xt = ys[same], xs[same], yt[same], xt[same]
        p, q = idx[ys, xs], idx[yt, xt]
        # Guidance gradient along the edge p->q: from the guide where both ends use it (none across a seam).
        la, lb = use_guide[ys, xs], use_guide[yt, xt]
        g = np.where(((la == lb) & (la != 0) & (not seam[0]))[:, None], guide[ys, xs] - guide[yt, xt], 0.0)
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
            anchored[diag_idx[bk]] = True
    # Texels of an unknown component with no known neighbour at all get a tiny pull toward the
    # guide (or grey), which keeps the system non-singular.
    eps = 1e-6
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    A = A + sp.diags(diag + eps)
    ys, xs = np.nonzero(unknown)
    anchor = np.where((use_guide[ys, xs] != 0)[:, None], guide[ys, xs], 0.5)
    rhs += eps * anchor
    solve = spla.factorized(A.tocsc())
    sol = np.stack([solve(rhs[:, c]) for c in range(C)], axis=1)
    out[ys, xs] = sol
    if labels is not None:
        # a sliver of one surface cut off by another's texels (no known texel of its own surface
        # reachable) takes the nearest reached texel of its surface instead of the grey anchor
        import scipy.sparse.csgraph as cg
        from scipy import ndimage

        _, comp = cg.connected_components(A, directed=False)
        reached = np.zeros(comp.max() + 1, bool)
        reached[comp[anchored]] = True
        lost = ~reached[comp]
        if lost.any():
            good = valid.copy()
            good[ys[lost], xs[lost]] = False
            for lab in np.unique(labels[ys[lost], xs[lost]]):
                src = good & (labels == lab)
                if not src.any():
                    continue
                _, (iy, ix) = ndimage.distance_transform_edt(~src, return_indices=True)
                sel = lost & (labels[ys, xs] == lab)
                out[ys[sel], xs[sel]] = out[iy[ys[sel], xs[sel]], ix[ys[sel], xs[sel]]]
    return out


EDGE_BAND = 3
"""Texels past the layout's edge that take the nearest edge texel's colour exactly (bilinear and
mip-map lookups at the edge see the edge's own colour); further out the fill fades into a smooth one."""


def pull_push(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A smooth fill of the texels outside ``valid``: the valid texels' weighted averages over a
    pyramid of 2 x 2 blocks, taken back up with bilinear upsampling (Gortler et al.'s pull-push).

    Args:
        image: (H, W, C) float64; values outside ``valid`` are ignored.
        valid: (H, W) bool, at least one True.

    Returns:
        (H, W, C) float64 equal to ``image`` on ``valid`` and smooth elsewhere.
    """
    import cv2

    levels = [(image * valid[..., None], valid.astype(np.float64))]
    while levels[-1][1].min() <= 0 and min(levels[-1][1].shape) > 1:
        num, w = levels[-1]
        h2, w2 = (num.shape[0] + 1) // 2, (num.shape[1] + 1) // 2
        pad = ((0, 2 * h2 - num.shape[0]), (0, 2 * w2 - num.shape[1]))
        num = np.pad(num, pad + ((0, 0),))
        w = np.pad(w, pad)
        levels.append((num.reshape(h2, 2, w2, 2, -1).sum((1, 3)), w.reshape(h2, 2, w2, 2).sum((1, 3))))
    num, w = levels[-1]
    filled = num / np.maximum(w, 1e-12)[..., None]
    for num, w in reversed(levels[:-1]):
        up = cv2.resize(filled, (num.shape[1], num.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(num.shape)
        a = np.clip(w, 0, 1)[..., None]  # a level's own average where it has any valid texel
        filled = a * num / np.maximum(w, 1e-12)[..., None] + (1 - a) * up
    return np.where(valid[..., None], image, filled)


def extend_outside(image: np.ndarray, valid: np.ndarray, band: int = EDGE_BAND) -> np.ndarray:
    """Fill texels outside ``valid``: the nearest valid texel's colour within ``band`` texels of
    the edge (bilinear lookups at the layout edge see no black and no other colour), fading over
    as many texels again into :func:`pull_push`'s smooth fill (no streaks in ``texture.png``).

    Args:
        image: (H, W, C) float; values outside ``valid`` are ignored.
        valid: (H, W) bool.

    Returns:
        (H, W, C) of ``image``'s dtype, equal to ``image`` on ``valid``.
    """
    from scipy import ndimage

    if valid.all() or not valid.any():
        return image
    dist, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    near = image[iy, ix]
    far = pull_push(image, valid)
    t = np.clip((dist - band) / max(band, 1), 0.0, 1.0)[..., None]
    return np.where(valid[..., None], image, (1 - t) * near + t * far).astype(image.dtype, copy=False)


def complete(texture: torch.Tensor, visibility: torch.Tensor, layout: UVLayout | None = None, *,
             uvr: UVRaster | None = None, detail: bool = False, seed: int = 0,
             guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The initial complete texture I_C from the sampled texture I_S.

    Args:
        texture: (3, S, S) float RGB in [0, 1], the sampled texture (values outside ``visibility``
            are ignored).
        visibility: (S, S) bool, texels that show the photo.
        layout: the UV layout (default: the shipped one); its vertex pairing gives the mirror.
        uvr: optional precomputed :func:`~facerefiner.unwrap.uv_raster` of the layout at S.
        detail: add fine detail made of the person's visible skin (:func:`synthesize_detail`) to
            the hidden texels that the mirror does not fill (there the Poisson fill alone is smooth).
        seed: random seed of that detail.
        guide: optional ``(image, where)``: a (3, S, S) float texture in [0, 1] in the person's
            colours and a (S, S) bool mask, whose gradients finer than :data:`PRIOR_HIGHPASS` the
            Poisson fill copies on the hidden facial features (:func:`facerefiner.layout.feature_mask`)
            without a visible mirror (a face prior's structure: :func:`facerefiner.prior.fit`);
            other hidden texels without a mirror get zero gradients (a smooth fill).

    Returns:
        (3, S, S) float32 in [0, 1]: equal to ``texture`` on visible texels, filled elsewhere inside
        the layout, border colours extended outside it.

    Raises:
        NothingVisibleError: no texel is visible (an all-covering mask).
    """
    layout = layout or default_layout()
    S = texture.shape[-1]
    uvr = uvr or uv_raster(layout, S)
    valid = uvr.valid.cpu().numpy()
    vis = visibility.cpu().numpy() & valid
    tex = texture.detach().float().cpu()
    if not vis.any():
        raise NothingVisibleError("no texel of the face is visible (does the mask cover the whole face?)")
    muv = mirror_uv(layout, S, uvr)
    mir_tex = mirror_texture(tex, muv).permute(1, 2, 0).numpy().astype(np.float64)
    # The mirror point is usable where it falls on visible texels (bilinear footprint inside V).
    mir_vis = mirror_texture(torch.from_numpy(vis.astype(np.float32))[None], muv)[0].numpy() > 0.999
    guide_img, use_guide = mir_tex, (valid & mir_vis).astype(np.int8)
    if guide is not None:
        # the prior's structure without its own light: its low frequencies (shading, the entries'
        # exposure) are left out, so the fill's light comes from the photo's texels around the hole
        g_img, g_where = guide[0].detach().float().cpu(), guide[1].cpu()
        g_img = g_img - lowpass(g_img, g_where, PRIOR_HIGHPASS * S)
        # only on the facial features (eyes, brows, lips, nose): skin takes the person's own grain
        g_where = g_where.numpy() & valid & ~mir_vis & ~vis & feature_mask(layout, S)
        guide_img = np.where(g_where[..., None], g_img.permute(1, 2, 0).numpy(), mir_tex)
        use_guide = np.where(g_where, 2, use_guide).astype(np.int8)
    img = tex.permute(1, 2, 0).numpy().astype(np.float64)
    labels = part_map(layout, S, uvr) if layout.parts is not None else None
    out = poisson_fill(img, vis, valid, guide_img, use_guide, links=seam_links(layout, S), labels=labels)
    if detail:
        # not where the mirror gives it; on a prior's features too: the prior's structure is a blend
        # of other faces at PRIOR_SIZE, smoother than this photo, and the grain on top is the person's
        target = torch.from_numpy(valid & ~vis & (use_guide != 1))
        out = out + synthesize_detail(tex, torch.from_numpy(vis), target, seed=seed).permute(1, 2, 0).numpy()
    out = extend_outside(out, valid)
    return torch.from_numpy(np.clip(out, 0.0, 1.0)).permute(2, 0, 1).float().to(texture.device).contiguous()


def lowpass(texture: torch.Tensor, valid: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a texture inside its layout (normalised convolution: texels outside
    ``valid`` neither contribute nor dilute).

    Args:
        texture: (C, S, S) float tensor.
        valid: (S, S) bool texels inside the layout.
        sigma: Gaussian sigma in texels (> 0).

    Raises:
        ShapeError: ``texture`` is not (C, H, W) or ``valid`` not (H, W).

    Returns:
        (C, S, S) tensor of ``texture``'s dtype and device; texels outside ``valid`` (and any that
        no valid texel reaches) are 0. A texture constant on ``valid`` comes back unchanged there.
    """
    check_shape(texture, ["C", "H", "W"], "texture")
    check_shape(valid, [str(n) for n in texture.shape[-2:]], "valid")
    r = max(1, int(np.ceil(3.0 * sigma)))
    x = torch.arange(-r, r + 1, device=texture.device, dtype=texture.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    w = valid.to(texture.dtype)[None]
    stack = torch.cat([texture * w, w])[:, None]  # (C + 1, 1, S, S)
    stack = F.conv2d(F.pad(stack, (r, r, 0, 0)), k.view(1, 1, 1, -1))
    stack = F.conv2d(F.pad(stack, (0, 0, r, r)), k.view(1, 1, -1, 1))[:, 0]
    num, den = stack[:-1], stack[-1:]
    return torch.where((den > 1e-6) & valid[None], num / den.clamp_min(1e-6), torch.zeros_like(num))


#: A prior's guide image keeps only what is finer than a Gaussian of this sigma (a fraction of S:
#: 16 texels at 512, about half an eye's width): the structure, not the entries' light.
PRIOR_HIGHPASS = 1 / 16

#: Detail band of :func:`synthesize_detail`: the texture minus its Gaussian blur of this sigma, as a
#: fraction of S (4 texels at S = 512: the band the completion probe's detail ratio measures, sigma
#: 1 to 3 texels, and what ``keep_shading``'s 1/128 leaves to the refinement).
DETAIL_SIGMA = 1 / 128
#: Side of the patches the detail is copied in, as a fraction of S (32 texels at S = 512: a few
#: pores across, small against a cheek).
DETAIL_PATCH = 1 / 16
#: Source squares whose detail energy is above this quantile are not copied (eyes, brow edges, the
#: hairline, folds: structure, not grain). 0.65: at 0.5 both hidden cheeks got 0.67 of the truth's
#: detail in the median of the 8 probe photos, at 0.65 0.88 (BENCHMARKS.md, "Synthesis").
DETAIL_QUANTILE = 0.65
#: Random source squares a grid square chooses the nearest from.
DETAIL_CANDIDATES = 16


def _hann_window(p: int, dtype=torch.float32) -> torch.Tensor:
    """(p,) sin^2 window whose copies at a stride of p / 2 sum to exactly 1."""
    x = (torch.arange(p, dtype=torch.float64) + 0.5) / p
    return torch.sin(torch.pi * x).pow(2).to(dtype)


def detail_layer(texture: torch.Tensor, region: torch.Tensor, sigma: float) -> torch.Tensor:
    """The texture's fine detail on ``region``: ``texture - lowpass(texture, region, sigma)``
    (0 outside the region; the blur sees only region texels, so a hole's edge makes no ridge).

    Args:
        texture: (C, S, S) float.
        region: (S, S) bool.
        sigma: Gaussian sigma in texels.

    Returns:
        (C, S, S) of ``texture``'s dtype and device.
    """
    return torch.where(region[None], texture - lowpass(texture, region, sigma), torch.zeros_like(texture))


def synthesize_detail(texture: torch.Tensor, visibility: torch.Tensor, target: torch.Tensor, *,
                      sigma: float | None = None, patch: int | None = None, seed: int = 0,
                      source: torch.Tensor | None = None) -> torch.Tensor:
    """Fine detail for texels the photo does not show, made of the person's own visible skin.

    Non-parametric: the detail layer of the visible texels (:func:`detail_layer`) is cut into
    ``patch`` x ``patch`` squares taken from inside the visible region (skipping the squares with
    the strongest detail, above :data:`DETAIL_QUANTILE`: eyes, brow edges, hairline, folds; each grid square takes the
    nearest of :data:`DETAIL_CANDIDATES` random ones, so a cheek gets a cheek's grain) and laid
    on a regular grid at a stride of ``patch / 2`` with a separable sin^2 window; the sum is divided
    by the root of the summed squared weights, so the blend of uncorrelated squares keeps the
    source's variance (no fading where squares overlap) and the grid leaves no visible tiling.

    Args:
        texture: (3, S, S) float I_S in [0, 1] (values outside ``visibility`` are ignored).
        visibility: (S, S) bool V.
        target: (S, S) bool texels that get detail (usually the hidden texels without a visible mirror).
        sigma: detail band, default ``DETAIL_SIGMA * S``.
        patch: square side in texels (even), default ``DETAIL_PATCH * S``.
        seed: random seed (same seed, same detail).
        source: optional (S, S) bool region the squares may come from (default V).

    Returns:
        (3, S, S) float32 zero-mean detail on ``target`` (0 elsewhere), on ``texture``'s device; all
        zeros when no square of that size fits inside the source region.
    """
    check_shape(texture, ["3", "S", "S"], "texture")
    S = texture.shape[-1]
    check_shape(visibility, [str(S), str(S)], "visibility")
    check_shape(target, [str(S), str(S)], "target")
    dev = texture.device
    sigma = float(sigma if sigma is not None else max(1.0, DETAIL_SIGMA * S))
    p = int(patch if patch is not None else max(8, round(DETAIL_PATCH * S)))
    p += p % 2
    src = (visibility if source is None else source & visibility).to(dev)
    out = torch.zeros_like(texture, dtype=torch.float32)
    if not bool(target.any()):
        return out
    d = detail_layer(texture.float(), src, sigma)
    # square origins whose whole square lies in the source region
    inside = F.avg_pool2d((~src).float()[None, None], p, stride=1)[0, 0] == 0  # (S - p + 1,) ** 2
    ys, xs = torch.nonzero(inside, as_tuple=True)
    if ys.numel() == 0:
        return out
    energy = F.avg_pool2d(d.pow(2).sum(0)[None, None], p, stride=1)[0, 0][ys, xs]
    keep = energy <= torch.quantile(energy[:: max(1, energy.numel() // 100_000)], DETAIL_QUANTILE)
    ys, xs = ys[keep], xs[keep]
    # the grid: patch origins at a stride of p / 2, covering the target with a margin
    h = p // 2
    tys, txs = torch.nonzero(target.to(dev), as_tuple=True)
    gy0, gy1 = int(tys.min()) // h - 1, int(tys.max()) // h + 1
    gx0, gx1 = int(txs.min()) // h - 1, int(txs.max()) // h + 1
    gy, gx = torch.meshgrid(torch.arange(gy0, gy1 + 1, device=dev) * h, torch.arange(gx0, gx1 + 1, device=dev) * h,
                            indexing="ij")
    gy, gx = gy.flatten(), gx.flatten()
    gen = torch.Generator().manual_seed(int(seed))
    # each grid square takes the nearest of DETAIL_CANDIDATES random source squares: the detail comes
    # from nearby skin (a cheek's grain for a cheek), and the choice stays random (no repeated tile)
    cand = torch.randint(0, ys.numel(), (gy.numel(), DETAIL_CANDIDATES), generator=gen).to(dev)
    dist = (ys[cand] - gy[:, None]).float() ** 2 + (xs[cand] - gx[:, None]).float() ** 2
    pick = cand.gather(1, dist.argmin(1, keepdim=True))[:, 0]
    oy, ox = ys[pick], xs[pick]
    ar = torch.arange(p, device=dev)
    sy = (oy[:, None] + ar[None])[:, :, None]  # (n, p, 1) source rows
    sx = (ox[:, None] + ar[None])[:, None, :]  # (n, 1, p) source columns
    w1 = _hann_window(p).to(dev)
    w = (w1[:, None] * w1[None, :])[None]      # (1, p, p)
    patches = d[:, sy, sx] * w[None]           # (3, n, p, p)
    # accumulate into a padded canvas: destination rows gy + ar
    pad = p
    canvas = torch.zeros((3, S + 2 * pad, S + 2 * pad), device=dev)
    wsq = torch.zeros((S + 2 * pad, S + 2 * pad), device=dev)
    dy = (gy[:, None] + ar[None] + pad)[:, :, None].expand(-1, p, p)
    dx = (gx[:, None] + ar[None] + pad)[:, None, :].expand(-1, p, p)
    flat = (dy * canvas.shape[-1] + dx).flatten()
    canvas.view(3, -1).index_add_(1, flat, patches.reshape(3, -1))
    wsq.view(-1).index_add_(0, flat, (w * w).expand(gy.numel(), p, p).reshape(-1))
    canvas = canvas[:, pad:pad + S, pad:pad + S]
    wsq = wsq[pad:pad + S, pad:pad + S]
    det = canvas / wsq.clamp_min(1e-6).sqrt()
    return torch.where(target.to(dev)[None], det, out)


def part_map(layout: UVLayout, size: int, uvr: UVRaster | None = None) -> np.ndarray:
    """(S, S) int64 the :attr:`~facerefiner.layout.UVLayout.parts` label of each texel (-1 outside
    the layout or for a layout without parts)."""
    uvr = uvr or uv_raster(layout, size)
    tri = uvr.rast[0, ..., 3].long().numpy() - 1
    if layout.parts is None:
        return np.where(tri >= 0, 0, -1)
    return np.where(tri >= 0, np.asarray(layout.parts)[np.maximum(tri, 0)], -1)


def fill_parts(texture: torch.Tensor, visibility: torch.Tensor, layout: UVLayout, colours: dict,
               uvr: UVRaster | None = None) -> torch.Tensor:
    """Give the texels of the parts the photo cannot show a plausible colour of their own.

    Args:
        texture: (3, S, S) float in [0, 1].
        visibility: (S, S) bool, the texels seen in the photo (kept as they are).
        colours: ``{part label: spec}``, spec an (r, g, b) in [0, 1], or ``("seen", (r, g, b))``:
            the median of the part's seen texels (the rgb when fewer than 16 are seen), or
            ``("dark", other_label, (r, g, b))``: the median of the darkest fifth of another part's
            seen texels (an iris behind the cornea, seen through the sclera's chart).

    Returns:
        (3, S, S) the texture with the unseen texels of each listed part set to its colour, or,
        where the layout's mirror texel was seen, to the mirror's (an eye the photo hides or an
        occluder covers takes the other eye's iris and sclera).
    """
    S = texture.shape[-1]
    labels = part_map(layout, S, uvr)
    out = texture.clone()
    vis = visibility.cpu().numpy().astype(bool)
    flat = texture.reshape(3, -1)
    mirrored = torch.zeros((S, S), dtype=torch.bool)
    if layout.mirror is not None:
        muv = mirror_uv(layout, S, uvr)
        mirrored = mirror_texture(torch.from_numpy(vis.astype(np.float32))[None], muv)[0] > 0.999
        mir_tex = mirror_texture(texture.detach().float().cpu(), muv).to(texture.dtype)

    def seen_median(label: int, darkest: float | None = None):
        m = (labels == label) & vis
        if m.sum() < 16:
            return None
        px = flat[:, torch.from_numpy(m.reshape(-1))]
        if darkest is not None:
            lum = px.mean(0)
            px = px[:, lum <= torch.quantile(lum, darkest)]
        return px.median(dim=1).values

    for label, spec in colours.items():
        if isinstance(spec, tuple) and spec and spec[0] == "seen":
            c = seen_median(label)
            c = torch.tensor(spec[1], dtype=texture.dtype) if c is None else c
        elif isinstance(spec, tuple) and spec and spec[0] == "dark":
            c = seen_median(spec[1], darkest=0.2)
            c = torch.tensor(spec[2], dtype=texture.dtype) if c is None else c
        else:
            c = torch.tensor(spec, dtype=texture.dtype)
        where = torch.from_numpy((labels == label) & ~vis)
        out[:, where & ~mirrored] = c.to(texture.dtype)[:, None]
        if bool((where & mirrored).any()):
            out[:, where & mirrored] = mir_tex[:, where & mirrored].to(out.device)
    return out
