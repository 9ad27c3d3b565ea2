"""Laplacian pyramid parametrisation of an image (as in STROTSS).

``build(x, levels)`` returns ``levels + 1`` tensors: ``levels`` band-pass levels from fine to coarse,
then the low-pass residual::

    for i in range(levels):
        pyramid.append(x - up(down(x)))
        x = down(x)
    pyramid.append(x)

``down`` halves each side (``max(h // 2, 1)``, ``max(w // 2, 1)``) and ``up`` resizes back to the
size of the level; both are ``F.interpolate(..., mode="bilinear", align_corners=False)`` (no
antialiasing). ``collapse`` folds back from coarse to fine (``x_i = band_i + up(x_{i+1})`` at the
size of ``band_i``), so ``collapse(build(x)) == x`` up to float rounding for any size, odd included.

The refiner optimises the levels of a :class:`LaplacianTexture` instead of the texels: each level is
a free ``nn.Parameter``, which spreads every gradient over all scales (the coarse levels move large
regions at once).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .check import check_shape

logger = logging.getLogger(__name__)

__all__ = ["build", "collapse", "LaplacianTexture"]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _half(size: Sequence[int]) -> tuple[int, int]:
    return max(int(size[0]) // 2, 1), max(int(size[1]) // 2, 1)


def build(image: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
    """Laplacian pyramid of an image.

    Args:
        image: (B, C, H, W) float image.
        levels: number of band-pass levels (>= 0).

    Returns:
        A list of ``levels + 1`` tensors with the dtype and device of ``image``: entry ``i < levels``
        is the band-pass level of shape (B, C, H_i, W_i) with ``H_0 = H`` and
        ``H_{i+1} = max(H_i // 2, 1)`` (likewise W); the last entry is the low-pass residual of shape
        (B, C, H_levels, W_levels). Differentiable with respect to ``image``.
    """
    check_shape(image, ["B", "C", "H", "W"], "image")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    pyramid: list[torch.Tensor] = []
    current = image
    for _ in range(levels):
        size = tuple(current.shape[-2:])
        down = _resize(current, _half(size))
        pyramid.append(current - _resize(down, size))
        current = down
    pyramid.append(current)
    return pyramid


def collapse(pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fold a Laplacian pyramid (as returned by :func:`build`) back into an image.

    Args:
        pyramid: ``levels + 1`` tensors, fine to coarse, each (B, C, H_i, W_i); the last one is the
            residual.

    Returns:
        (B, C, H_0, W_0) image: starting from the residual, repeatedly upsample (bilinear) to the
        size of the next finer level and add it.
    """
    if len(pyramid) == 0:
        raise ValueError("collapse needs a non-empty pyramid")
    for i, level in enumerate(pyramid):
        check_shape(level, ["B", "C", "H", "W"], f"pyramid[{i}]")
    current = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        current = level + _resize(current, tuple(level.shape[-2:]))
    return current


class LaplacianTexture(nn.Module):
    """An image parametrised by its Laplacian pyramid; every level is a free ``nn.Parameter``.

    Args:
        image: (B, C, H, W) float initial image (copied; its dtype and device are kept).
        levels: number of band-pass levels; the module holds ``levels + 1`` parameters
            (``self.pyramid[0]`` finest band ... ``self.pyramid[levels]`` residual).

    ``forward()`` returns the (B, C, H, W) image (:func:`collapse` of the levels).

    After :meth:`resize` or :meth:`set_image` the parameters are new tensors: build the optimiser
    again (``torch.optim.SGD(tex.parameters(), ...)``; frozen levels are skipped only if you pass
    ``[p for p in tex.parameters() if p.requires_grad]``, otherwise they simply get no gradient).
    """

    def __init__(self, image: torch.Tensor, levels: int = 5) -> None:
        super().__init__()
        check_shape(image, ["B", "C", "H", "W"], "image")
        self.levels = int(levels)
        self._trainable_from = 0
        self.pyramid = nn.ParameterList()
        self.set_image(image)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image this module produces."""
        return tuple(self.pyramid[0].shape[-2:])  # type: ignore[return-value]

    @property
    def trainable_from(self) -> int:
        """Index of the finest trainable level (0: all levels trainable)."""
        return self._trainable_from

    def forward(self) -> torch.Tensor:
        """The image, (B, C, H, W), differentiable with respect to the trainable levels."""
        return collapse(list(self.pyramid))

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> None:
        """Replace all levels by the pyramid of ``image`` (B, C, H, W), at that image's size.

        The trainable setting (:meth:`set_trainable`) is kept. The parameters are new objects.
        """
        check_shape(image, ["B", "C", "H", "W"], "image")
        levels = build(image.detach(), self.levels)
        self.pyramid = nn.ParameterList([nn.Parameter(t.clone().contiguous()) for t in levels])
        self.set_trainable(self._trainable_from)

    @torch.no_grad()
    def resize(self, size_hw: tuple[int, int]) -> None:
        """Re-parametrise at a new resolution: collapse the current image, resize it bilinearly
        (``align_corners=False``, with antialiasing when shrinking) to ``size_hw = (H, W)`` and
        rebuild the pyramid from it. The trainable setting is kept; the parameters are new objects.
        """
        h, w = int(size_hw[0]), int(size_hw[1])
        if h < 1 or w < 1:
            raise ValueError(f"size must be positive, got {size_hw}")
        img = self.forward()
        if (h, w) != tuple(img.shape[-2:]):
            shrink = h < img.shape[-2] or w < img.shape[-1]
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
        self.set_image(img)

    def set_trainable(self, levels_from: int = 0) -> None:
        """Make only levels ``levels_from .. levels`` (the coarser ones and the residual) trainable.

        ``levels_from = 0`` trains everything; ``levels_from = self.levels`` trains only the residual.
        Frozen levels get ``requires_grad = False`` and therefore no gradient.
        """
        levels_from = int(levels_from)
        if not 0 <= levels_from <= self.levels:
            raise ValueError(f"levels_from must be in [0, {self.levels}], got {levels_from}")
        self._trainable_from = levels_from
        for i, p in enumerate(self.pyramid):
            p.requires_grad_(i >= levels_from)
