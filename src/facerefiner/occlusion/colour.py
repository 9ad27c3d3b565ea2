"""The photometric cues of the ``skin`` source: a per-photo skin colour model, the texture contrast
that tells hair strands from skin, and the shading ratio that tells hair of the skin's hue from
the skin in shadow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def colour_features(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) float64: 100 log(R / G), 100 log(B / G) (with 1 added to each
    channel) and the luma Y in [0, 255] (ITU-R BT.601). The two log ratios do not change when a
    shadow scales the pixel (white light), so the skin's spread in them is its colour, not its
    shading; :data:`LUMA_TOLERANCE` widens the luma axis."""
    x = np.asarray(rgb, dtype=np.float64) + 1.0
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2] - 1.0
    return np.stack([100 * np.log(x[..., 0] / x[..., 1]), 100 * np.log(x[..., 2] / x[..., 1]), y], -1)

#: The skin Gaussian's luma standard deviation is multiplied by this: a shadow on the face (half
#: the brightness of its lit side) stays skin, while hair and lenses, which differ in colour too,
#: do not.
LUMA_TOLERANCE = 2.0

#: Variance added to every axis of a fitted covariance (log-ratio units and grey levels squared): keeps a grayscale
#: photo's flat chroma (R = G = B) from making the Gaussian singular.
COV_FLOOR = 4.0
#: Squared Mahalanobis distance from the skin Gaussian beyond which a pixel is non-skin whatever
#: the mixture says (chi-square, 3 degrees of freedom: p ~ 1e-5).
FAR = 25.0
#: ... and beyond which it is non-skin when the non-skin mixture explains it better (p ~ 0.03).
NEAR = 9.0


@dataclass(frozen=True)
class Gaussian:
    """A 3-D Gaussian: mean (3,) and covariance (3, 3), float64."""

    mean: np.ndarray
    cov: np.ndarray

    def mahalanobis2(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) -> (...) squared Mahalanobis distances."""
        d = x - self.mean
        return np.einsum("...i,ij,...j->...", d, np.linalg.inv(self.cov), d)

    def chroma_mahalanobis2(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) -> (...) squared Mahalanobis distances in the first two axes alone (the
        colour of :func:`colour_features`, without its luma)."""
        d = x[..., :2] - self.mean[:2]
        return np.einsum("...i,ij,...j->...", d, np.linalg.inv(self.cov[:2, :2]), d)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        _, logdet = np.linalg.slogdet(self.cov)
        return -0.5 * (self.mahalanobis2(x) + logdet + 3 * np.log(2 * np.pi))


def fit_robust_gaussian(x: np.ndarray, iterations: int = 5, keep: float = 6.25,
                        start: np.ndarray | None = None) -> Gaussian:
    """A Gaussian fitted to the majority of ``x`` ((N, 3) float64, N >= 4): started from the median
    and the median absolute deviation of ``start`` (default ``x``; a subset more surely of the
    wanted colour), then refitted on the samples of ``x`` within squared Mahalanobis distance
    ``keep`` (chi-square 3 d.o.f., p = 0.9) ``iterations`` times, so a minority of other colours
    (hair over part of the skin) does not pull it. The covariance gets :data:`COV_FLOOR`."""
    x = np.asarray(x, dtype=np.float64)
    s0 = x if start is None or len(start) < 4 else np.asarray(start, dtype=np.float64)
    mean = np.median(s0, 0)
    mad = np.median(np.abs(s0 - mean), 0) * 1.4826
    g = Gaussian(mean, np.diag(mad ** 2 + COV_FLOOR))
    for _ in range(iterations):
        sel = x[g.mahalanobis2(x) <= keep]
        if len(sel) < 4:
            break
        # the trimmed sample's covariance under-estimates the spread by the truncation; 1 / 0.58
        # is that factor for a 3-D Gaussian cut at its 0.9 quantile
        g = Gaussian(sel.mean(0), np.cov(sel.T) / 0.58 + np.eye(3) * COV_FLOOR)
    return g


_widen = np.array([1.0, 1.0, LUMA_TOLERANCE])


@dataclass(frozen=True)
class SkinModel:
    """The skin Gaussian and the mixture of what is not skin, in :func:`colour_features`."""

    skin: Gaussian
    other: list[tuple[float, Gaussian]]

    def non_skin(self, ycc: np.ndarray) -> np.ndarray:
        """(..., 3) colour features -> (...) bool: the pixel is not skin (see the module docstring)."""
        d2 = self.skin.mahalanobis2(ycc)
        out = d2 > FAR
        if self.other:
            lo = np.max(np.stack([np.log(w) + g.log_pdf(ycc) for w, g in self.other]), 0)
            out |= (d2 > NEAR) & (lo > self.skin.log_pdf(ycc))
        return out


def fit_skin_model(skin: np.ndarray, around: np.ndarray, components: int = 3, seed: int = 0,
                   start: np.ndarray | None = None) -> SkinModel:
    """Fit :class:`SkinModel`.

    Args:
        skin: (N, 3) colour features samples that are mostly skin (the face's central pixels).
        around: (M, 3) colour features samples of the surroundings (hair, background, but also the neck and
            ears): those within :data:`NEAR` of the skin Gaussian are dropped before the mixture
            is fitted.
        components: Gaussians in the non-skin mixture (fewer when there are few samples).
        start: optional (K, 3) samples most surely skin, where the robust fit starts.
        seed: seed of the mixture's initialisation (same seed, same model).
    """
    g = fit_robust_gaussian(skin, start=start)
    g = Gaussian(g.mean, g.cov * np.outer(_widen, _widen))
    rest = np.asarray(around, dtype=np.float64)
    rest = rest[g.mahalanobis2(rest) > NEAR] if len(rest) else rest
    other: list[tuple[float, Gaussian]] = []
    k = min(components, len(rest) // 50)
    if k >= 1:
        other = _fit_mixture(rest, k, seed)
    return SkinModel(g, other)


def _fit_mixture(x: np.ndarray, k: int, seed: int, iterations: int = 30) -> list[tuple[float, Gaussian]]:
    """EM for a k-component Gaussian mixture (k-means++-style start), with :data:`COV_FLOOR`."""
    rng = np.random.default_rng(seed)
    if len(x) > 20000:
        x = x[rng.choice(len(x), 20000, replace=False)]
    means = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min([((x - m) ** 2).sum(1) for m in means], 0)
        means.append(x[rng.choice(len(x), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(x))])
    comps = [(1.0 / k, Gaussian(m, np.cov(x.T) + np.eye(3) * COV_FLOOR)) for m in means]
    for _ in range(iterations):
        logp = np.stack([np.log(w) + g.log_pdf(x) for w, g in comps])        # (k, N)
        logp -= logp.max(0)
        r = np.exp(logp)
        r /= r.sum(0)
        comps = []
        for j in range(k):
            n = r[j].sum()
            if n < 1e-6:
                continue
            m = (r[j, :, None] * x).sum(0) / n
            d = x - m
            c = (r[j, :, None] * d).T @ d / n + np.eye(3) * COV_FLOOR
            comps.append((n / len(x), Gaussian(m, c)))
        if not comps:
            break
    return comps


def texture_contrast(luma: np.ndarray, reference: np.ndarray, sigma: float) -> np.ndarray:
    """How much finer structure each pixel's neighbourhood has than the skin: the root of the
    Gaussian-weighted (``sigma`` px) mean squared luma gradient (Sobel), over the neighbourhood's
    mean luma (a contrast, so a shadow does not lower it), divided by its median over the
    ``reference`` pixels (the cheeks and nose). Hair strands, fabric and foliage are several times
    the skin's; smooth skin, lit or shaded, is about 1.

    Args:
        luma: (h, w) float luma in [0, 255].
        reference: (h, w) bool.
        sigma: the neighbourhood's Gaussian sigma in pixels.

    Returns:
        (h, w) float64 (1 = as smooth as the reference's median).
    """
    import cv2

    y = luma.astype(np.float32)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    s = max(0.5, float(sigma))
    e = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), s)
    r = np.sqrt(e) / (cv2.GaussianBlur(y, (0, 0), s) + 10.0)
    ref = float(np.median(r[reference])) if reference.any() else float(np.median(r))
    return (r / max(ref, 1e-6)).astype(np.float64)

#: Below this share of the luma that the face's own shading predicts (:func:`shading_ratio`), a
#: pixel is darker than its orientation explains: hair of the skin's hue over the forehead, a frame,
#: a hat's shadow. Attached shadows (a jaw facing away from the light) keep a ratio near 1.
DARK_RATIO = 0.55


def shading_ratio(luma: np.ndarray, normals: np.ndarray, fit_on: np.ndarray, grow_on: np.ndarray | None = None,
                  rounds: int = 3, iterations: int = 6) -> np.ndarray:
    """Each pixel's luma over the luma that a smooth shading of the face predicts at its normal.

    The shading is first order, ``Y ~ c0 + c . (-n)`` (an ambient term and one distant light: the
    first two spherical-harmonic bands folded into four numbers), fitted by least squares
    reweighted with Huber's weights (k = 1.5 robust standard deviations), first to ``fit_on``, then
    ``rounds - 1`` times to the pixels of ``fit_on`` or ``grow_on`` that the last fit explains
    within :data:`EXPLAINED` (a fit to the cheeks alone extrapolates poorly to the forehead and the
    jaw; hair over the forehead never joins the fit). The prediction is floored at 0.15 of the
    fitted pixels' median luma (a face turned away from the light is never predicted black).

    Args:
        luma: (h, w) float luma in [0, 255].
        normals: (h, w, 3) float unit normals in the camera frame (OpenCV: z away from the camera),
            0 where there is no surface.
        fit_on: (h, w) bool, pixels most surely skin (the cheeks and nose).
        grow_on: optional (h, w) bool, more pixels that are mostly skin (the rest of the face away
            from its features).
        rounds: fits; iterations: reweighting passes per fit.

    Returns:
        (h, w) float64: 1 = as bright as the shading predicts; 1 where ``normals`` is 0 or fewer
        than 20 ``fit_on`` pixels have a normal.
    """
    n = np.asarray(normals, np.float64)
    y = np.asarray(luma, np.float64)
    has = np.linalg.norm(n, axis=-1) > 0.5
    B = np.concatenate([np.ones(n.shape[:-1] + (1,)), -n], -1)
    sel = fit_on & has
    if sel.sum() < 20:
        return np.ones(y.shape, np.float64)
    pool = (fit_on | grow_on) & has if grow_on is not None else sel
    ratio = np.ones(y.shape, np.float64)
    for _ in range(max(1, rounds)):
        A, b = B[sel], y[sel]
        w = np.ones(len(b))
        for _ in range(iterations):
            coef = np.linalg.lstsq(A * w[:, None], b * w, rcond=None)[0]
            r = b - A @ coef
            sd = 1.4826 * float(np.median(np.abs(r))) + 1e-6
            w = np.sqrt(np.minimum(1.0, 1.5 * sd / np.maximum(np.abs(r), 1e-12)))
        pred = np.maximum(B @ coef, 0.15 * max(float(np.median(b)), 1.0))
        ratio = np.where(has, y / pred, 1.0)
        nxt = pool & (np.abs(np.log(np.maximum(ratio, 1e-6))) < np.log(EXPLAINED))
        if nxt.sum() < 20:
            break
        sel = nxt
    return ratio

#: A pixel within this factor of the predicted luma (either way) is explained by the shading and
#: joins its next fit (:func:`shading_ratio`).
EXPLAINED = 1.3
