"""Sample positions for the style and content losses.

Convention for every position returned here: a (N, 2) float tensor of normalised image coordinates
``(x, y)`` in [0, 1], x to the right, y down, (0, 0) the top-left corner of the image and (1, 1) the
bottom-right corner. Positions are always texel centres of the (H, W) grid they were drawn on:
texel (row j_y, column j_x) is at ``((j_x + 0.5) / W, (j_y + 0.5) / H)``.

To read features at these positions from a feature map of any resolution (the image itself or a
VGG activation), sample bilinearly with ``grid_sample(..., align_corners=False)`` at
``2 * positions - 1`` -- :func:`sample_features` does exactly that. A texel centre of the image then
lands at the matching sub-pixel location of every coarser map.

* :func:`grid_positions` -- content samples: a strided grid with a random offset, restricted to a
  valid-region mask, then exactly ``n`` positions (random subset, or repeats when too few).
* :func:`style_positions` -- style samples: ``sets`` sets of ``n_per_set`` random texels inside the
  visibility mask, alternating between the sampled texture and its left-right mirror image.

All randomness comes from the optional ``torch.Generator`` (a CPU generator; draws are made on the
CPU and the result is moved to ``device``), so results are deterministic given its seed.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .check import check_shape
from .errors import ShapeError

logger = logging.getLogger(__name__)

__all__ = ["grid_positions", "style_positions", "sample_features", "mirror_positions"]


def _as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask > 0.5


def _choose(count: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Exactly n indices into range(count), int64 on the CPU, in increasing order.

    count >= n: a random subset without repetition. count < n: every index n // count times plus
    a random subset of n % count indices once more.
    """
    if count >= n:
        idx = torch.randperm(count, generator=generator)[:n]
    else:
        reps = torch.arange(count).repeat(n // count)
        extra = torch.randperm(count, generator=generator)[: n % count]
        idx = torch.cat([reps, extra])
    return torch.sort(idx).values


def _centres(jy: torch.Tensor, jx: torch.Tensor, h: int, w: int, device, dtype) -> torch.Tensor:
    pos = torch.stack([(jx.to(torch.float64) + 0.5) / w, (jy.to(torch.float64) + 0.5) / h], dim=1)
    return pos.to(device=device, dtype=dtype)


def grid_positions(
    size_hw: Sequence[int],
    n: int = 2048,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Content sample positions: a strided grid with a random offset, exactly ``n`` of them.

    The stride is ``s = max(1, floor(sqrt(A / n)))`` texels, A the number of valid texels, so that
    about ``A / s**2 >= n`` grid points fall in the valid region; the grid offset ``(o_y, o_x)`` is
    drawn uniformly from ``[0, s)**2`` on every call. Of the grid texels that are valid, a random
    subset of exactly ``n`` is kept (or, when fewer than ``n`` are valid, all of them repeated,
    see below). If the offset grid misses the valid region entirely (a very thin mask), the
    stride falls back to 1.

    Args:
        size_hw: (H, W) of the texture the positions are for.
        n: number of positions returned (>= 1).
        generator: optional CPU ``torch.Generator`` for the offset and the subset.
        mask: optional valid region, bool (or float, thresholded at 0.5) of shape (H, W) or
            (B, H, W); a (B, H, W) mask is reduced with ``all`` over B (the positions are shared by
            the batch, so they must be valid in every item).
        device: device of the result (default: the mask's device, else CPU).
        dtype: float dtype of the result (default ``torch.get_default_dtype()``).

    Returns:
        (n, 2) tensor of ``(x, y)`` texel-centre positions in [0, 1] (see the module docstring),
        in raster order (row-major). When fewer than ``n`` grid texels are valid, each one appears
        ``n // count`` or ``n // count + 1`` times.

    Raises:
        ShapeError: the mask's shape does not match ``size_hw``.
        ValueError: ``n < 1`` or the mask has no valid texel.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"size_hw must be positive, got {tuple(size_hw)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if mask is not None:
        if mask.dim() == 3:
            check_shape(mask, ["B", str(h), str(w)], "mask")
            valid = _as_bool_mask(mask).all(dim=0)
        else:
            check_shape(mask, [str(h), str(w)], "mask")
            valid = _as_bool_mask(mask)
        device = mask.device if device is None else device
        valid = valid.cpu()
    else:
        valid = torch.ones(h, w, dtype=torch.bool)
    dtype = dtype or torch.get_default_dtype()
    area = int(valid.sum())
    if area == 0:
        raise ValueError("grid_positions: the mask has no valid texel")

    stride = max(1, int(math.floor(math.sqrt(area / n))))
    offset = torch.randint(0, stride, (2,), generator=generator) if stride > 1 else torch.zeros(2, dtype=torch.long)
    oy, ox = int(offset[0]), int(offset[1])
    rows = torch.arange(oy, h, stride)
    cols = torch.arange(ox, w, stride)
    jy, jx = torch.nonzero(valid[rows][:, cols], as_tuple=True)
    jy, jx = rows[jy], cols[jx]
    if jy.numel() == 0:
        logger.debug("grid_positions: stride %d grid missed the mask, falling back to stride 1", stride)
        jy, jx = torch.nonzero(valid, as_tuple=True)
    idx = _choose(jy.numel(), n, generator)
    return _centres(jy[idx], jx[idx], h, w, device, dtype)


def style_positions(
    mask: torch.Tensor,
    n_per_set: int = 1000,
    sets: int = 5,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[tuple[torch.Tensor, bool]]:
    """Style sample positions inside the visibility mask, alternating plain and mirrored sets.

    Set ``i`` is mirrored when ``i`` is odd (sets 0, 2, 4 plain; 1, 3 mirrored). A plain set holds
    ``n_per_set`` distinct texels drawn uniformly from ``mask``; a mirrored set holds texels drawn
    the same way from ``mask.flip(-1)`` (the mask mirrored left-right). If the mask has fewer than
    ``n_per_set`` valid texels, every one is used ``n_per_set // count`` times plus a random subset
    once more.

    What the caller does with the result::

        tex_m = torch.flip(tex, dims=[-1])                     # (B, 3, H, W) sampled texture I_S
        for pos, mirrored in style_positions(visible, 1000, 5, g):
            src = tex_m if mirrored else tex
            feats.append(hypercolumns(src, pos))               # e.g. VGG16 of src + sample_features
        y = torch.cat(feats)                                   # (5000, C) style samples

    i.e. the features of a mirrored set are those of the *mirrored texture* (VGG run on the
    flipped image, so that oriented features are mirrored too) at the returned positions. Equivalent
    positions in the unflipped texture are ``mirror_positions(pos)`` = ``(1 - x, y)`` (same
    colours, but not the same VGG features).

    Args:
        mask: (H, W) bool (or float, thresholded at 0.5) visibility mask of the sampled texture.
        n_per_set: positions per set (>= 1).
        sets: number of sets (>= 1).
        generator: optional CPU ``torch.Generator``.
        device: device of the positions (default: the mask's device).
        dtype: float dtype of the positions (default ``torch.get_default_dtype()``).

    Returns:
        A list of ``sets`` tuples ``(positions, mirrored)``: positions (n_per_set, 2) of ``(x, y)``
        texel centres in [0, 1] (module docstring), in raster order, inside ``mask`` (plain) or
        inside ``mask.flip(-1)`` (mirrored); mirrored a Python bool.

    Raises:
        ShapeError: the mask is not 2-D.
        ValueError: the mask is empty, or ``n_per_set`` / ``sets`` < 1.
    """
    check_shape(mask, ["H", "W"], "mask")
    if n_per_set < 1 or sets < 1:
        raise ValueError(f"n_per_set and sets must be >= 1, got {n_per_set}, {sets}")
    h, w = mask.shape
    device = mask.device if device is None else device
    dtype = dtype or torch.get_default_dtype()
    valid = _as_bool_mask(mask).cpu()
    if not bool(valid.any()):
        raise ValueError("style_positions: the visibility mask has no valid texel")
    flipped = valid.flip(-1)
    out: list[tuple[torch.Tensor, bool]] = []
    for i in range(sets):
        mirrored = i % 2 == 1
        jy, jx = torch.nonzero(flipped if mirrored else valid, as_tuple=True)
        idx = _choose(jy.numel(), n_per_set, generator)
        out.append((_centres(jy[idx], jx[idx], h, w, device, dtype), mirrored))
    return out


def mirror_positions(positions: torch.Tensor) -> torch.Tensor:
    """Left-right mirror of positions: (N, 2) ``(x, y)`` -> (N, 2) ``(1 - x, y)``.

    Texel centre column j of a W-wide image maps to column W - 1 - j, i.e. the same texel in the
    image flipped with ``torch.flip(img, dims=[-1])``.
    """
    check_shape(positions, ["N", "2"], "positions")
    return torch.stack([1.0 - positions[:, 0], positions[:, 1]], dim=1)


def sample_features(fmap: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample a feature map at normalised positions.

    Args:
        fmap: (B, C, h, w) float feature map (any resolution; it covers the whole image).
        positions: (N, 2) float ``(x, y)`` in [0, 1] (module docstring), same device.

    Returns:
        (B, N, C) samples, via ``grid_sample(fmap, 2 * positions - 1, mode="bilinear",
        padding_mode="border", align_corners=False)``; differentiable with respect to ``fmap``.
        At texel centres of a map of the matching size the values are the texels themselves.
    """
    check_shape(fmap, ["B", "C", "h", "w"], "fmap")
    check_shape(positions, ["N", "2"], "positions")
    if positions.device != fmap.device:
        raise ShapeError(f"positions on {positions.device}, fmap on {fmap.device}: expected one device")
    b = fmap.shape[0]
    grid = (positions.to(fmap.dtype) * 2.0 - 1.0).view(1, 1, -1, 2).expand(b, 1, -1, 2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0, :].transpose(1, 2)
