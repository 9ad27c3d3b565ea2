"""The FaceRefiner losses: STROTSS style and content terms on hypercolumns, and the rendering term.

All hypercolumn arguments are 2-D tensors ``(N, C)``: ``N`` samples (positions) with ``C`` channels
each, where the first three channels are the RGB values in [0, 1] and the rest are VGG16 activations
(``C = 2179`` in the refiner, see PAPER.md, "The optimisation"). Every function works on any
floating dtype and device; results have the dtype and device of the inputs.

Terms (STROTSS, Kolkin et al., CVPR 2019, as used by FaceRefiner):

* :func:`remd` -- relaxed earth mover's distance, one direction: the mean over the samples of ``x``
  (the texture being optimised) of the distance to the nearest sample of ``y`` (the style samples).
* :func:`moment_loss` -- mean absolute difference of the means plus that of the (unbiased)
  covariance matrices.
* :func:`color_loss` -- :func:`remd` with Euclidean distance on the RGB part mapped to the YUV-like
  space of STROTSS (:func:`rgb_to_yuv`).
* :func:`style_loss` -- ``(remd_cos + moments + colour / max(content_weight, 1)) * style_weight``.
* :func:`content_loss` -- self-similarity: column-normalised cosine distance matrices of ``x`` and of
  the content hypercolumns at the same positions, mean absolute difference times ``N``.
* :func:`render_loss` -- L1 between the render and the photo inside an (eroded) mask.

Memory and speed: distance matrices are computed as matrix products of normalised / centred
features (never by broadcasting to ``(N, M, C)``). In :func:`remd` the ``(N, M)`` matrix is computed
without autograd only to find each row's nearest neighbour; the distance of each selected pair is
then recomputed with autograd. That gives the same value and the same (sub)gradient as
``D.min(1).values.mean()`` but skips the ``(N, M) x (M, C)`` backward product and keeps no ``(N, M)``
matrix alive for the backward pass. Gram products ``A @ A.T`` (content self-similarity, covariances)
use a backward that needs one matrix product instead of two.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

from .check import check_shape

logger = logging.getLogger(__name__)

__all__ = [
    "YUV_MATRIX",
    "cosine_distance_matrix",
    "euclidean_distance_matrix",
    "remd",
    "NearestSearch",
    "feature_moments",
    "moment_loss",
    "rgb_to_yuv",
    "color_loss",
    "style_loss",
    "content_loss",
    "render_loss",
    "erode_mask",
    "render_mask_kernel",
]

#: The orthonormal RGB -> YUV-like matrix of STROTSS (rows are the Y, U, V axes): ``yuv = C @ rgb``.
YUV_MATRIX = (
    (0.577350, 0.577350, 0.577350),
    (-0.577350, 0.788675, -0.211325),
    (-0.577350, -0.211325, 0.788675),
)

_EPS = 1e-8

Metric = Literal["cosine", "euclidean"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


class _GramRows(torch.autograd.Function):
    """``a @ a.T`` for a 2-D ``a`` with a one-product backward ``(g + g.T) @ a``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        return a @ a.transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        return (g + g.transpose(0, 1)) @ a


def _gram_rows(a: torch.Tensor) -> torch.Tensor:
    """``a @ a.T`` for ``a`` of shape (R, K) -> (R, R); differentiable."""
    return _GramRows.apply(a)


def _check_pair(x: torch.Tensor, y: torch.Tensor, xname: str = "x", yname: str = "y") -> None:
    check_shape(x, ["N", "C"], xname)
    check_shape(y, ["M", str(x.shape[1])], yname)


def _normalise_rows(x: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Rows of ``x`` (N, C) divided by their L2 norm (clamped below at ``eps``); (N, C)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(sq, 0))`` whose value and gradient are exactly 0 where ``sq <= 0`` (no NaN/inf)."""
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


# ---------------------------------------------------------------------------------------------
# distance matrices
# ---------------------------------------------------------------------------------------------


def cosine_distance_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine distances ``1 - cos(x_i, y_j)``.

    Args:
        x: (N, C) float, N samples of C channels.
        y: (M, C) float, same dtype and device.

    Returns:
        (N, M) tensor of distances in [0, 2]. Rows of zero norm count as orthogonal to everything
        (distance 1); norms are clamped below at 1e-8. Computed as one matrix product of the
        row-normalised inputs. If ``y is x`` the product ``x_n @ x_n.T`` uses a cheaper backward.
    """
    _check_pair(x, y)
    xn = _normalise_rows(x)
    if y is x:
        return 1.0 - _gram_rows(xn)
    yn = _normalise_rows(y)
    return 1.0 - xn @ yn.transpose(0, 1)


def _sq_euclidean_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Centre both sets on the mean of y: distances are translation invariant, and centring reduces
    # the cancellation error of |x|^2 + |y|^2 - 2 x.y for far-from-origin data.
    mu = y.mean(dim=0, keepdim=True)
    xc = x - mu
    yc = y - mu
    sq = (xc * xc).sum(1, keepdim=True) + (yc * yc).sum(1).unsqueeze(0) - 2.0 * (xc @ yc.transpose(0, 1))
    return sq.clamp_min(0.0)


def euclidean_distance_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``|x_i - y_j|``.

    Args:
        x: (N, C) float.
        y: (M, C) float, same dtype and device.

    Returns:
        (N, M) tensor of non-negative distances, computed from one matrix product (after centring
        both sets on the mean of ``y``). Coincident points give exactly 0 with zero gradient.
    """
    _check_pair(x, y)
    return _safe_sqrt(_sq_euclidean_matrix(x, y))


# ---------------------------------------------------------------------------------------------
# relaxed EMD, moments, colour
# ---------------------------------------------------------------------------------------------


def _pair_distances(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Distances of row i of x to row i of y, both (K, C) -> (K,)."""
    if metric == "cosine":
        return 1.0 - (_normalise_rows(x) * _normalise_rows(y)).sum(1)
    d = x - y
    return _safe_sqrt((d * d).sum(1))


def remd(x: torch.Tensor, y: torch.Tensor, metric: Metric = "cosine", symmetric: bool = False, *,
         search: "NearestSearch | None" = None) -> torch.Tensor:
    """Relaxed earth mover's distance between two sets of samples.

    Args:
        x: (N, C) float, the samples of the texture being optimised.
        y: (M, C) float, the style samples (same C, dtype and device).
        metric: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.
        symmetric: if False (the default, PAPER.md): the mean over the ``x`` samples of the
            distance to the nearest ``y`` sample. If True, the maximum of that and the same quantity
            with ``x`` and ``y`` swapped (the two-sided form of the original STROTSS code).
        search: optional :class:`NearestSearch` built on this ``y`` (cosine, one-sided only): finds
            the nearest ``y`` sample approximately, at a fraction of the cost of the exact search.

    Returns:
        0-dim tensor. Its gradient is the subgradient of ``min``: each ``x`` sample is pulled
        towards its nearest ``y`` sample only (and vice versa in the symmetric form).
    """
    _check_pair(x, y)
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if search is not None:
        if metric != "cosine" or symmetric:
            raise ValueError("remd: a NearestSearch supports the one-sided cosine form only")
        if search.y is not y:
            raise ValueError("remd: the NearestSearch was built on another y")
        return _pair_distances(x, y[search(x)], metric).mean()
    with torch.no_grad():
        if metric == "cosine":
            dmat = 1.0 - _normalise_rows(x) @ _normalise_rows(y).transpose(0, 1)
        else:
            dmat = _sq_euclidean_matrix(x, y)  # same argmin as the distance itself
        nn_y = dmat.argmin(dim=1)  # (N,)
        nn_x = dmat.argmin(dim=0) if symmetric else None  # (M,)
        del dmat
    value = _pair_distances(x, y[nn_y], metric).mean()
    if symmetric:
        back = _pair_distances(x[nn_x], y, metric).mean()
        value = torch.maximum(value, back)
    return value


class NearestSearch:
    """Approximate nearest-neighbour search under the cosine distance, for :func:`remd`.

    The exact search costs an ``(N, M) x C`` product per call (22 GFLOP for the refiner's
    2048 x 5000 x 2179); this one projects the normalised samples, centred on the mean of the
    normalised ``y``, onto ``dims`` random Gaussian directions (a Johnson-Lindenstrauss sketch:
    inner products of the residuals are preserved up to an error of about ``sqrt(2 / dims)`` times
    their lengths), keeps the ``candidates`` best ``y`` samples per ``x`` sample in the sketch, and
    picks the exact nearest among those. The projection of ``y`` is done once here.

    Args:
        y: (M, C) float, the style samples (kept by reference; ``remd`` checks it gets this one).
        dims: sketch dimensions (>= 1); ``dims >= C`` gives the exact search.
        candidates: candidates re-ranked exactly per sample (>= 1).
        generator: CPU generator of the projection (seeded -> reproducible).

    ``search(x)`` with x (N, C) returns the (N,) int64 indices into ``y`` of the chosen neighbours
    (no autograd).
    """

    def __init__(self, y: torch.Tensor, dims: int = 128, candidates: int = 8,
                 generator: torch.Generator | None = None):
        check_shape(y, ["M", "C"], "y")
        if dims < 1 or candidates < 1:
            raise ValueError(f"dims and candidates must be >= 1, got {dims}, {candidates}")
        self.y = y
        self.candidates = min(int(candidates), y.shape[0])
        with torch.no_grad():
            self._yn = _normalise_rows(y)
            c = y.shape[1]
            if dims >= c:
                self._proj = None
            else:
                # sketch the part of the normalised samples around their mean m: for a fixed x,
                # x.y = (x - m).(y - m) + m.y + const, and the residuals are much shorter than the
                # unit vectors when the features are all alike (ReLU features are all positive)
                p = torch.randn(c, int(dims), generator=generator, dtype=torch.float32) / float(dims) ** 0.5
                self._proj = p.to(device=y.device, dtype=y.dtype)
                self._mean = self._yn.mean(dim=0, keepdim=True)
                self._yp = (self._yn - self._mean) @ self._proj
                self._ym = (self._yn @ self._mean.transpose(0, 1)).transpose(0, 1)  # (1, M): m.y

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_pair(x, self.y, "x", "y")
        xn = _normalise_rows(x.detach())
        if self._proj is None:
            return (xn @ self._yn.transpose(0, 1)).argmax(dim=1)
        sim = torch.addmm(self._ym, (xn - self._mean) @ self._proj, self._yp.transpose(0, 1))  # (N, M) sketched
        cand = sim.topk(self.candidates, dim=1).indices  # (N, k)
        exact = torch.einsum("nc,nkc->nk", xn, self._yn[cand])
        return cand.gather(1, exact.argmax(dim=1, keepdim=True))[:, 0]


def feature_moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of a set of samples.

    Args:
        y: (M, C) float with M >= 2.

    Returns:
        ``(mu, cov)``: mu (C,) the per-channel mean, cov (C, C) the unbiased covariance
        (divided by M - 1). Useful to precompute the style side of :func:`moment_loss` once per set
        of style samples (it costs a C x C x M product).
    """
    check_shape(y, ["M", "C"], "y")
    m = y.shape[0]
    if m < 2:
        raise ValueError(f"feature_moments needs at least 2 samples, got {m}")
    mu = y.mean(dim=0)
    yc = y - mu
    cov = _gram_rows(yc.transpose(0, 1)) / (m - 1)
    return mu, cov


def moment_loss(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    y_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """First- and second-moment matching: ``mean|mu_x - mu_y| + mean|cov_x - cov_y|``.

    Args:
        x: (N, C) float, N >= 2.
        y: (M, C) float, M >= 2; may be None when ``y_moments`` is given.
        y_moments: optional precomputed ``feature_moments(y)``: mu (C,), cov (C, C). Takes
            precedence over ``y``.
        channels: optional (K,) int64 channel indices: the covariance term is then the mean over
            the K x K block of those channels only, at (K / C)**2 of the cost. A uniformly random
            subset per call estimates the full mean without bias for the off-diagonal entries; the
            diagonal (variances) weighs C / K times more than in the full mean. The mean term
            always uses all C channels.

    Returns:
        0-dim tensor: the mean over the C channels of the absolute mean difference plus the mean
        over the C x C entries (or the K x K block) of the absolute difference of the unbiased
        covariance matrices.
    """
    check_shape(x, ["N", "C"], "x")
    c = x.shape[1]
    if y_moments is None:
        if y is None:
            raise ValueError("moment_loss needs y or y_moments")
        check_shape(y, ["M", str(c)], "y")
        y_moments = feature_moments(y)
    mu_y, cov_y = y_moments
    check_shape(mu_y, [str(c)], "y_moments[0]")
    check_shape(cov_y, [str(c), str(c)], "y_moments[1]")
    if channels is None:
        mu_x, cov_x = feature_moments(x)
        return (mu_x - mu_y).abs().mean() + (cov_x - cov_y).abs().mean()
    check_shape(channels, ["K"], "channels")
    ch = channels.to(device=x.device, dtype=torch.long)
    mu_x = x.mean(dim=0)
    _, cov_xk = feature_moments(x[:, ch])
    cov_yk = cov_y[ch][:, ch]
    return (mu_x - mu_y).abs().mean() + (cov_xk - cov_yk).abs().mean()


def rgb_to_yuv(rgb: torch.Tensor) -> torch.Tensor:
    """Map RGB to the YUV-like colour space of STROTSS.

    Args:
        rgb: (..., 3) float, RGB in the last dimension.

    Returns:
        (..., 3) tensor ``C @ rgb`` per element with ``C = YUV_MATRIX`` (orthonormal, so Euclidean
        distances are preserved up to the 6-digit rounding of the matrix; the inverse is ``C.T``).
    """
    check_shape(rgb, ["*", "3"], "rgb")
    cmat = torch.tensor(YUV_MATRIX, dtype=rgb.dtype, device=rgb.device)
    return rgb @ cmat.transpose(0, 1)


def color_loss(x_rgb: torch.Tensor, y_rgb: torch.Tensor) -> torch.Tensor:
    """Relaxed EMD with Euclidean distance in the YUV-like space (:func:`rgb_to_yuv`).

    Args:
        x_rgb: (N, 3) float, RGB in [0, 1] of the texture being optimised.
        y_rgb: (M, 3) float, RGB of the style samples.

    Returns:
        0-dim tensor: mean over the x samples of the YUV distance to the nearest y sample.
    """
    check_shape(x_rgb, ["N", "3"], "x_rgb")
    check_shape(y_rgb, ["M", "3"], "y_rgb")
    return remd(rgb_to_yuv(x_rgb), rgb_to_yuv(y_rgb), metric="euclidean")


def style_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    content_weight: float,
    style_weight: float,
    *,
    y_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    search: NearestSearch | None = None,
    moment_channels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The STROTSS style term.

    ``(remd(x, y, "cosine") + moment_loss(x, y) + color_loss(x[:, :3], y[:, :3]) /
    max(content_weight, 1)) * style_weight``.

    Args:
        x: (N, C) float hypercolumns of the texture being optimised (C >= 3, RGB first), N >= 2.
        y: (M, C) float hypercolumns of the style samples, M >= 2.
        content_weight: the current content weight (divides the colour term, floored at 1).
        style_weight: the style weight.
        y_moments: optional precomputed ``feature_moments(y)`` (mu (C,), cov (C, C)), to skip the
            style covariance on every call when ``y`` does not change.
        search: optional :class:`NearestSearch` on ``y`` for the REMD term (approximate search).
        moment_channels: optional channel subset of the covariance term (see :func:`moment_loss`).

    Returns:
        ``(total, parts)``: total is a 0-dim tensor (differentiable); parts holds the unweighted
        terms as Python floats for logging: ``{"remd": ..., "moment": ..., "color": ...}``.
    """
    _check_pair(x, y)
    if x.shape[1] < 3:
        raise ValueError(f"style_loss needs at least the 3 RGB channels, got C={x.shape[1]}")
    l_remd = remd(x, y, metric="cosine", search=search)
    l_mom = moment_loss(x, y, y_moments=y_moments, channels=moment_channels)
    l_col = color_loss(x[:, :3], y[:, :3])
    total = (l_remd + l_mom + l_col / max(float(content_weight), 1.0)) * float(style_weight)
    parts = {"remd": float(l_remd.detach()), "moment": float(l_mom.detach()), "color": float(l_col.detach())}
    return total, parts


# ---------------------------------------------------------------------------------------------
# content
# ---------------------------------------------------------------------------------------------


def _self_similarity(x: torch.Tensor) -> torch.Tensor:
    d = 1.0 - _gram_rows(_normalise_rows(x))
    return d / d.sum(dim=0, keepdim=True).clamp_min(_EPS)


def content_loss(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Self-similarity content loss of STROTSS.

    Args:
        x: (N, C) float hypercolumns of the texture being optimised.
        c: (N, C) float hypercolumns of the content texture at the same N positions.

    Returns:
        0-dim tensor ``mean|Dx - Dc| * N`` where ``Dx`` is the (N, N) cosine distance matrix of ``x``
        with itself, each column divided by its sum (clamped below at 1e-8), and ``Dc`` the same for
        ``c``. Zero for ``x == c``; blind to anything that leaves the pairwise cosine distances
        unchanged (e.g. a global positive scaling).
    """
    check_shape(x, ["N", "C"], "x")
    check_shape(c, list(map(str, x.shape)), "c")
    n = x.shape[0]
    return (_self_similarity(x) - _self_similarity(c)).abs().mean() * n


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def render_loss(rendered: torch.Tensor, photo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 between the rendered face and the photo.

    Args:
        rendered: (B, 3, H, W) float, the textured mesh rendered at the input camera.
        photo: (B, 3, H, W) float, the photo (same value range).
        mask: (B, 1, H, W) bool or float in [0, 1], where the loss counts (the eroded face mask).

    Returns:
        0-dim tensor ``sum(|rendered - photo| * mask) / (3 * sum(mask))``, i.e. the mean absolute
        error per masked pixel and channel; exactly 0 (no NaN) when the mask is empty.
    """
    check_shape(rendered, ["B", "3", "H", "W"], "rendered")
    check_shape(photo, list(map(str, rendered.shape)), "photo")
    b, _, h, w = rendered.shape
    check_shape(mask, [str(b), "1", str(h), str(w)], "mask")
    m = mask.to(rendered.dtype)
    num = ((rendered - photo).abs() * m).sum()
    den = (m.sum() * 3.0).clamp_min(torch.finfo(rendered.dtype).tiny)
    return num / den


def erode_mask(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Erode a mask with a ``kernel x kernel`` square structuring element.

    Computed as ``1 - max_pool2d(1 - mask, kernel, stride=1, padding=kernel // 2)``, i.e. a min
    filter: binary erosion for a binary mask (grey-scale erosion for a soft one). The pooling
    padding is ignored, so the image border itself does not erode the mask. The square's maximum
    is taken as a column's then a row's (separable: the same result, 2 k instead of k^2 per pixel;
    a 43-pixel kernel on a 1024-pixel face took 1.3 s as one square pooling, 0.1 s so).

    Args:
        mask: (B, 1, H, W) bool or float mask.
        kernel: odd positive int, the side of the square.

    Returns:
        (B, 1, H, W) eroded mask with the dtype of ``mask`` (bool stays bool).
    """
    check_shape(mask, ["B", "1", "H", "W"], "mask")
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"erode_mask needs an odd positive kernel size, got {kernel}")
    if kernel == 1:
        return mask.clone()
    m = mask.to(torch.float32) if not mask.is_floating_point() else mask
    r = kernel // 2
    inv = F.max_pool2d(1.0 - m, kernel_size=(kernel, 1), stride=1, padding=(r, 0))
    out = 1.0 - F.max_pool2d(inv, kernel_size=(1, kernel), stride=1, padding=(0, r))
    if mask.dtype == torch.bool:
        return out > 0.5
    return out.to(mask.dtype)


def render_mask_kernel(image_size: int) -> int:
    """Erosion kernel of the rendering mask, "image size / 20" (PAPER.md): ``max(1, size // 20)``,
    plus one if even so that it is odd (e.g. 256 -> 13, 512 -> 25, 224 -> 11)."""
    k = max(1, int(image_size) // 20)
    return k if k % 2 == 1 else k + 1
