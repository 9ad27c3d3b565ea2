"""The network-free "patches" features (:class:`PatchExtractor`); see :mod:`facerefiner.features`."""

from __future__ import annotations


import torch
import torch.nn.functional as F


from .base import FeatureExtractor, _check_image


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

