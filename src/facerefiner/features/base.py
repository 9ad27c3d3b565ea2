"""The feature extractors' one interface (:class:`FeatureExtractor`) and the sampling of feature
maps at texel positions (:func:`sample_maps`); see :mod:`facerefiner.features`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch
import torch.nn.functional as F

from ..check import check_floating, check_shape
from ..errors import ShapeError


# Sampling
# --------------------------------------------------------------------------------------------------


def sample_maps(maps: Sequence[torch.Tensor], pos: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample every map at the same normalised positions and concatenate the channels.

    Args:
        maps: feature maps ``[(B, C_l, H_l, W_l)]``, floating point, one device and dtype, each
            covering the whole image.
        pos: (N, 2) positions shared by the batch, or (B, N, 2) per batch item; float ``(x, y)`` in
            [0, 1], x right, y down, (0, 0) the top-left corner of the image (module docstring).

    Returns:
        (B, N, sum C_l) hypercolumns in the maps' dtype, channels in map order. Sampling uses
        ``grid_sample(mode="bilinear", padding_mode="border", align_corners=False)`` at
        ``2 * pos - 1``, so at a texel centre ``((j + 0.5) / W_l, (i + 0.5) / H_l)`` of a map the
        value is exactly that texel. Differentiable w.r.t. the maps (and the positions).
    """
    if len(maps) == 0:
        raise ShapeError("maps: expected at least one feature map, got an empty list")
    first = maps[0]
    check_shape(first, ["B", "C", "H", "W"], "maps[0]")
    b = first.shape[0]
    if pos.dim() == 2:
        check_shape(pos, ["N", "2"], "pos")
        grid = pos.to(device=first.device, dtype=first.dtype).mul(2.0).sub(1.0)
        grid = grid.view(1, 1, -1, 2).expand(b, 1, -1, 2)
    else:
        check_shape(pos, [str(b), "N", "2"], "pos")
        grid = pos.to(device=first.device, dtype=first.dtype).mul(2.0).sub(1.0).unsqueeze(1)
    out = []
    for i, m in enumerate(maps):
        check_shape(m, [str(b), "C", "H", "W"], f"maps[{i}]")
        out.append(F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=False))
    # each (B, C_l, 1, N) -> (B, C, N) -> (B, N, C)
    return torch.cat(out, dim=1)[:, :, 0, :].transpose(1, 2)


def _check_image(image: torch.Tensor, min_size: int = 1) -> None:
    check_shape(image, ["B", "3", "H", "W"], "image")
    check_floating(image, "image")
    h, w = image.shape[-2:]
    if h < min_size or w < min_size:
        raise ShapeError(f"image: expected H and W >= {min_size}, got {list(image.shape)}")


# --------------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------------


class FeatureExtractor(ABC):
    """One feature extractor (see the module docstring for the tensor conventions).

    Attributes:
        name: registry name ("vgg16", "patches").
        channels: total hypercolumn channels (sum of ``layer_channels``).
        layer_names: name of each map returned by :meth:`forward`, first ``"rgb"``.
        layer_channels: channels of each map returned by :meth:`forward`, first 3.
    """

    name: str = ""
    layer_names: tuple[str, ...] = ()
    layer_channels: tuple[int, ...] = ()

    @property
    def channels(self) -> int:
        return int(sum(self.layer_channels))

    @abstractmethod
    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) float RGB in [0, 1] -> ``[(B, C_l, H_l, W_l)]``, first entry the image itself."""

    def sample(self, maps: Sequence[torch.Tensor], pos: torch.Tensor) -> torch.Tensor:
        """Maps from :meth:`forward`, pos (N, 2) or (B, N, 2) in [0, 1] -> (B, N, channels); see :func:`sample_maps`."""
        return sample_maps(maps, pos)

    def features(self, image: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Hypercolumns of ``image`` (B, 3, H, W) RGB [0, 1] at ``pos`` (N, 2) -> (B, N, channels)."""
        return self.sample(self.forward(image), pos)

    __call__ = features

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, channels={self.channels}, layers={list(self.layer_names)})"

