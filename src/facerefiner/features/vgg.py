"""VGG16 hypercolumns (:class:`VGG16Extractor`), its checkpoints' loading and input-convention
detection; see :mod:`facerefiner.features`."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import WeightsError
from .base import FeatureExtractor, _check_image
from .weights import _HOW_TO_SUPPLY

logger = logging.getLogger("facerefiner.features")

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

