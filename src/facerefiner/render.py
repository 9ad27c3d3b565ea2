"""A small vectorised rasteriser and texture lookup, differentiable with respect to the texture.

Modelled on nvdiffrast's ``torch/ops.py``: a few pure functions chained by tensors,

    rast  = rasterize(pos, tri, (H, W))          # (B,H,W,4)  [b1, b2, z, tri_id + 1]
    uv_px = interpolate(uv, rast, tri)           # (B,H,W,2)
    image = texture(tex, uv_px, rast[..., 3] > 0)  # (B,C,H,W)

plus an opt-in cache for rendering the same geometry many times with a changing texture
(:func:`prepare` / :func:`render_cached`). Everything runs on the device and in the dtype of its
inputs (CPU in practice).

Conventions (OpenCV / image):

* Pixel coordinates: ``(0, 0)`` is the top-left corner of the top-left pixel, x to the right,
  y down; the centre of pixel row ``i``, column ``j`` is at ``(x, y) = (j + 0.5, i + 0.5)``.
* UV coordinates: ``(0, 0)`` is the top-left corner of the texture image, u to the right, v down,
  ``(1, 1)`` the bottom-right corner; texel ``(i, j)`` has its centre at
  ``((j + 0.5) / Wt, (i + 0.5) / Ht)``.
* Images and textures are channel-first ``(B, C, H, W)``; per-pixel maps (``rast``, interpolated
  attributes, uv) are channel-last ``(B, H, W, C)``.

Coverage rule (closed triangles): a pixel is covered by a triangle when its centre lies inside the
triangle or on one of its edges. The edge functions are evaluated in a canonical order of the
edge's end points (sorted by position, not by index), so two triangles sharing an edge compute
exactly opposite values for every pixel centre and a pixel centre can never fall through the crack
between them (one on the shared edge is covered by both, and the depth test picks one). Both
windings are drawn (no back-face culling). Zero-area triangles, triangles with non-finite
coordinates, triangles entirely outside the image and, with ``perspective=True``, triangles with a
vertex at ``z <= 0`` (behind the camera; there is no clipping) are skipped.

Depth test: the smallest interpolated ``z`` wins; exact ties go to the higher triangle id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .check import check_floating, check_same_device, check_shape
from .errors import ShapeError

__all__ = [
    "rasterize",
    "interpolate",
    "texture",
    "sample_image",
    "RasterCache",
    "prepare",
    "render_cached",
    "visible_pixels",
    "FULLY_VISIBLE",
    "face_screen_positions",
    "face_raster",
    "coverage_mask",
    "render_face",
]

log = logging.getLogger(__name__)

#: A pixel sees visible texels alone when its bilinear lookup of the (0/1) visibility mask is at
#: least this (used by the unwrap's back-projection, the rendering term and the fidelity metric).
FULLY_VISIBLE = 0.999

# Pixel centres within this distance (pixels) outside a triangle's bounding box are still tested
# against its edges, so that the coverage decision rests on the edge functions alone.
_BBOX_EPS = 1.0 / 64.0
# Default bound on the number of (triangle, candidate pixel) pairs evaluated at once.
_DEFAULT_CHUNK_PAIRS = 1 << 22


# ----------------------------------------------------------------------------------------------
# rasterize
# ----------------------------------------------------------------------------------------------


def _check_either(x: torch.Tensor, shapes: Sequence[Sequence[str]], name: str) -> None:
    """Raise a ShapeError naming all accepted shapes unless ``x`` matches one of them."""
    for dims in shapes:
        try:
            check_shape(x, dims, name)
            return
        except ShapeError:
            pass
    got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
    expected = " or ".join(str(list(d)) for d in shapes)
    raise ShapeError(f"{name}: expected shape {expected}, got {got}")


def _check_tri(tri: torch.Tensor, num_vertices: int) -> None:
    check_shape(tri, ["F", "3"], "tri")
    if tri.dtype not in (torch.int64, torch.int32):
        raise ShapeError(f"tri: expected dtype int64 or int32, got {tri.dtype}")
    if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= num_vertices):
        raise ShapeError(
            f"tri: vertex indices must lie in [0, {num_vertices}), got range "
            f"[{int(tri.min())}, {int(tri.max())}]"
        )


def _check_resolution(resolution: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(r) for r in resolution)
    except (TypeError, ValueError):
        raise ShapeError(f"resolution: expected (H, W), got {resolution!r}") from None
    if h <= 0 or w <= 0:
        raise ShapeError(f"resolution: expected positive (H, W), got {(h, w)}")
    return h, w


def rasterize(
    pos: torch.Tensor,
    tri: torch.Tensor,
    resolution: Sequence[int],
    *,
    perspective: bool = False,
    chunk_pairs: int = _DEFAULT_CHUNK_PAIRS,
) -> torch.Tensor:
    """Rasterise triangles into a buffer of barycentrics, depth and triangle ids.

    Args:
        pos: ``(V, 3)`` or ``(B, V, 3)`` float32 or float64 screen-space vertices. Channels
            ``[x, y, z]``: x, y in pixel units of the output image (pixel (0, 0)'s top-left corner
            at the origin, x right, y down, pixel centres at half-integers), any range (geometry
            outside the image is clipped per pixel); z the view depth, smaller = nearer. With
            ``perspective=True`` z must be the camera-space depth, ``> 0``.
        tri: ``(F, 3)`` int64 or int32 vertex indices in ``[0, V)``. Either winding is drawn.
        resolution: ``(H, W)`` of the output image.
        perspective: if True, barycentrics are perspective-correct: the screen-space weights
            ``b_i`` become ``(b_i / z_i) / sum_j (b_j / z_j)`` and the depth is
            ``1 / sum_j (b_j / z_j)``; otherwise z is interpolated linearly in screen space.
        chunk_pairs: at most about this many covered (triangle, pixel) pairs are processed at
            once, which bounds the temporary memory (about 40 bytes per pair); the depth test runs
            across chunks, so the result does not depend on it.

    Returns:
        ``rast``: ``(B, H, W, 4)`` tensor in pos's dtype and on pos's device (always 4-D; B = 1 for
        unbatched ``pos``). Channels ``[b1, b2, z, tri_id + 1]`` as in nvdiffrast: ``b1``, ``b2``
        in [0, 1] are the barycentric weights of the triangle's 2nd and 3rd vertex (the 1st one's
        is ``1 - b1 - b2``), ``z`` the interpolated depth, ``tri_id + 1`` the 1-based index of the
        visible triangle in ``tri`` as a float (exact below 2**24 triangles in float32).
        Background pixels are all zero, so ``rast[..., 3] > 0`` is the coverage mask.
        Peak temporary memory is about 40 bytes per covered (triangle, pixel) pair of a chunk plus
        12 bytes per output pixel (~300 MB for a 2048x2048 image with 2.25 M covered pixels).

    Geometry is constant: no gradient flows through ``rast``. See the module docstring for the
    coverage rule and the depth test.
    """
    _check_either(pos, [["V", "3"], ["B", "V", "3"]], "pos")
    check_floating(pos, "pos")
    h, w = _check_resolution(resolution)
    _check_tri(tri, pos.shape[-2])
    check_same_device(pos, tri, names=["pos", "tri"])
    with torch.no_grad():
        return _rasterize(pos.detach(), tri.to(torch.int64), h, w, perspective, int(chunk_pairs))


def _take(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, i)


def _write_rows(dst: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """``dst[index] = rows`` for (N, 4) ``dst`` and (K, 4) ``rows`` (unique index)."""
    if dst.dtype == torch.float32:  # one 16-byte element per row: much faster than a row copy
        dst.view(torch.complex128).view(-1).index_copy_(0, index, rows.view(torch.complex128).view(-1))
    else:
        dst.index_copy_(0, index, rows)


def _rasterize(
    pos: torch.Tensor, tri: torch.Tensor, h: int, w: int, perspective: bool, chunk_pairs: int
) -> torch.Tensor:
    # Outline: per triangle the three edge functions in a canonical form; per (triangle, pixel
    # row) the exact span of covered columns (the edge tests are monotone along a row, so the span
    # is found from a division and checked / corrected with the exact per-pixel test); per covered
    # (triangle, pixel) pair the depth, affine along the span; depth test by scatter_reduce.
    if pos.dim() == 2:
        pos = pos.unsqueeze(0)
    nb = pos.shape[0]
    dtype, device = pos.dtype, pos.device
    out = torch.zeros(nb, h, w, 4, dtype=dtype, device=device)
    nf = tri.shape[0]
    if nf == 0 or nb == 0:
        return out

    # All triangles of all batch items, flattened: triangle t = b * F + f.
    v = pos[:, tri].reshape(nb * nf, 3, 3)  # (T, vertex, xyz)
    x, y = v[..., 0], v[..., 1]
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])
    valid = torch.isfinite(v).all(dim=(1, 2)) & torch.isfinite(area2) & (area2 != 0)
    if perspective:
        valid &= (v[..., 2] > 0).all(dim=1)
    # Pixel-index bounding boxes, clamped to the image (floats clamped first: no int overflow).
    big = float(max(h, w) + 2)
    xs = torch.nan_to_num(x).clamp(-2.0, big)
    ys = torch.nan_to_num(y).clamp(-2.0, big)
    j0 = torch.ceil(xs.amin(1) - 0.5 - _BBOX_EPS).to(torch.int64).clamp_(min=0)
    j1 = torch.floor(xs.amax(1) - 0.5 + _BBOX_EPS).to(torch.int64).clamp_(max=w - 1)
    i0 = torch.ceil(ys.amin(1) - 0.5 - _BBOX_EPS).to(torch.int64).clamp_(min=0)
    i1 = torch.floor(ys.amax(1) - 0.5 + _BBOX_EPS).to(torch.int64).clamp_(max=h - 1)
    valid &= (j1 >= j0) & (i1 >= i0)
    sel = valid.nonzero().squeeze(1)  # ascending: ordered like (b, f)
    n = sel.numel()
    if n == 0:
        return out
    v, area2, i0, i1 = v[sel], area2[sel], i0[sel], i1[sel]
    z = v[..., 2]
    batch = torch.div(sel, nf, rounding_mode="floor")
    tid1 = (sel - batch * nf + 1).to(dtype)
    sign = torch.sign(area2)
    inv_area = 1.0 / area2.abs()
    if perspective:
        zi = 1.0 / z  # 1/z is affine in screen space
        zq0, dzq1, dzq2 = zi[:, 0], zi[:, 1] - zi[:, 0], zi[:, 2] - zi[:, 0]
    else:
        zq0, dzq1, dzq2 = z[:, 0], z[:, 1] - z[:, 0], z[:, 2] - z[:, 0]

    # Rows: one entry per (triangle, pixel row of its bounding box), ordered by triangle.
    bh = i1 - i0 + 1
    nrow = int(bh.sum())
    row_t = torch.repeat_interleave(torch.arange(n, device=device), bh, output_size=nrow)
    row_i = torch.arange(nrow, device=device) + _take(i0 - (torch.cumsum(bh, 0) - bh), row_t)
    qy = row_i.to(dtype) + 0.5
    lo = torch.zeros(nrow, dtype=torch.int64, device=device)
    hi = torch.full((nrow,), w - 1, dtype=torch.int64, device=device)
    lines = []
    # Edge k is opposite vertex k: (v1, v2), (v2, v0), (v0, v1). Its edge function is evaluated
    # from the lexicographically smaller end point and negated if needed (exact), so that two
    # triangles sharing an edge get exactly opposite values at every pixel centre; it is scaled
    # by sign(area) so that it is >= 0 on the inside: w_k(q) = ex * (qy - loy) - ey * (qx - lox).
    for k in range(3):
        a, b = v[:, (k + 1) % 3, :2], v[:, (k + 2) % 3, :2]
        swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
        lo_pt = torch.where(swap[:, None], b, a)
        hi_pt = torch.where(swap[:, None], a, b)
        s = torch.where(swap, -sign, sign)
        ex, ey = s * (hi_pt[:, 0] - lo_pt[:, 0]), s * (hi_pt[:, 1] - lo_pt[:, 1])
        lox, loy = _take(lo_pt[:, 0], row_t), _take(lo_pt[:, 1], row_t)
        ex, ey = _take(ex, row_t), _take(ey, row_t)
        ty = ex * (qy - loy)  # along a row: w_k(j) = ty - ey * ((j + 0.5) - lox), monotone in j

        def inside(j: torch.Tensor) -> torch.Tensor:
            return ty - ey * ((j.to(dtype) + 0.5) - lox) >= 0

        # Threshold column from a division, then made exact with the per-pixel test itself.
        est = torch.nan_to_num(lox + ty / torch.where(ey == 0, torch.ones_like(ey), ey) - 0.5)
        est = est.clamp_(-2.0, float(w + 1))
        up = torch.floor(est).to(torch.int64)  # ey > 0: inside for j <= up
        dn = torch.ceil(est).to(torch.int64)  # ey < 0: inside for j >= dn
        for _ in range(2):
            up = torch.where(inside(up), up, up - 1)
            dn = torch.where(inside(dn), dn, dn + 1)
        for _ in range(2):
            up = torch.where(inside(up + 1), up + 1, up)
            dn = torch.where(inside(dn - 1), dn - 1, dn)
        hi = torch.where(ey > 0, torch.minimum(hi, up), hi)
        lo = torch.where(ey < 0, torch.maximum(lo, dn), lo)
        hi = torch.where((ey == 0) & (ty < 0), torch.full_like(hi, -1), hi)
        lines.append((ty, ey, lox))
    span = (hi - lo + 1).clamp_(min=0)
    keep = (span > 0).nonzero().squeeze(1)
    if keep.numel() == 0:
        return out

    # Per kept row: pixel index, barycentrics and depth at the span start, and their slopes.
    rt = _take(row_t, keep)
    span, lo = _take(span, keep), _take(lo, keep)
    qx0 = lo.to(dtype) + 0.5
    ia = _take(inv_area, rt)
    bary = []
    for ty, ey, lox in lines[1:]:
        ty, ey, lox = _take(ty, keep), _take(ey, keep), _take(lox, keep)
        bary.append(((ty - ey * (qx0 - lox)) * ia, -ey * ia))
    (b1r, db1r), (b2r, db2r) = bary
    zq0, dzq1, dzq2 = _take(zq0, rt), _take(dzq1, rt), _take(dzq2, rt)
    zr = zq0 + b1r * dzq1 + b2r * dzq2
    dzr = db1r * dzq1 + db2r * dzq2
    npix = nb * h * w
    # 32-bit indices where they fit: halves the memory traffic of the per-pixel work.
    itype = torch.int32 if npix < 2**31 - 1 else torch.int64
    pix0 = ((_take(batch, rt) * h + _take(row_i, keep)) * w + lo).to(itype)
    span = span.to(itype)

    # Candidates in chunks of whole rows; running depth test across chunks.
    out_flat = out.view(npix, 4)
    tidr = _take(tid1, rt)
    if perspective:
        zi1r, zi2r = _take(zi[:, 1], rt), _take(zi[:, 2], rt)
    zbuf = torch.full((npix,), float("inf"), dtype=dtype, device=device)
    rbuf = None  # winning row per pixel (rows are ordered like triangles), made when needed
    cum = torch.cumsum(span, 0)
    total = int(cum[-1])
    nchunk = max(1, -(-total // max(int(chunk_pairs), 1)))
    cuts = torch.searchsorted(cum, torch.arange(1, nchunk, device=device) * (total / nchunk)).tolist()
    bounds = [0] + cuts + [keep.numel()]
    single = nchunk == 1
    first = True
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        if r1 <= r0:
            continue
        sp = span[r0:r1]
        kc = int(cum[r1 - 1]) - (int(cum[r0 - 1]) if r0 > 0 else 0)
        rloc = torch.arange(r1 - r0, dtype=itype, device=device).repeat_interleave(sp, output_size=kc)
        start = torch.cumsum(sp, 0, dtype=itype) - sp
        off = torch.arange(kc, dtype=itype, device=device) - _take(start, rloc)  # column in span
        pix = _take(pix0[r0:r1], rloc) + off
        off = off.to(dtype)
        zc = _take(zr[r0:r1], rloc) + _take(dzr[r0:r1], rloc) * off
        if perspective:
            zc = zc.reciprocal_()
        zprev = None if first else _take(zbuf, pix)
        zbuf.scatter_reduce_(0, pix, zc, "amin")
        win = None  # None: every candidate wins
        ncov = int(torch.count_nonzero(zbuf != float("inf"))) if single else -1
        if ncov != kc:  # some pixels have several candidates
            win = (zc == _take(zbuf, pix)).nonzero().squeeze(1)
            if win.numel() != ncov:  # possible exact depth ties (or earlier chunks): resolve by id
                pn, rn = _take(pix, win), _take(rloc, win) + r0
                if rbuf is None:
                    rbuf = torch.full((npix,), -1, dtype=itype, device=device)
                if not first:  # a nearer surface drops the earlier winner
                    better = (_take(zc, win) < _take(zprev, win)).nonzero().squeeze(1)
                    rbuf.index_fill_(0, _take(pn, better).long(), -1)
                rbuf.scatter_reduce_(0, pn, rn, "amax")  # ties: the higher triangle id
                win = _take(win, (rn == _take(rbuf, pn)).nonzero().squeeze(1))
        if win is not None:
            pix, rloc, zc, off = _take(pix, win), _take(rloc, win), _take(zc, win), _take(off, win)
        vals = torch.empty(pix.numel(), 4, dtype=dtype, device=device)
        b1 = _take(b1r[r0:r1], rloc).addcmul_(_take(db1r[r0:r1], rloc), off)
        b2 = _take(b2r[r0:r1], rloc).addcmul_(_take(db2r[r0:r1], rloc), off)
        if perspective:  # screen-space -> perspective-correct weights: b_i * (1/z_i) * z
            b1 = b1.mul_(_take(zi1r[r0:r1], rloc)).mul_(zc)
            b2 = b2.mul_(_take(zi2r[r0:r1], rloc)).mul_(zc)
        vals[:, 0], vals[:, 1], vals[:, 2] = b1, b2, zc
        vals[:, 3] = _take(tidr[r0:r1], rloc)
        _write_rows(out_flat, pix.long(), vals)
        first = False
    log.debug("rasterize: %d triangles, %d rows, %d candidate pixels", n, keep.numel(), total)
    return out


# ----------------------------------------------------------------------------------------------
# interpolate
# ----------------------------------------------------------------------------------------------


def _check_rast(rast: torch.Tensor) -> None:
    check_shape(rast, ["B", "H", "W", "4"], "rast")
    check_floating(rast, "rast")


def _batch_dims(nb: int, dims: list[str]) -> str:
    """Text of the accepted shapes of a batch-broadcastable argument."""
    shapes = [[nb] + dims] + ([[1] + dims] if nb != 1 else []) + [dims]
    return " or ".join(str(d) for d in shapes)


def _batch_attr(attr: torch.Tensor, nb: int, name: str) -> torch.Tensor:
    """(V,C) or (1|B,V,C) -> (1|B,V,C)."""
    _check_either(attr, [["V", "C"], ["B", "V", "C"]], name)
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    if attr.shape[0] not in (1, nb):
        raise ShapeError(f"{name}: expected shape {_batch_dims(nb, ['V', 'C'])}, got {list(attr.shape)}")
    check_floating(attr, name)
    return attr


def _interp_at(
    attr: torch.Tensor, tri: torch.Tensor, rast_flat: torch.Tensor, idx: torch.Tensor | None, hw: int
) -> torch.Tensor:
    """Attributes (K, C) at the flat pixels ``idx`` (into B*H*W, all covered) of ``rast_flat``
    (B*H*W, 4), or (B*H*W, C) at every pixel (background 0) when ``idx`` is None.

    Computed channel by channel on contiguous vectors (much faster on CPU than (N, C) rows)."""
    cols = rast_flat.unbind(1)
    if idx is None:
        b1, b2, fid = cols[0], cols[1], cols[3]
    else:
        b1, b2, fid = _take(cols[0], idx), _take(cols[1], idx), _take(cols[3], idx)
    nb, nv, nc = attr.shape
    itype = torch.int32 if max(rast_flat.shape[0], nb * nv) < 2**31 - 1 else torch.int64
    f = fid.to(itype) - 1
    covered = f >= 0 if idx is None else None
    f = f.clamp_(min=0)
    b1 = b1.to(attr.dtype, memory_format=torch.contiguous_format)
    b2 = b2.to(attr.dtype, memory_format=torch.contiguous_format)
    table = attr.reshape(nb * nv, nc).t()  # (C, B*V)
    vk = [_take(tri[:, k].to(itype), f) for k in range(3)]
    if nb > 1:  # per-batch attributes: offset into the flattened table
        if idx is None:
            base = torch.arange(nb, dtype=itype, device=f.device).repeat_interleave(hw) * nv
        else:
            base = (torch.div(idx, hw, rounding_mode="floor") * nv).to(itype)
        vk = [v + base for v in vk]
    out = attr.new_empty(f.numel(), nc)
    for c in range(nc):
        t = table[c].contiguous()
        a0, a1, a2 = _take(t, vk[0]), _take(t, vk[1]), _take(t, vk[2])
        val = a0 + b1 * (a1 - a0) + b2 * (a2 - a0)
        if covered is not None:
            val = torch.where(covered, val, val.new_zeros(()))
        out[:, c] = val
    return out


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes over the rasterised triangles.

    Args:
        attr: ``(V, C)`` or ``(B, V, C)`` (B = 1 broadcasts) floating per-vertex attributes, any
            range and channel meaning (e.g. uv, colour, x).
        rast: ``(B, H, W, 4)`` output of :func:`rasterize`, channels ``[b1, b2, z, tri_id + 1]``.
        tri: ``(F, 3)`` int64/int32 vertex indices, the ones passed to :func:`rasterize`.

    Returns:
        ``(B, H, W, C)`` in attr's dtype on attr's device: ``b0 * a0 + b1 * a1 + b2 * a2`` at
        covered pixels, 0 on background pixels. Differentiable with respect to ``attr`` (and to the
        barycentric channels of ``rast``).
    """
    _check_rast(rast)
    nb, h, w, _ = rast.shape
    attr = _batch_attr(attr, nb, "attr")
    _check_tri(tri, attr.shape[1])
    check_same_device(attr, rast, tri, names=["attr", "rast", "tri"])
    tri = tri.to(torch.int64)
    out = _interp_at(attr, tri, rast.reshape(-1, 4), None, h * w)
    return out.view(nb, h, w, attr.shape[2])


# ----------------------------------------------------------------------------------------------
# texture / sample_image
# ----------------------------------------------------------------------------------------------


def _batch_tex(tex: torch.Tensor, nb: int, name: str = "tex") -> torch.Tensor:
    """(C,Ht,Wt) or (1|B,C,Ht,Wt) -> (1|B,C,Ht,Wt)."""
    _check_either(tex, [["C", "Ht", "Wt"], ["B", "C", "Ht", "Wt"]], name)
    if tex.dim() == 3:
        tex = tex.unsqueeze(0)
    if tex.shape[0] not in (1, nb):
        raise ShapeError(f"{name}: expected shape {_batch_dims(nb, ['C', 'Ht', 'Wt'])}, got {list(tex.shape)}")
    check_floating(tex, name)
    return tex


def texture(tex: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear texture lookup at per-pixel uv coordinates.

    Args:
        tex: ``(B, C, Ht, Wt)`` or ``(C, Ht, Wt)`` floating texture (any range, any channel order;
            e.g. RGB in [0, 1]). A batch of 1 is broadcast over uv's batch.
        uv: ``(B, H, W, 2)`` floating, channels ``[u, v]`` in [0, 1]: (0, 0) the top-left corner of
            the texture, u right, v down; texel centres at ``((j + 0.5) / Wt, (i + 0.5) / Ht)``.
            Lookups outside [0, 1] are clamped to the border texels.
        mask: optional ``(B, H, W)`` or ``(B, 1, H, W)`` bool or numeric; the output is 0 where it
            is False / 0 (e.g. ``rast[..., 3] > 0``).

    Returns:
        ``(B, C, H, W)`` in tex's dtype (``grid_sample(align_corners=False, padding_mode="border")``),
        differentiable with respect to ``tex``.
    """
    check_shape(uv, ["B", "H", "W", "2"], "uv")
    check_floating(uv, "uv")
    nb, h, w, _ = uv.shape
    tex = _batch_tex(tex, nb)
    check_same_device(tex, uv, names=["tex", "uv"])
    if mask is not None:
        _check_either(mask, [[str(nb), str(h), str(w)], [str(nb), "1", str(h), str(w)]], "mask")
        check_same_device(mask, uv, names=["mask", "uv"])
    if tex.shape[0] != nb:
        tex = tex.expand(nb, -1, -1, -1)
    grid = uv.to(tex.dtype) * 2.0 - 1.0
    out = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if mask is not None:
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        mask = mask if mask.dtype == torch.bool else mask != 0
        out = torch.where(mask, out, out.new_zeros(()))
    return out


def sample_image(image: torch.Tensor, xy: torch.Tensor, *, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear lookup of an image at pixel coordinates (e.g. to unwrap a photo into UV space).

    Args:
        image: ``(B, C, H, W)`` floating image (any range and channel order).
        xy: ``(B, N, 2)`` or ``(B, Hs, Ws, 2)`` floating pixel coordinates ``[x, y]`` of ``image``:
            (0, 0) the top-left corner of the top-left pixel, pixel (i, j)'s centre at
            ``(j + 0.5, i + 0.5)``.
        padding_mode: ``grid_sample`` padding outside the image: ``"border"`` (clamp, default),
            ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, C, N)`` or ``(B, C, Hs, Ws)`` in image's dtype, differentiable with respect to
        ``image`` and ``xy``.
    """
    check_shape(image, ["B", "C", "H", "W"], "image")
    check_floating(image, "image")
    nb, _, h, w = image.shape
    _check_either(xy, [[str(nb), "N", "2"], [str(nb), "Hs", "Ws", "2"]], "xy")
    check_floating(xy, "xy")
    check_same_device(image, xy, names=["image", "xy"])
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=image.dtype, device=image.device)
    grid = xy.to(image.dtype) * scale - 1.0
    flat = grid.dim() == 3
    if flat:
        grid = grid.unsqueeze(2)  # (B, N, 1, 2)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.squeeze(3) if flat else out


# ----------------------------------------------------------------------------------------------
# cached rendering of fixed geometry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RasterCache:
    """Covered pixels of a fixed rasterisation and their uv, made by :func:`prepare`.

    Attributes:
        index: ``(B, K)`` int64 flat pixel index ``i * W + j`` of the covered pixels of each batch
            item (K = the largest covered count over the batch; items with fewer are padded with
            ``H * W``, a dummy pixel that is dropped).
        uv: ``(B, K, 2)`` interpolated ``[u, v]`` in [0, 1] at those pixels (padding 0), in the
            uv attribute's dtype.
        size: ``(B, H, W)`` of the rasterisation.
        padded: whether any item is padded.
    """

    index: torch.Tensor
    uv: torch.Tensor
    size: tuple[int, int, int]
    padded: bool


def prepare(rast: torch.Tensor, tri: torch.Tensor, uv_per_vertex: torch.Tensor) -> RasterCache:
    """Precompute what :func:`render_cached` needs to texture a fixed rasterisation.

    Args:
        rast: ``(B, H, W, 4)`` output of :func:`rasterize`.
        tri: ``(F, 3)`` int64/int32 vertex indices used for ``rast``.
        uv_per_vertex: ``(V, 2)`` or ``(B, V, 2)`` floating ``[u, v]`` per vertex, in [0, 1]
            (texture convention of :func:`texture`). Treated as constant (detached).

    Returns:
        A :class:`RasterCache`.
    """
    _check_rast(rast)
    nb, h, w, _ = rast.shape
    uvb = _batch_attr(uv_per_vertex, nb, "uv_per_vertex")
    check_shape(uvb, ["B", "V", "2"], "uv_per_vertex")
    _check_tri(tri, uvb.shape[1])
    check_same_device(uvb, rast, tri, names=["uv_per_vertex", "rast", "tri"])
    hw = h * w
    with torch.no_grad():
        rast_flat = rast.detach().reshape(-1, 4)
        idx = (rast_flat[:, 3] > 0).nonzero().squeeze(1)  # sorted by batch, then pixel
        uv = _interp_at(uvb.detach(), tri.to(torch.int64), rast_flat, idx, hw)
        bi = torch.div(idx, hw, rounding_mode="floor")
        counts = torch.bincount(bi, minlength=nb)
        k = int(counts.max()) if idx.numel() else 0
        padded = bool((counts != k).any())
        if not padded:
            index, uvp = (idx - bi * hw).view(nb, k), uv.view(nb, k, 2)
        else:
            rank = torch.arange(idx.numel(), device=idx.device) - (torch.cumsum(counts, 0) - counts)[bi]
            index = torch.full((nb, k), hw, dtype=torch.int64, device=idx.device)
            index[bi, rank] = idx - bi * hw
            uvp = uv.new_zeros(nb, k, 2)
            uvp[bi, rank] = uv
    return RasterCache(index=index, uv=uvp, size=(nb, h, w), padded=padded)


def render_cached(
    tex: torch.Tensor, cache: RasterCache, background: torch.Tensor | None = None
) -> torch.Tensor:
    """Render a texture through a :class:`RasterCache` (bilinear lookups on covered pixels only).

    Equal to ``texture(tex, interpolate(uv, rast, tri), mask=rast[..., 3] > 0)`` (plus the
    background where the mask is False), computed on the covered pixels only.

    Args:
        tex: ``(B, C, Ht, Wt)`` or ``(C, Ht, Wt)`` floating texture (B = 1 broadcasts).
        cache: from :func:`prepare`.
        background: optional tensor broadcastable to ``(B, C, H, W)`` in tex's dtype (e.g. a
            ``(C, 1, 1)`` colour or a full image) shown on uncovered pixels; default 0.

    Returns:
        ``(B, C, H, W)`` in tex's dtype, differentiable with respect to ``tex`` and ``background``.
    """
    nb, h, w = cache.size
    tex = _batch_tex(tex, nb)
    check_same_device(tex, cache.uv, names=["tex", "cache"])
    nc, k = tex.shape[1], cache.index.shape[1]
    grid = cache.uv.to(tex.dtype) * 2.0 - 1.0  # (B, K, 2)
    opts = dict(mode="bilinear", padding_mode="border", align_corners=False)
    if tex.shape[0] == 1:  # one lookup for all items
        vals = F.grid_sample(tex, grid.view(1, 1, nb * k, 2), **opts).view(nc, nb, k).transpose(0, 1)
    else:
        vals = F.grid_sample(tex, grid.view(nb, 1, k, 2), **opts).view(nb, nc, k)
    extra = 1 if cache.padded else 0
    if background is None:
        base = tex.new_zeros(nb, nc, h * w + extra)
    else:
        try:
            bg = torch.broadcast_to(background.to(tex.dtype), (nb, nc, h, w))
        except RuntimeError:
            raise ShapeError(
                f"background: expected a shape broadcastable to {[nb, nc, h, w]}, got {list(background.shape)}"
            ) from None
        base = bg.reshape(nb, nc, h * w)
        if extra:
            base = torch.cat([base, base.new_zeros(nb, nc, 1)], dim=2)
    out = base.scatter(2, cache.index.unsqueeze(1).expand(nb, nc, k), vals)
    if extra:
        out = out[:, :, : h * w]
    return out.reshape(nb, nc, h, w)


# ----------------------------------------------------------------------------------------------
# the face mesh at a camera
# ----------------------------------------------------------------------------------------------


def face_screen_positions(vertices, camera, *, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """Project model-frame vertices to the screen-space ``pos`` that :func:`rasterize` takes.

    Args:
        vertices: ``(V, 3)`` float64 numpy array, model frame (y up, cm).
        camera: a :class:`~facerefiner.camera.Camera` whose image is the render target.

    Returns:
        ``(V, 3)`` tensor ``[x, y, z]``: pixel coordinates of ``camera.image_size`` and camera depth.
    """
    return torch.as_tensor(camera.project(vertices), dtype=dtype, device=device)


def face_raster(vertices, camera, layout, *, device: str | torch.device = "cpu") -> tuple[torch.Tensor, RasterCache]:
    """Rasterise the face mesh at ``camera`` (image ``camera.image_size``) once, for many renders.

    Args:
        vertices: ``(V, 3)`` float64 model-frame vertices (``FaceGeometry.vertices``).
        camera: :class:`~facerefiner.camera.Camera`; its ``image_size`` (W, H) is the output size.
        layout: :class:`~facerefiner.layout.UVLayout` giving the triangles and per-vertex uv.

    Returns:
        ``(rast, cache)``: ``rast`` (1, H, W, 4) float32 as :func:`rasterize` returns it, and the
        :class:`RasterCache` to pass to :func:`render_cached` (or :func:`render_face`).
    """
    w, h = camera.image_size
    pos = face_screen_positions(vertices, camera, device=device)
    tri = layout.faces_tensor(device)
    rast = rasterize(pos, tri, (h, w), perspective=camera.perspective)
    return rast, prepare(rast, tri, layout.uv_tensor(device))


def coverage_mask(cache: RasterCache) -> torch.Tensor:
    """``(B, H, W)`` bool: the pixels a :class:`RasterCache` covers."""
    nb, h, w = cache.size
    m = torch.zeros(nb, h * w + 1, dtype=torch.bool, device=cache.index.device)
    m.scatter_(1, cache.index, True)
    return m[:, : h * w].view(nb, h, w)


def render_face(tex: torch.Tensor, vertices=None, camera=None, layout=None, *,
                cache: RasterCache | None = None,
                background: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a face texture at a camera (per-pixel bilinear lookup, differentiable in ``tex``).

    Args:
        tex: ``(3, S, S)`` (or ``(C, S, S)``) float texture in [0, 1], the layout's uv convention.
        vertices, camera, layout: the mesh and camera (see :func:`face_raster`); not needed when
            ``cache`` is given.
        cache: a :class:`RasterCache` from :func:`face_raster` (rasterise once, render many times).
        background: optional tensor broadcastable to ``(C, H, W)`` shown where the mesh is not.

    Returns:
        ``(image, mask)``: ``(C, H, W)`` in tex's dtype and ``(H, W)`` bool coverage.
    """
    if cache is None:
        if vertices is None or camera is None or layout is None:
            raise ValueError("render_face: give either cache or vertices, camera and layout")
        _, cache = face_raster(vertices, camera, layout, device=tex.device)
    img = render_cached(tex, cache, None if background is None else background.unsqueeze(0) if background.dim() == 3 else background)
    return img[0], coverage_mask(cache)[0]


def visible_pixels(visibility: torch.Tensor, cache: RasterCache) -> torch.Tensor:
    """The pixels that see visible texels alone.

    Args:
        visibility: ``(S, S)`` bool (or 0/1 float) visibility mask V of the texture.
        cache: from :func:`prepare`.

    Returns:
        ``(B, 1, H, W)`` bool: the bilinear lookup of V through ``cache`` is >= :data:`FULLY_VISIBLE`
        (False on uncovered pixels), on the cache's device.
    """
    with torch.no_grad():
        v = render_cached(visibility[None].to(device=cache.uv.device, dtype=torch.float32), cache)
    return v >= FULLY_VISIBLE
