"""Feature extractors for the style and content losses: VGG16 hypercolumns and a network-free fallback.

Every extractor has one interface (:class:`FeatureExtractor`):

* ``forward(image) -> maps``: ``image`` is a (B, 3, H, W) floating-point tensor, RGB channel order,
  values in [0, 1]. ``maps`` is a list of per-layer feature maps ``[(B, C_l, H_l, W_l)]`` in the
  image's dtype and device; the first entry is always the input image itself (RGB in [0, 1], not
  normalised), the others are coarser or equal-sized maps that cover the whole image.
* ``sample(maps, pos) -> hypercolumns``: ``pos`` is a (N, 2) (or per-batch (B, N, 2)) float tensor of
  normalised image coordinates ``(x, y)`` in [0, 1], x to the right, y down, (0, 0) the top-left
  *corner* of the image and (1, 1) the bottom-right corner (the convention of
  :mod:`facerefiner.sampling`: texel (j_y, j_x) of an (H, W) grid is at ``((j_x + 0.5) / W,
  (j_y + 0.5) / H)``). Every map is sampled bilinearly at the same positions with
  ``grid_sample(map, 2 * pos - 1, mode="bilinear", padding_mode="border", align_corners=False)``
  and the samples are concatenated along channels in map order: (B, N, channels), first 3 channels
  the RGB colour in [0, 1].
* ``features(image, pos)`` (also ``extractor(image, pos)``) is ``sample(forward(image), pos)``.

Everything is differentiable with respect to the image (the refiner back-propagates through it
every step); network weights never require gradients. Extractors are built once and reused: the
weights live on the device given at construction, and a copy in another dtype/device is made once
and cached if an image of that dtype/device comes in.

Extractors (:func:`get_extractor`):

``"vgg16"`` -- :class:`VGG16Extractor`. The 13 convolution layers of VGG16 (torchvision's
    ``features.*`` key names and layer indices). Default hypercolumn layers, as in the paper and
    STROTSS: the RGB input plus relu1_1, relu1_2, relu2_1, relu2_2, relu3_1, relu3_2, relu3_3,
    relu4_3, relu5_3: 3 + 64*2 + 128*2 + 256*3 + 512*2 = 2179 channels. The network runs only up to
    the deepest requested layer. Two checkpoint input conventions are supported (see
    :data:`CONVENTIONS` and :func:`detect_convention`): ``"torchvision"`` (RGB in [0, 1],
    ``(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)``) and ``"caffe"`` (BGR, 0..255, minus
    the mean (B, G, R) = (103.939, 116.779, 123.68)). The extractor always takes RGB in [0, 1] and
    applies the checkpoint's preprocessing itself.
``"patches"`` -- :class:`PatchExtractor`. No network, no weights: multi-scale raw-pixel patch
    descriptors in a luminance/chroma colour space (fixed, seeded random projections), for offline
    use without weights. Lower quality than VGG16 but the same interface.
``"auto"`` -- ``vgg16`` when weights resolve (:func:`resolve_vgg16_weights`), else ``patches`` with
    a one-line notice in ``info["notice"]`` saying what was missing and how to supply weights.

The package: :mod:`.base` (the interface and the sampling), :mod:`.vgg` (VGG16 and its
checkpoints), :mod:`.weights` (where the weights come from), :mod:`.patches` (no network), and
:func:`get_extractor` here (the registry).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .base import FeatureExtractor, sample_maps
from .patches import PatchExtractor
from .vgg import CONVENTIONS, PAPER_LAYERS, VGG16_LAYERS, VGG16Extractor, detect_convention, load_vgg16_state_dict
from .weights import (ENV_OFFLINE, ENV_WEIGHTS, TORCHVISION_VGG16_FILE, TORCHVISION_VGG16_URL, _HOW_TO_SUPPLY,
                      _resolve, resolve_vgg16_weights)

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureExtractor",
    "VGG16Extractor",
    "PatchExtractor",
    "get_extractor",
    "resolve_vgg16_weights",
    "load_vgg16_state_dict",
    "detect_convention",
    "sample_maps",
    "VGG16_LAYERS",
    "PAPER_LAYERS",
    "CONVENTIONS",
    "TORCHVISION_VGG16_URL",
    "TORCHVISION_VGG16_FILE",
    "ENV_WEIGHTS",
    "ENV_OFFLINE",
]


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

EXTRACTORS = ("vgg16", "patches", "auto")


def _load_vgg16(path: Path, weights_format: str, device, layers) -> tuple[VGG16Extractor, dict]:
    sd = load_vgg16_state_dict(path)
    if weights_format == "auto":
        convention, reason = detect_convention(sd, path)
    else:
        convention, reason = weights_format, "weights_format given"
    ext = VGG16Extractor(sd, convention, layers=layers, device=device)
    logger.info("VGG16 weights %s, %s convention (%s)", path, convention, reason)
    info = {
        "extractor": "vgg16",
        "weights": str(path),
        "convention": convention,
        "convention_reason": reason,
        "notice": None,
    }
    return ext, info


def get_extractor(
    name: str = "auto",
    *,
    weights: str | os.PathLike | None = None,
    weights_format: str = "auto",
    device: str | torch.device = "cpu",
    layers: Sequence[str] | None = None,
    download: bool | None = None,
    **patch_kwargs: Any,
) -> tuple[FeatureExtractor, dict[str, Any]]:
    """Build a feature extractor by name.

    Args:
        name: ``"vgg16"`` (weights required), ``"patches"`` (no weights) or ``"auto"`` (vgg16 when
            weights resolve, else patches).
        weights: explicit VGG16 weights file (the CLI's ``--vgg-weights``); else
            :func:`resolve_vgg16_weights` order (``FACEREFINER_VGG16``, torch hub cache, download).
        weights_format: ``"auto"`` (:func:`detect_convention`), ``"torchvision"`` or ``"caffe"``.
        device: device of the weights / constants.
        layers: VGG16 hypercolumn layers (default :data:`PAPER_LAYERS`).
        download: allow the torchvision download (None: unless ``FACEREFINER_OFFLINE=1``).
        **patch_kwargs: options of :class:`PatchExtractor` (levels, kernel_size, luma, chroma, gain, seed).

    Returns:
        ``(extractor, info)``; info keys: ``extractor`` (the name actually used), ``requested``,
        ``weights`` (path or None), ``convention`` (``"caffe"``/``"torchvision"``/None),
        ``convention_reason``, ``channels`` and ``notice`` (a one-line message for the user when
        ``auto`` fell back to patches, else None).

    Raises:
        WeightsError: ``vgg16`` and no weights resolve; an explicit/env weights file that is
            missing, corrupt or incomplete (also for ``auto``: a configured file that is broken is
            reported, not silently replaced).
        ValueError: unknown name or weights_format.
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {list(EXTRACTORS)}")
    if weights_format not in ("auto", *CONVENTIONS):
        raise ValueError(f"weights_format must be 'auto', 'torchvision' or 'caffe', got {weights_format!r}")
    layers = PAPER_LAYERS if layers is None else tuple(layers)
    if name == "patches":
        ext = PatchExtractor(device=device, **patch_kwargs)
        info = {"extractor": "patches", "weights": None, "convention": None, "convention_reason": None, "notice": None}
    elif name == "vgg16":
        ext, info = _load_vgg16(resolve_vgg16_weights(weights, download=download), weights_format, device, layers)
    else:
        path, tried = _resolve(weights, download, 3.0)
        if path is not None:
            ext, info = _load_vgg16(path, weights_format, device, layers)
        else:
            ext = PatchExtractor(device=device, **patch_kwargs)
            notice = (
                f"VGG16 weights not found ({'; '.join(tried)}), using the network-free 'patches' "
                f"features (lower quality); {_HOW_TO_SUPPLY}."
            )
            logger.info(notice)
            info = {"extractor": "patches", "weights": None, "convention": None, "convention_reason": None, "notice": notice}
    info["requested"] = name
    info["channels"] = ext.channels
    return ext, info
