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
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import socket
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .check import check_floating, check_shape
from .errors import ShapeError, WeightsError

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
# Constants
# --------------------------------------------------------------------------------------------------

ENV_WEIGHTS = "FACEREFINER_VGG16"
ENV_OFFLINE = "FACEREFINER_OFFLINE"
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/" + TORCHVISION_VGG16_FILE
_HOW_TO_SUPPLY = (
    f"pass --vgg-weights PATH or set {ENV_WEIGHTS}=PATH (torchvision's {TORCHVISION_VGG16_FILE} "
    "or a Caffe-convention VGG16 conv state dict)"
)

#: Input conventions of VGG16 checkpoints: channel order, the scale applied to [0, 1] input, the
#: mean subtracted after scaling and the std divided by (per channel, in the checkpoint's order).
CONVENTIONS: dict[str, dict[str, Any]] = {
    "torchvision": {"order": "RGB", "scale": 1.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "caffe": {"order": "BGR", "scale": 255.0, "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
}

# Known checkpoint files: sha256 (full, or the 8-hex-digit prefix torch hub embeds in file names).
_KNOWN_SHA256 = {
    "f448f0151f0b72284e5ac1125f0771042817280dabf515efdb28e6cd8ac3c69e": ("caffe", "VGG16 Caffe conv weights (vgg16_imagenet_caffe_conv.pth)"),
}
_KNOWN_SHA256_PREFIX = {
    "397923af": ("torchvision", "torchvision vgg16-397923af.pth"),
}

# VGG16 "features" layout (torchvision indices): conv index -> (relu name, in, out); pools after 2,7,14,21,28.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_VGG16_RELU: dict[str, int] = {}  # relu name -> module index of the ReLU in `features`
_VGG16_CONV_KEYS: list[str] = []
_VGG16_CONV_SHAPES: dict[str, tuple[int, ...]] = {}


def _build_layout() -> None:
    idx, block, sub, cin = 0, 1, 1, 3
    for v in _VGG16_CFG:
        if v == "M":
            idx += 1
            block += 1
            sub = 1
            continue
        _VGG16_CONV_KEYS.extend([f"features.{idx}.weight", f"features.{idx}.bias"])
        _VGG16_CONV_SHAPES[f"features.{idx}.weight"] = (v, cin, 3, 3)
        _VGG16_CONV_SHAPES[f"features.{idx}.bias"] = (v,)
        _VGG16_RELU[f"relu{block}_{sub}"] = idx + 1
        cin = v
        idx += 2
        sub += 1


_build_layout()

#: All ReLU layers of VGG16, shallow to deep.
VGG16_LAYERS: tuple[str, ...] = tuple(_VGG16_RELU)
#: The hypercolumn layers of the paper (and STROTSS), besides the RGB input.
PAPER_LAYERS: tuple[str, ...] = (
    "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu4_3", "relu5_3",
)

# Value fingerprints of the two published VGG16 weight sets: filters 0..2 of features.0.weight
# (3 filters x 3 input channels x 3 x 3, the checkpoint's own channel order). Caffe: the original
# VGG release (the file in ../shared/models); torchvision: vgg16-397923af.pth (4 decimals).
_FP_CAFFE = torch.tensor([
    0.429471, 0.373467, -0.061360, 0.274770, 0.038681, -0.367223, -0.057468, -0.262250, -0.350097,
    0.550379, 0.440075, -0.081387, 0.345739, 0.040632, -0.453501, -0.058635, -0.330670, -0.485030,
    0.480015, 0.408547, -0.065146, 0.310477, 0.050202, -0.403383, -0.050872, -0.285228, -0.418516,
    0.117274, 0.162063, 0.135694, 0.148350, 0.202298, 0.161688, 0.129344, 0.171572, 0.138710,
    0.020877, 0.047341, 0.041854, 0.031049, 0.065810, 0.046257, 0.031679, 0.054710, 0.042320,
    -0.172697, -0.170375, -0.154352, -0.187601, -0.177572, -0.174400, -0.166003, -0.166667, -0.157049,
    0.034013, 0.001709, -0.115694, 0.161560, 0.156414, -0.089937, 0.012903, 0.000054, -0.125340,
    0.098831, 0.051382, -0.101763, 0.240751, 0.220311, -0.066744, 0.075959, 0.048680, -0.112076,
    0.037558, -0.004963, -0.138038, 0.166595, 0.151188, -0.109850, 0.015628, -0.007967, -0.149133,
], dtype=torch.float64).view(3, 3, 3, 3)
_FP_TORCHVISION = torch.tensor([
    -0.5537, 0.1427, 0.5290, -0.5831, 0.3566, 0.7657, -0.6902, -0.0480, 0.4841,
    0.1755, 0.0099, -0.0814, 0.0441, -0.0703, -0.2604, 0.1324, -0.1728, -0.1323,
    0.3130, -0.1659, -0.4275, 0.4752, -0.0827, -0.4870, 0.6320, 0.0193, -0.2775,
    0.2325, 0.1267, 0.1861, -0.4281, -0.2435, 0.2463, -0.2507, 0.1418, -0.0055,
    -0.1408, -0.2190, 0.1504, -0.8413, -0.3518, 0.5640, -0.2419, 0.5193, 0.5391,
    -0.3143, -0.3705, -0.1309, -0.4714, -0.1550, 0.3459, 0.0544, 0.5868, 0.4958,
    0.1772, 0.5215, 0.0099, -0.2718, -0.7171, 0.3129, -0.0758, -0.2208, 0.3346,
    0.3092, 0.6707, 0.0205, -0.4661, -1.0697, 0.3350, -0.0803, -0.3052, 0.5446,
    0.3157, 0.4233, -0.3498, 0.0864, -0.4646, 0.0118, 0.1048, -0.1458, -0.0158,
], dtype=torch.float64).view(3, 3, 3, 3)

#: Mean activation over the VGG channels of the hypercolumn on the calibration image after
#: :meth:`VGG16Extractor._calibrate` (about what the Caffe weights give at 1/58 of their scale, i.e.
#: the order of magnitude of torchvision's normalised-input network, which the authors used raw).
CALIBRATION_TARGET = 3.0

# Ratio between the two conventions' input scales for one grey level: caffe input = 255 * std *
# torchvision input (per channel), i.e. about 58. A checkpoint folded from one convention into the
# other has first-layer weights scaled by this factor (or its inverse).
_TV_PER_CAFFE = 255.0 * torch.tensor(CONVENTIONS["torchvision"]["std"], dtype=torch.float64)

# Scale heuristic thresholds on rho = median_k |b_k| / median_k ||W_k||_2 of features.0 (see
# detect_convention). Natively trained VGG16s: caffe 0.53, torchvision ~0.3; folded conversions
# move rho by a factor ~58.
_RHO_FOLDED_TO_TORCHVISION = 0.05
_RHO_FOLDED_TO_CAFFE = 5.0


# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# VGG16
# --------------------------------------------------------------------------------------------------


class _VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` re-declared with plain torch.nn (same keys and indices),
    truncated after module ``last`` (inclusive)."""

    def __init__(self, last: int):
        super().__init__()
        mods: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                mods.append(nn.Conv2d(cin, int(v), kernel_size=3, padding=1))
                mods.append(nn.ReLU(inplace=False))
                cin = int(v)
        self.features = nn.Sequential(*mods[: last + 1])


class VGG16Extractor(FeatureExtractor):
    """VGG16 hypercolumns (see the module docstring).

    Args:
        state_dict: conv weights with torchvision key names ``features.{0,2,5,...,28}.{weight,bias}``
            (extra keys such as the classifier are ignored; only the layers needed are used).
        convention: ``"torchvision"`` or ``"caffe"``, the input convention of those weights.
        layers: ReLU layers of the hypercolumn, any subset of :data:`VGG16_LAYERS`; default
            :data:`PAPER_LAYERS`. Maps are returned shallow to deep regardless of the order given.
        device: where the weights live (float32).
        normalise: scale all activations by one fixed factor per checkpoint that brings the mean
            activation over the hypercolumn's VGG channels on a fixed reference image to
            :data:`CALIBRATION_TARGET` (see :meth:`_calibrate`); the layers keep the relative
            magnitudes the network gives them. False gives the raw ReLU outputs.

    ``forward(image)`` returns ``[image, relu_a, relu_b, ...]``: the input (B, 3, H, W) RGB in [0, 1]
    (unchanged, not normalised) followed by the ReLU outputs (B, C_l, H / 2**k, W / 2**k) (floor
    division by the max-pools) in the image's dtype. Requires H, W >= 2**(number of pools before the
    deepest layer).
    """

    name = "vgg16"

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor],
        convention: str,
        layers: Sequence[str] = PAPER_LAYERS,
        device: str | torch.device = "cpu",
        normalise: bool = True,
    ):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")
        layers = list(dict.fromkeys(layers))
        unknown = [l for l in layers if l not in _VGG16_RELU]
        if not layers or unknown:
            raise ValueError(f"layers must be a non-empty subset of {list(VGG16_LAYERS)}, got unknown {unknown}")
        layers.sort(key=lambda l: _VGG16_RELU[l])
        self.layers: tuple[str, ...] = tuple(layers)
        self._relu_idx = {_VGG16_RELU[l]: l for l in layers}
        self._last = max(self._relu_idx)
        self.convention = convention
        self.layer_names = ("rgb",) + self.layers
        chans = []
        for l in self.layers:
            conv_idx = _VGG16_RELU[l] - 1
            chans.append(_VGG16_CONV_SHAPES[f"features.{conv_idx}.weight"][0])
        self.layer_channels = (3,) + tuple(chans)
        net = _VGG16Features(self._last)
        self._min_size = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in net.features)
        needed = sorted(net.state_dict())
        missing = [k for k in needed if k not in state_dict]
        if missing:
            raise WeightsError(f"VGG16 state dict is missing {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''} (needs torchvision's features.N.weight/bias keys)")
        sd = {k: state_dict[k].detach().to(torch.float32) for k in needed}
        net.load_state_dict(sd, strict=True)
        net.eval().requires_grad_(False)
        self.device = torch.device(device)
        self._net = net.to(self.device)
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}
        conv = CONVENTIONS[convention]
        self._perm = [2, 1, 0] if conv["order"] == "BGR" else [0, 1, 2]
        self._scale = float(conv["scale"])
        self._mean = torch.tensor(conv["mean"], dtype=torch.float64).view(1, 3, 1, 1)
        self._std = torch.tensor(conv["std"], dtype=torch.float64).view(1, 3, 1, 1)
        self._net_for(self.device, torch.float32)
        self.layer_scale: tuple[float, ...] | None = None
        self._scale_cache: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        if normalise:
            self.layer_scale = self._calibrate()

    def _net_for(self, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        hit = self._cache.get(key)
        if hit is None:
            net = self._net if (device == self.device and dtype == torch.float32) else copy.deepcopy(self._net).to(device=device, dtype=dtype)
            net.eval().requires_grad_(False)
            # preprocessing folded to one multiply-add: x_net = x_rgb[perm] * a + c
            a = (self._scale / self._std).to(device=device, dtype=dtype)
            c = (-self._mean / self._std).to(device=device, dtype=dtype)
            hit = (net, a, c)
            self._cache[key] = hit
        return hit

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the network input in the checkpoint's convention (same shape)."""
        _, a, c = self._net_for(image.device, image.dtype)
        return image[:, self._perm] * a + c

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        _check_image(image, self._min_size)
        net, a, c = self._net_for(image.device, image.dtype)
        x = image[:, self._perm] * a + c
        maps = [image]
        scales = self._scales_for(image.device, image.dtype)
        for i, mod in enumerate(net.features):
            x = mod(x)
            if i in self._relu_idx:
                maps.append(x if scales is None else x * scales[len(maps) - 1])
        return maps

    def _scales_for(self, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor] | None:
        if self.layer_scale is None:
            return None
        key = (device, dtype)
        hit = self._scale_cache.get(key)
        if hit is None:
            hit = [torch.tensor(v, device=device, dtype=dtype) for v in self.layer_scale]
            self._scale_cache[key] = hit
        return hit

    @torch.no_grad()
    def _calibrate(self) -> tuple[float, ...]:
        """One factor for all layers that brings the mean activation over the VGG channels of the
        hypercolumn (channel-weighted, on a fixed reference image: a seeded smooth random image,
        224 x 224) to :data:`CALIBRATION_TARGET`.

        Checkpoints differ in activation scale by orders of magnitude (the Caffe weights see 0..255
        inputs: relu3_x means of ~400, about 58 times those of a network fed torchvision's
        normalised input), and the moment term of the style loss is not scale invariant; one
        global factor removes that difference. It deliberately keeps the relative layer
        magnitudes of the network (relu3_x largest, relu5_3 some 500 times smaller), as the
        authors' raw torchvision features do: per-layer normalisation (every layer mean 1) let the
        deep, coarse layers dominate the cosine distances and made the optimisation paint
        low-frequency purple and green blotches. Identical networks (a checkpoint and its
        conversion to the other input convention) get identical factors, hence identical features.
        Returns the factor once per layer (all equal)."""
        g = torch.Generator().manual_seed(0)
        ref = F.interpolate(torch.rand(1, 3, 14, 14, generator=g, dtype=torch.float64), size=(224, 224),
                            mode="bicubic", align_corners=False).clamp_(0, 1).to(self.device)
        saved, self.layer_scale = self.layer_scale, None
        try:  # in float64, so that equal networks get equal factors to the last bit that matters
            maps = self.forward(ref)[1:]
        finally:
            self.layer_scale = saved
            self._cache.pop((self.device, torch.float64), None)
        total = sum(float(m.mean()) * m.shape[1] for m in maps)
        mean = total / sum(m.shape[1] for m in maps)
        factor = CALIBRATION_TARGET / max(mean, 1e-12)
        return tuple(factor for _ in maps)


# --------------------------------------------------------------------------------------------------
# Checkpoint loading and convention detection
# --------------------------------------------------------------------------------------------------


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _find_state_dict(obj: Any, depth: int = 0) -> dict[str, torch.Tensor] | None:
    """The dict of tensors holding a ``...features.0.weight`` key, possibly nested in a wrapper."""
    if not isinstance(obj, Mapping) or depth > 3:
        return None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if any(k.endswith("features.0.weight") or k == "0.weight" for k in tensors):
        return tensors
    for key in ("state_dict", "model", "model_state_dict", "net", "params", "weights", "module"):
        if key in obj:
            found = _find_state_dict(obj[key], depth + 1)
            if found is not None:
                return found
    for v in obj.values():
        found = _find_state_dict(v, depth + 1)
        if found is not None:
            return found
    return None


def _normalise_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``<prefix>features.N.x`` (e.g. ``module.features.0.weight``) or a bare ``N.x`` features
    state dict to torchvision's ``features.N.x`` keys."""
    if "features.0.weight" in sd:
        return sd
    prefixes = sorted({k[: -len("features.0.weight")] for k in sd if k.endswith("features.0.weight")})
    if len(prefixes) == 1:
        p = prefixes[0]
        return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    if "0.weight" in sd:
        return {"features." + k: v for k, v in sd.items() if re.match(r"^\d+\.(weight|bias)$", k)}
    return sd


def load_vgg16_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load and validate the 13 VGG16 conv layers from a checkpoint file.

    Accepts a bare state dict or one wrapped in a dict (``{"state_dict": ...}``, ``{"model": ...}``),
    keys ``features.N.{weight,bias}`` optionally prefixed (``module.``) or bare ``N.{weight,bias}``.
    Other keys (classifier) are dropped. Returns the 26 conv tensors (float32, CPU) under
    torchvision's key names.

    Raises:
        WeightsError: missing/unreadable/corrupt file, no VGG16 conv weights, missing keys or wrong
            shapes; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"VGG16 weights file {p} does not exist or is not a file; {_HOW_TO_SUPPLY}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, unsafe pickle
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read VGG16 weights file {p} ({type(e).__name__}: {msg[:160]}); it must be a PyTorch state dict, re-download it or {_HOW_TO_SUPPLY}") from e
    sd = _find_state_dict(obj)
    if sd is None:
        raise WeightsError(f"{p} holds no VGG16 conv weights (no 'features.0.weight' key); {_HOW_TO_SUPPLY}")
    sd = _normalise_keys(sd)
    missing = [k for k in _VGG16_CONV_KEYS if k not in sd]
    if missing:
        raise WeightsError(
            f"VGG16 weights file {p} is missing {len(missing)} of 26 conv tensors ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); it must hold all 13 conv layers of VGG16 with torchvision key names"
        )
    out = {}
    for k in _VGG16_CONV_KEYS:
        t = sd[k]
        if tuple(t.shape) != _VGG16_CONV_SHAPES[k]:
            raise WeightsError(f"VGG16 weights file {p}: {k} has shape {list(t.shape)}, expected {list(_VGG16_CONV_SHAPES[k])} (not VGG16?)")
        if not t.is_floating_point():
            raise WeightsError(f"VGG16 weights file {p}: {k} has dtype {t.dtype}, expected floating point")
        out[k] = t.detach().to(torch.float32)
        if not torch.isfinite(out[k]).all():
            raise WeightsError(f"VGG16 weights file {p}: {k} contains NaN or Inf values")
    return out


def _fingerprint(w0: torch.Tensor) -> tuple[str, str] | None:
    """Match features.0.weight against the two published VGG16 weight sets.

    For each reference R (caffe, torchvision) and channel order (as is, or reversed BGR<->RGB), the
    file's first 3 filters are compared channel by channel (27 values per input channel): cosine
    similarity and least-squares scale ``a_c``. A match (all three cosines > 0.95) is classified by
    the channel order and the scale: same order and a ~ 1 -> the reference's convention; reversed
    order and a ~ 255 * std (~58, caffe folded into torchvision's input normalisation) or
    a ~ 1 / (255 * std) (torchvision unfolded into caffe's) -> the other convention.
    Returns (convention, reason) or None.
    """
    w = w0[:3].to(torch.float64)
    for ref_name, ref in (("caffe", _FP_CAFFE), ("torchvision", _FP_TORCHVISION)):
        for flipped in (False, True):
            wp = w.flip(1) if flipped else w
            a = ref.transpose(0, 1).reshape(3, -1)  # (C_in, 27)
            b = wp.transpose(0, 1).reshape(3, -1)
            cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
            if not bool((cos > 0.95).all()):
                continue
            scale = (a * b).sum(1) / (a * a).sum(1)
            s = float(scale.median())
            other = "torchvision" if ref_name == "caffe" else "caffe"
            fold = float(_TV_PER_CAFFE.mean()) if ref_name == "caffe" else 1.0 / float(_TV_PER_CAFFE.mean())
            what = f"first-layer filters match the published {ref_name} VGG16 weights (cosine >= {float(cos.min()):.3f}"
            if not flipped and 0.5 < s < 2.0:
                return ref_name, what + f", same channel order, scale {s:.3g})"
            if flipped and 0.5 * fold < s < 2.0 * fold:
                return other, what + f", channels reversed and scaled by {s:.3g}: converted to the {other} convention)"
            logger.warning("VGG16 first layer resembles the %s weights but with an unexpected channel order/scale (%.3g); using the scale heuristic", ref_name, s)
            return None
    return None


def detect_convention(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike | None = None) -> tuple[str, str]:
    """Guess the input convention of VGG16 weights: ``("caffe" | "torchvision", reason)``.

    In order:

    1. File name: torch hub names files ``name-<first 8 hex digits of sha256>.pth``; the official
       torchvision ``vgg16-397923af.pth`` -> torchvision.
    2. File content: sha256 of the file against the known checkpoints (the Caffe conv file in
       ``shared/models``: full hash; torchvision's: the 8-digit prefix).
    3. Weight values: the first 3 filters of ``features.0`` against the published Caffe and
       torchvision VGG16 filters (:func:`_fingerprint`); recognises re-saved, wrapped or
       half-precision copies and conversions of either set (channels reversed and the
       normalisation folded in, as ``caffe -> torchvision`` conversions do).
    4. Scale heuristic for unknown weights: ``rho = median_k |b_k| / median_k ||W_k||_2`` of
       ``features.0``. Natively trained VGG16s have rho ~ 0.3-0.6 (Caffe 0.53; torchvision ~0.3)
       whatever their convention, since weights and biases end up of similar size; converting a
       checkpoint from one convention to the other scales the first-layer weights by ~58 (=255*std)
       or its inverse, leaving the biases. So rho < 0.05 -> a 0..255 checkpoint folded into
       torchvision's normalised input (torchvision); rho > 5 -> the reverse (caffe). In between the
       statistics cannot tell the two conventions apart; torchvision (the PyTorch norm) is assumed
       and a warning says so -- pass ``weights_format`` explicitly in that case.
    """
    if path is not None:
        p = Path(path)
        name = p.name
        for prefix, (conv, what) in _KNOWN_SHA256_PREFIX.items():
            if re.search(rf"-{prefix}[0-9a-f]*\.", name):
                return conv, f"file name {name} is {what}"
        try:
            digest = _sha256(p)
        except OSError:
            digest = ""
        if digest in _KNOWN_SHA256:
            conv, what = _KNOWN_SHA256[digest]
            return conv, f"sha256 {digest[:12]}... is {what}"
        if digest[:8] in _KNOWN_SHA256_PREFIX:
            conv, what = _KNOWN_SHA256_PREFIX[digest[:8]]
            return conv, f"sha256 {digest[:12]}... is {what}"
    w0 = state_dict["features.0.weight"].detach().to("cpu", torch.float64)
    b0 = state_dict["features.0.bias"].detach().to("cpu", torch.float64)
    fp = _fingerprint(w0)
    if fp is not None:
        return fp
    guess = _scale_heuristic(w0, b0)
    if guess is not None:
        return guess
    rho = _bias_weight_ratio(w0, b0)
    logger.warning(
        "VGG16 weights%s are not a known checkpoint and their statistics (bias/weight ratio %.3g) do not tell "
        "the input convention; assuming torchvision (RGB, normalised); pass weights_format='caffe' if they "
        "expect BGR 0..255 input", f" {path}" if path else "", rho,
    )
    return "torchvision", f"unknown weights; bias/weight ratio {rho:.3g} is ambiguous, assumed torchvision (the PyTorch default)"


def _bias_weight_ratio(w0: torch.Tensor, b0: torch.Tensor) -> float:
    """rho = median_k |b_k| / median_k ||W_k||_2 of the first conv layer (64 filters)."""
    w0 = w0.detach().to("cpu", torch.float64)
    b0 = b0.detach().to("cpu", torch.float64)
    return float(b0.abs().median() / w0.flatten(1).norm(dim=1).median().clamp_min(1e-12))


def _scale_heuristic(w0: torch.Tensor, b0: torch.Tensor) -> tuple[str, str] | None:
    """Step 4 of :func:`detect_convention`: (convention, reason) from the bias/weight ratio, or None
    when the ratio is in the ambiguous range of natively trained networks."""
    rho = _bias_weight_ratio(w0, b0)
    if rho < _RHO_FOLDED_TO_TORCHVISION:
        return "torchvision", f"unknown weights; first-layer bias/weight ratio {rho:.3g} < {_RHO_FOLDED_TO_TORCHVISION}: large weights for normalised [0, 1] input"
    if rho > _RHO_FOLDED_TO_CAFFE:
        return "caffe", f"unknown weights; first-layer bias/weight ratio {rho:.3g} > {_RHO_FOLDED_TO_CAFFE}: small weights for 0..255 input"
    return None


# --------------------------------------------------------------------------------------------------
# Weight resolution
# --------------------------------------------------------------------------------------------------


def _env_offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` seconds (DNS included; run in
    a daemon thread so a hanging resolver cannot block the caller)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True, name="facerefiner-net-probe")
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(path, download, timeout) -> tuple[Path | None, list[str]]:
    """(resolved path or None, what was tried); raises WeightsError for a configured missing file."""
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"VGG16 weights file {p} (--vgg-weights) does not exist; {_HOW_TO_SUPPLY}")
        return p, []
    env = os.environ.get(ENV_WEIGHTS, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise WeightsError(f"{ENV_WEIGHTS}={env} does not exist; point it at a VGG16 weights file or unset it")
        return p, []
    cache = _hub_checkpoint_dir() / TORCHVISION_VGG16_FILE
    if cache.is_file():
        return cache, []
    tried = ["no --vgg-weights", f"{ENV_WEIGHTS} unset", f"no {cache}"]
    if download is None:
        download = not _env_offline()
    if not download:
        tried.append(f"download disabled ({ENV_OFFLINE}=1 or download=False)")
    elif not _reachable("download.pytorch.org", 443, timeout):
        tried.append("download.pytorch.org unreachable")
    else:
        logger.info("downloading %s into %s (528 MB)", TORCHVISION_VGG16_URL, cache.parent)
        old = socket.getdefaulttimeout()
        try:
            socket.setdefaulttimeout(60.0)
            torch.hub.load_state_dict_from_url(
                TORCHVISION_VGG16_URL, model_dir=str(cache.parent), map_location="cpu",
                progress=False, check_hash=True, file_name=TORCHVISION_VGG16_FILE, weights_only=True,
            )
        except Exception as e:  # network failure, hash mismatch, disk full
            tried.append(f"download failed: {type(e).__name__}")
            logger.warning("download of %s failed: %s", TORCHVISION_VGG16_URL, e)
        finally:
            socket.setdefaulttimeout(old)
        if cache.is_file():
            return cache, []
    return None, tried


def resolve_vgg16_weights(path: str | os.PathLike | None = None, *, download: bool | None = None, timeout: float = 3.0) -> Path:
    """Find the VGG16 weights file, in order:

    1. ``path`` (the ``--vgg-weights`` flag) when given;
    2. the environment variable ``FACEREFINER_VGG16``;
    3. torchvision's ``vgg16-397923af.pth`` in the torch hub cache (``torch.hub.get_dir()/checkpoints``);
    4. a download of it into that cache through ``torch.hub.load_state_dict_from_url(check_hash=True)``
       -- only when ``download`` is true, or ``download`` is None and ``FACEREFINER_OFFLINE`` is not
       set (to 1/true/yes/on); skipped within ``timeout`` seconds when download.pytorch.org cannot
       be reached (DNS + TCP probe in a daemon thread), so offline machines do not hang.

    An explicit ``path`` or environment variable that names a missing file is an error (no fall
    through). Only the existence of the file is checked here; :func:`load_vgg16_state_dict` reads it.

    Raises:
        WeightsError: nothing resolved; the message lists what was tried and how to supply weights.
    """
    p, tried = _resolve(path, download, timeout)
    if p is None:
        raise WeightsError(f"VGG16 weights not found ({'; '.join(tried)}); {_HOW_TO_SUPPLY}")
    return p


# --------------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------------

# RGB -> (Y, U, V), BT.601 analog YUV; Y in [0, 1], U in [-0.436, 0.436], V in [-0.615, 0.615].
_RGB2YUV = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]], dtype=torch.float64
)


def _random_zero_mean_basis(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """(n, k, k) orthonormal, zero-mean random filters (a random n-dim subspace of the zero-mean
    k x k patches), float64, deterministic given the generator state."""
    if n > k * k - 1:
        raise ValueError(f"at most {k * k - 1} zero-mean {k}x{k} filters, asked for {n}")
    g = torch.randn(k * k, n, generator=gen, dtype=torch.float64)
    g = g - g.mean(dim=0, keepdim=True)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique signs
    return q.t().reshape(n, k, k).contiguous()


class PatchExtractor(FeatureExtractor):
    """Network-free multi-scale patch descriptors (offline fallback for VGG16).

    The image is converted to YUV (BT.601: Y luminance in [0, 1], U/V chroma around 0) and reduced
    to a pyramid of ``levels`` levels (scale 1, 1/2, 1/4, ...; 2x2 average pooling, floor sizes).
    At every level the map has ``3 + luma + 2 * chroma`` channels:

    * the local colour ``(Y - 0.5, U, V)`` at that level (the blurred colour at coarse levels);
    * ``luma`` responses of the k x k luminance patch to fixed random orthonormal zero-mean filters
      (a seeded random projection of the mean-removed patch: local texture/structure);
    * ``chroma`` such responses for each of U and V (same filters' first ``chroma``).

    Filter responses are multiplied by ``gain`` (default 2) so texture contrast is not drowned by
    the colour channels in cosine distances. Patches are taken with replicate padding. Everything
    is a fixed linear map plus average pooling: differentiable, deterministic for a given ``seed``,
    and fast (a few small convolutions).

    Default (levels 4, k 5, luma 16, chroma 4): 3 + 4 * 27 = 111 channels.
    ``forward(image)`` returns ``[image (B,3,H,W) RGB in [0, 1], level_0 (B,27,H,W),
    level_1 (B,27,H/2,W/2), ...]`` in the image's dtype.
    """

    name = "patches"

    def __init__(
        self,
        levels: int = 4,
        kernel_size: int = 5,
        luma: int = 16,
        chroma: int = 4,
        gain: float = 2.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        if levels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"levels >= 1 and odd kernel_size required, got levels={levels}, kernel_size={kernel_size}")
        if chroma > luma:
            raise ValueError(f"chroma ({chroma}) must be <= luma ({luma})")
        self.levels = int(levels)
        self.kernel_size = int(kernel_size)
        self.luma = int(luma)
        self.chroma = int(chroma)
        self.gain = float(gain)
        self.seed = int(seed)
        self.device = torch.device(device)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        basis = _random_zero_mean_basis(self.luma, self.kernel_size, gen) * self.gain  # (luma, k, k)
        self._basis64 = basis
        per_level = 3 + self.luma + 2 * self.chroma
        self.layer_names = ("rgb",) + tuple(f"level{i}" for i in range(self.levels))
        self.layer_channels = (3,) + (per_level,) * self.levels
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._consts(self.device, torch.float32)

    def _consts(self, device: torch.device, dtype: torch.dtype):
        key = (device, dtype)
        hit = self._cache.get(key)
        if hit is None:
            k = self.kernel_size
            # one conv over (Y, U, V): luma filters on Y, first `chroma` filters on U and on V.
            w = torch.zeros(self.luma + 2 * self.chroma, 3, k, k, dtype=torch.float64)
            w[: self.luma, 0] = self._basis64
            w[self.luma: self.luma + self.chroma, 1] = self._basis64[: self.chroma]
            w[self.luma + self.chroma:, 2] = self._basis64[: self.chroma]
            m = _RGB2YUV.clone()
            off = torch.tensor([-0.5, 0.0, 0.0], dtype=torch.float64)
            hit = (
                w.to(device=device, dtype=dtype),
                m.to(device=device, dtype=dtype),
                off.to(device=device, dtype=dtype).view(1, 3, 1, 1),
            )
            self._cache[key] = hit
        return hit

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        _check_image(image, 2 ** (self.levels - 1))
        w, m, off = self._consts(image.device, image.dtype)
        yuv = torch.einsum("ij,bjhw->bihw", m, image) + off
        pad = self.kernel_size // 2
        maps = [image]
        x = yuv
        for lvl in range(self.levels):
            if lvl > 0:
                x = F.avg_pool2d(x, 2)
            tex = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), w)
            maps.append(torch.cat([x, tex], dim=1))
        return maps


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
