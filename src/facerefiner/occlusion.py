"""Occlusion: what stands in front of the face (hands, hair, glasses, background, highlights), found
in the photo so that those pixels count as not visible and the synthesis fills their texels.

The mask is in the photo's pixels (True = not this face's skin), made of independent sources, each
run on a crop around the face (:data:`OCCLUSION_SIDE` pixels on its long side) and scaled back:

- ``hands``: MediaPipe's hand landmarker (bundled in the pinned wheel), run on the crop padded
  with grey (a hand cut by the photo's edge is found then); each hand is drawn as its palm polygon
  and its finger bones as strokes a little wider than a finger (not the hull: the face seen
  between spread fingers stays visible).
- ``background``: MediaPipe's selfie segmentation (bundled): pixels inside the mesh's outline that
  are not the person (the background behind a slightly wide outline at profile views).
- ``skin``: a per-photo colour model (:func:`colour_features`: two log colour ratios, which a
  shadow does not change, and the luma). The skin is a robust Gaussian fitted to the face's own
  skin (the mesh's pixels away from the facial features and the outline; started on the cheeks and
  nose between the eyes and the mouth, where a fringe, a cap or sunglasses leave skin, and trimmed
  iteratively, so hair or a hand over part of the face does not enter); the rest is a Gaussian
  mixture fitted to the pixels around the face that are not skin-coloured (hair, background,
  clothes). A pixel is non-skin when it is far from the skin Gaussian (:data:`FAR`) or nearer the
  mixture and beyond :data:`NEAR`. Rules in the UV layout decide which non-skin pixels occlude:

  * the facial features (eyes, brows, lips, nose of :func:`facerefiner.layout.feature_masks`) may
    differ from skin. A connected non-skin region that lies mostly outside the features'
    surroundings (:data:`OUTSIDE_SHARE`, or :data:`OUTSIDE_AREA` of the face: a fringe, a frame,
    a phone) is an occluder outside the features; over a feature only where its colour continues
    from the region's pixels outside the features (:data:`CONTINUE_SIGMA`) and the feature is
    mostly covered (:data:`COVERED_SHARE`: a lens over an eye) or the pixel is near where the
    region enters it (:data:`ENTER`: a lens's rim over a brow), or where the skin around the
    feature is mostly non-skin (:data:`RING_SHARE`). A brow, lashes, an iris or eye make-up lie
    inside the features' surroundings and stay;
  * around the features, pixels of the skin's colour that are only darker (:data:`SHADOW_CHROMA`:
    eye sockets, the sides of the nose) are shadowed skin, not an occluder;
  * below the nose (the beard zone), non-skin texels whose mirror texel is non-skin of the same
    colour (:data:`BEARD_CHROMA`) are a beard or a moustache: the face's own texture, kept;
    texels whose mirror is not seen follow the majority of their region's texels whose mirror is.
    An asymmetric region there (a phone, a microphone, a strand of hair) is occluded. A symmetric
    scarf over the chin is kept as well: the rule cannot tell it from a beard.
- ``highlights``: clipped pixels (every channel at :data:`CLIPPED` or more) and specular
  highlights (far brighter than the skin and less saturated), outside the features (the
  catchlight of an eye stays).

Every source that cannot run (no hand found is not a failure; a graph that fails to load is)
degrades to the others with a note, never an error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from . import render as R
from .layout import UVLayout, default_layout, feature_mask, feature_masks
from .reconstruct import FaceGeometry, native_logs_quiet
from .unwrap import Region, face_region, rasterize_face

log = logging.getLogger(__name__)

#: The sources, in the order they are reported.
SOURCES = ("hands", "background", "skin", "highlights")
#: Long side (px) of the crop around the face that the sources run on.
OCCLUSION_SIDE = 512
#: Margin of that crop around the landmark box, as a fraction of the face's size (room for the
#: hair, the hands and the background that the colour model and the segmentation learn from).
CROP_MARGIN = 0.5
#: Side of the UV grid the layout's rules run on.
RULE_SIZE = 128
#: Squared Mahalanobis distance from the skin Gaussian beyond which a pixel is non-skin whatever
#: the mixture says (chi-square, 3 degrees of freedom: p ~ 1e-5).
FAR = 25.0
#: ... and beyond which it is non-skin when the non-skin mixture explains it better (p ~ 0.03).
NEAR = 9.0
#: A feature's non-skin texels are occluded when at least this share of the skin around it is
#: non-skin (a Gaussian neighbourhood of :data:`RING_SIGMA`).
RING_SHARE = 0.6
#: Margin of the features' outlines for these rules, as a fraction of S (one texel at 128): the eye
#: is its opening and lids, not the rim of a pair of glasses around it.
RULE_FEATURE_MARGIN = 1 / 128
#: A connected non-skin region is an occluder when at least this share of it lies outside the
#: features' surroundings (a brow, lashes or eye make-up lie inside them; a fringe, a frame, a phone
#: do not).
OUTSIDE_SHARE = 0.6
#: ... or when this share of the face's pixels of it lies outside them (a frame joined to the brows
#: and lashes it passes over still reaches far past them).
OUTSIDE_AREA = 0.015
#: A feature's non-skin pixel inside an occluder's region is the occluder continuing when each of
#: its colour features lies within this many of the region's standard deviations (outside the
#: features) of the region's mean.
CONTINUE_SIGMA = 2.5
#: ... and when at least this share of the feature's pixels is the occluder's colour.
COVERED_SHARE = 0.6
#: ... and, in any feature, within this fraction of the face's size from where the occluder
#: enters it.
ENTER = 0.03
#: Squared Mahalanobis distance in the skin's colour alone (chi-square, 2 d.o.f.: p = 0.01) within
#: which a darker pixel counts as the skin in shadow.
SHADOW_CHROMA = 9.2
#: The same for the weak evidence (:data:`FALLING_AREA`): stricter, since a fringe's smooth strands
#: can have the shaded skin's colour.
WEAK_SHADOW_CHROMA = 4.6
#: Sigma of that neighbourhood, as a fraction of the rule grid (8 texels at 128: a brow's height).
RING_SIGMA = 1 / 16
#: Radius of the closing that joins non-skin pixels (hair strands) into one region, as a fraction
#: of the face's size.
CLOSE = 0.01
#: Pixels whose :func:`texture_contrast` is above this are not skin (hair strands, fabric), whatever
#: their colour; the features' rules then keep brows, lashes and lips.
TEXTURE_RATIO = 5.0
#: ... outside the features grown by this fraction of S (lash lines, eye bags and make-up reach
#: past the features' outlines and have strong edges too).
TEXTURE_MARGIN = 1 / 16
#: Neighbourhood of that contrast, as a fraction of the face's size.
TEXTURE_SIGMA = 0.015
#: A region non-skin by the cheeks' and nose's colour alone is hair falling over the face when it
#: joins at least this share of the face's pixels of non-skin off the face.
FALLING_AREA = 0.05
#: Connected occluder regions smaller than this share of the face's pixels are dropped (pores,
#: moles, noise).
MIN_REGION = 0.002
#: The occluders found by colour grow by this fraction of the face's size (hair strands' soft
#: edges, a frame's shadow). Chosen on the occlusion benchmark (BENCHMARKS.md, "Occlusion"): 0.006
#: left the fringe's edges in (-3.0 dB against the exact mask), 0.012 -1.1 dB, 0.018 +0.3 dB
#: (+0.0 with :data:`WEAK_SHADOW_CHROMA`), at 1 to 3 points more of a clean face lost.
GROW = 0.018
#: Specular: luma above the skin's mean by this many of its standard deviations, and saturation
#: below this share of the skin's median.
SPECULAR_SIGMA = 3.0
SPECULAR_SATURATION = 0.6
#: A pixel whose channels are all at least this is clipped white.
CLIPPED = 250
#: A finger's stroke is this many knuckle distances wide (fingers are about as wide as their
#: knuckles are apart; the rest covers the landmarks' error at the finger's edge).
HAND_WIDTH = 1.3
#: Grey border added around the crop before the hand search, as a fraction of its long side.
HAND_PAD = 0.5
#: MediaPipe's palm detection confidence threshold.
HAND_CONFIDENCE = 0.3
#: Selfie segmentation's person probability below which a pixel is background.
BACKGROUND_PROB = 0.5


@dataclass(frozen=True)
class Occlusion:
    """What :func:`find_occlusions` found for one face.

    Attributes:
        mask: (H, W) bool in the photo's pixels, True = not this face's skin (the union of the
            sources).
        sources: ``{name: (H, W) bool}`` per source of :data:`SOURCES` that ran.
        face: (H, W) bool the pixels the face mesh covers at the photo's camera.
        notes: one line per source that could not run (it was left out).
    """

    mask: np.ndarray
    sources: dict[str, np.ndarray]
    face: np.ndarray
    notes: list[str] = field(default_factory=list)

    def shares(self) -> dict[str, float]:
        """The share of the face's pixels each source (and ``total``) masks, in [0, 1]."""
        n = max(1, int(self.face.sum()))
        out = {k: float((m & self.face).sum()) / n for k, m in self.sources.items()}
        out["total"] = float((self.mask & self.face).sum()) / n
        return out

    def report(self) -> dict:
        """The ``occlusion`` block of ``report.json``."""
        return {"sources": list(self.sources), "face_share": {k: round(v, 4) for k, v in self.shares().items()},
                "notes": list(self.notes)}


class OcclusionModels:
    """MediaPipe's hand landmarker and selfie segmentation, loaded on first use and reused (calls
    are serialised: the graphs are not thread-safe)."""

    def __init__(self) -> None:
        self._hands = None
        self._selfie = None
        self._lock = threading.Lock()

    def hands(self, rgb: np.ndarray) -> list[np.ndarray]:
        """(21, 2) landmark arrays in pixels of ``rgb`` ((h, w, 3) uint8), one per hand found.

        The image is padded with grey by :data:`HAND_PAD` of its long side first: MediaPipe's palm
        detector misses a hand cut by the image's edge (a hand at the chin of a tight face crop)
        and finds it once the hand's missing part could lie in the picture."""
        import cv2

        p = int(round(HAND_PAD * max(rgb.shape[:2])))
        rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), p, p, p, p, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        with self._lock:
            if self._hands is None:
                with native_logs_quiet():
                    import mediapipe as mp

                    self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4,
                                                           min_detection_confidence=HAND_CONFIDENCE)
            with native_logs_quiet():
                res = self._hands.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        return [np.array([(q.x * w - p, q.y * h - p) for q in hand.landmark]) for hand in res.multi_hand_landmarks or []]

    def person(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w) float32 probability that a pixel of ``rgb`` is the person (not the background)."""
        with self._lock:
            if self._selfie is None:
                with native_logs_quiet():
                    import mediapipe as mp

                    self._selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            with native_logs_quiet():
                res = self._selfie.process(np.ascontiguousarray(rgb))
        return np.asarray(res.segmentation_mask, dtype=np.float32)

    def close(self) -> None:
        for g in (self._hands, self._selfie):
            if g is not None:
                g.close()
        self._hands = self._selfie = None


_DEFAULT: OcclusionModels | None = None


def default_models() -> OcclusionModels:
    """The process-wide :class:`OcclusionModels` (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = OcclusionModels()
    return _DEFAULT


# ----------------------------------------------------------------------------------------------
# the colour model
# ----------------------------------------------------------------------------------------------


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


#: Below the nose, non-skin whose mirror texel's non-skin differs by more than this in either log
#: colour ratio (:func:`colour_features`, 100 log(R/G), 100 log(B/G)) is not a beard.
BEARD_CHROMA = 16.0


#: Variance added to every axis of a fitted covariance (log-ratio units and grey levels squared): keeps a grayscale
#: photo's flat chroma (R = G = B) from making the Gaussian singular.
COV_FLOOR = 4.0


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


# ----------------------------------------------------------------------------------------------
# the sources
# ----------------------------------------------------------------------------------------------


def hand_mask(hands: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: each hand ((21, 2) MediaPipe hand landmarks in pixels) drawn as its palm polygon
    and its finger bones as strokes :data:`HAND_WIDTH` fingers wide (a finger: the mean distance
    between neighbouring knuckles), with round joints, each fingertip reaching half a finger past
    its landmark."""
    import cv2
    import mediapipe as mp

    out = np.zeros(shape, np.uint8)
    bones = sorted(mp.solutions.hands_connections.HAND_CONNECTIONS)
    for p in hands:
        p = np.asarray(p, np.float64)
        knuckles = p[[5, 9, 13, 17]]
        width = float(np.mean(np.linalg.norm(np.diff(knuckles, axis=0), axis=1)))
        t = max(2, int(round(HAND_WIDTH * width)))
        q = np.round(p * 4).astype(np.int32)
        cv2.fillPoly(out, [q[[0, 1, 5, 9, 13, 17]]], 1, lineType=cv2.LINE_8, shift=2)
        for a, b in bones:
            cv2.line(out, tuple(q[a]), tuple(q[b]), 1, thickness=t, lineType=cv2.LINE_8, shift=2)
        # the fingertips reach past their landmark (the nail's end): half a finger width further
        for dip, tip in ((3, 4), (7, 8), (11, 12), (15, 16), (19, 20)):
            v = p[tip] - p[dip]
            end = p[tip] + v / max(float(np.linalg.norm(v)), 1e-6) * 0.5 * width
            cv2.line(out, tuple(q[tip]), tuple(np.round(end * 4).astype(np.int32)), 1, thickness=t,
                     lineType=cv2.LINE_8, shift=2)
        for c in q:  # round joints (with shift=2 the radius is in quarter pixels too)
            cv2.circle(out, tuple(c), 4 * (t // 2), 1, thickness=-1, lineType=cv2.LINE_8, shift=2)
    return out.astype(bool)


def _grow(mask: np.ndarray, r: int, within: np.ndarray | None = None) -> np.ndarray:
    import cv2

    if r <= 0 or not mask.any():
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    return out & within if within is not None else out


def _feature_pixels(c: _Crop, layout: UVLayout, margin: float) -> np.ndarray:
    """(h, w) bool: the crop's pixels on the features grown by ``margin`` (a fraction of S)."""
    return feature_mask(layout, RULE_SIZE, margin).reshape(-1)[np.maximum(c.texel, 0)] & c.cover


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
#: Pixels off the face within this fraction of the face's size of its part above the beard zone
#: (the forehead, the temples, the cheeks) that are far darker than the cheeks are hair too.
HAIR_REACH = 0.15


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


def _clean(ns: np.ndarray, face_size: float) -> np.ndarray:
    """A 3 x 3 median (drops lone pixels, pores and noise, and keeps a frame two pixels wide), then
    a closing of :data:`CLOSE` (joins hair strands into the fringe they make)."""
    import cv2

    ns = cv2.medianBlur(ns.astype(np.uint8) * 255, 3) > 127
    r = max(1, int(round(CLOSE * face_size)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.morphologyEx(ns.astype(np.uint8), cv2.MORPH_CLOSE, k).astype(bool)


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[lab]


@dataclass(frozen=True)
class _Crop:
    region: Region
    rgb: np.ndarray          # (h, w, 3) uint8
    cover: np.ndarray        # (h, w) bool
    texel: np.ndarray        # (h, w) int64 flat index into the (RULE_SIZE,) ** 2 grid, -1 off the mesh
    normals: np.ndarray      # (h, w, 3) float64 unit normal in the camera frame (OpenCV), 0 off the mesh


def _face_crop(rgb: np.ndarray, geometry: FaceGeometry, layout: UVLayout) -> _Crop:
    region = face_region(geometry, margin=CROP_MARGIN, max_side=OCCLUSION_SIDE)
    crop = region.crop(rgb)
    rast = rasterize_face(geometry, layout, region)
    cache = R.prepare(rast, torch.as_tensor(layout.faces), layout.uv_tensor())
    h, w = crop.shape[:2]
    U = RULE_SIZE
    cover = R.coverage_mask(cache)[0].numpy()
    texel = -np.ones(h * w, np.int64)
    t = np.clip(np.floor(cache.uv[0].numpy() * U).astype(np.int64), 0, U - 1)
    texel[cache.index[0].numpy()] = t[:, 1] * U + t[:, 0]
    from .unwrap import vertex_normals

    nv = vertex_normals(geometry.camera.to_camera(geometry.vertices), layout.faces, layout.weld)
    n = R.interpolate(torch.as_tensor(nv, dtype=torch.float32), rast, torch.as_tensor(layout.faces))[0].numpy()
    n = n.astype(np.float64) / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)
    n[~cover] = 0.0
    return _Crop(region, crop, cover, texel.reshape(h, w), n)


def _skin_samples(c: _Crop, layout: UVLayout, feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The crop's pixels that are mostly skin: on the mesh, away from the features and from the
    layout's outline (where the background and the hair meet the face); and the part of those
    between the eyes and the mouth (cheeks and nose: under a fringe, a cap or sunglasses they still
    show), where the colour model starts from. Two (h, w) bool masks."""
    import cv2

    from .unwrap import uv_raster

    U = RULE_SIZE
    valid = uv_raster(layout, U).valid.numpy()
    r = max(1, U // 12)
    core = cv2.erode(valid.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    allf = np.zeros((U, U), bool)
    for m in feats.values():
        allf |= m
    core = core.astype(bool) & ~_grow(allf, max(1, U // 64))
    seed = core
    eyes = [feats[k] for k in ("LEFT_EYE", "RIGHT_EYE") if k in feats and feats[k].any()]
    if eyes and "LIPS" in feats and feats["LIPS"].any():
        top = max(int(np.nonzero(e.any(1))[0].max()) for e in eyes)
        bottom = int(np.nonzero(feats["LIPS"].any(1))[0].min())
        if bottom > top:
            band = np.zeros((U, U), bool)
            band[top:bottom] = True
            seed = core & band
    t = np.maximum(c.texel, 0)
    return c.cover & core.reshape(-1)[t], c.cover & seed.reshape(-1)[t]


def _share_around(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean of ``values`` over the ``where`` texels around every texel (a
    normalised convolution, evaluated everywhere; 0 where no ``where`` texel is near)."""
    import cv2

    w = where.astype(np.float64)
    num = cv2.GaussianBlur(values * w, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)


def beard_zone(layout: UVLayout, size: int = RULE_SIZE) -> np.ndarray:
    """(size, size) bool: the layout's texels below the nose on the face proper (a head's neck is
    below the chin: a collar or a scarf there is symmetric too, and not a beard). All False when the
    layout has no nose feature."""
    from .layout import face_region_mask

    nose = feature_masks(layout, size, RULE_FEATURE_MARGIN).get("NOSE")
    zone = np.zeros((size, size), bool)
    if nose is not None and nose.any():
        zone[int(np.nonzero(nose.any(1))[0].max()):] = True
        zone &= face_region_mask(layout, size)
    return zone


@dataclass(frozen=True)
class _Rules:
    """The layout's rules on the (RULE_SIZE, RULE_SIZE) grid (see the module docstring)."""

    narrow: np.ndarray       # the features themselves (RULE_FEATURE_MARGIN)
    features: dict           # {name: (U, U) bool} each feature of narrow
    wide: np.ndarray         # the features with their surroundings (FEATURE_MARGIN): brow tails, lashes
    surrounded: np.ndarray   # feature texels whose surrounding skin is mostly non-skin
    beard: np.ndarray        # beard-zone texels whose non-skin is facial hair (mirror: the same)
    one_sided: np.ndarray    # beard-zone texels whose mirror texel is not seen (no evidence)
    zone: np.ndarray         # the beard zone: below the nose


def _rules(ns_pix: np.ndarray, c: _Crop, layout: UVLayout, features: np.ndarray | None = None) -> _Rules:
    from .complete import mirror_uv
    from .layout import FEATURE_MARGIN

    U = RULE_SIZE
    narrow_d = feature_masks(layout, U, RULE_FEATURE_MARGIN)
    narrow, wide = np.zeros((U, U), bool), np.zeros((U, U), bool)
    for m in narrow_d.values():
        narrow |= m
    for m in feature_masks(layout, U, FEATURE_MARGIN).values():
        wide |= m
    idx = c.texel[c.cover]
    cnt = np.bincount(idx, minlength=U * U).reshape(U, U)
    nsum = np.bincount(idx, weights=ns_pix[c.cover].astype(np.float64), minlength=U * U).reshape(U, U)
    seen = cnt > 0
    ns = np.where(seen, nsum / np.maximum(cnt, 1), 0.0)
    # a feature's non-skin is an occluder's only when the skin around it is mostly non-skin too
    # (texels far from any seen skin get 0 from the lowpass: no evidence of an occluder)
    ring = _share_around(ns, seen & ~wide, RING_SIGMA * U)
    surrounded = narrow & (ring >= RING_SHARE)
    # the beard zone: below the nose, on the face proper (a head's neck is below the chin: a collar
    # or a scarf there is symmetric too, and not a beard); symmetric non-skin there is facial hair
    beard = np.zeros((U, U), bool)
    one_sided = np.zeros((U, U), bool)
    zone = beard_zone(layout, U)
    if zone.any():
        beard = zone
        if layout.mirror is not None:
            muv = mirror_uv(layout, U).numpy()
            mt = np.clip(np.floor(muv * U).astype(np.int64), 0, U - 1)
            m_seen = seen[mt[..., 1], mt[..., 0]]
            m_ns = ns[mt[..., 1], mt[..., 0]] > 0.5
            if features is not None:
                # a beard's two sides have one colour (the hair's): a grey phone at one jaw beside
                # stubble or a strand of blonde hair at the other is not a beard
                w = ns_pix[c.cover].astype(np.float64)
                chroma = np.stack([np.bincount(idx, weights=features[c.cover][:, k] * w, minlength=U * U)
                                   for k in range(2)], -1).reshape(U, U, 2) / np.maximum(nsum, 1e-9)[..., None]
                m_chroma = chroma[mt[..., 1], mt[..., 0]]
                m_ns &= np.abs(chroma - m_chroma).max(-1) <= BEARD_CHROMA
            beard, one_sided = zone & m_ns & m_seen, zone & ~m_seen
    return _Rules(narrow, narrow_d, wide, surrounded, beard, one_sided, zone)


def occluders_by_colour(ns: np.ndarray, c: _Crop, layout: UVLayout, features: np.ndarray | None = None,
                        shadow: np.ndarray | None = None, around: np.ndarray | None = None) -> np.ndarray:
    """The non-skin pixels ``ns`` ((h, w) bool on the crop) that are occluders, by the layout's
    rules (see the module docstring).

    Args:
        ns: (h, w) bool non-skin pixels.
        c: the crop (its pixels' texels).
        features: optional (h, w, 3) :func:`colour_features` of the crop: a feature's non-skin
            pixels in an occluder's region that have the occluder's colour (within
            :data:`CONTINUE_SIGMA` of its pixels outside the features) are the occluder
            continuing over the feature (a lens over an eye, a frame over a brow).
        shadow: optional (h, w) bool pixels of the skin's colour, only darker: around the features
            (eye sockets, the sides of the nose) they are shadowed skin, not an occluder.
        around: optional (h, w) bool non-skin pixels off the face (the hair around it): a region
            they join is counted with them, so a fringe that falls from the hair over the brows is
            one region reaching far past the features, while a brow surrounded by skin is not.

    Returns:
        (h, w) bool.
    """
    import cv2

    t = np.maximum(c.texel, 0)
    if shadow is not None:
        from .layout import FEATURE_MARGIN

        around_features = _feature_pixels(c, layout, FEATURE_MARGIN) & ~_feature_pixels(c, layout, RULE_FEATURE_MARGIN)
        ns = ns & ~(shadow & around_features)
    rules = _rules(ns, c, layout, features)
    wide, narrow = rules.wide.reshape(-1)[t] & c.cover, rules.narrow.reshape(-1)[t] & c.cover
    joined = ns if around is None else ns | (around & ~c.cover)
    n, lab = cv2.connectedComponents(joined.astype(np.uint8), connectivity=8)
    flat = lab.reshape(-1)
    size = np.bincount(flat, minlength=n).astype(np.float64)
    out_w = (~wide).reshape(-1).astype(np.float64)
    outside = np.bincount(flat, weights=out_w, minlength=n)
    face_px = max(1, int(c.cover.sum()))
    comp_occ = (outside >= OUTSIDE_SHARE * np.maximum(size, 1)) | (outside >= OUTSIDE_AREA * face_px)
    comp_occ[0] = False
    inside = narrow & rules.surrounded.reshape(-1)[t]
    if features is not None and comp_occ.any():
        # each occluder region's colour outside the features (mean and spread per channel)
        f = features.reshape(-1, 3)
        cnt = np.maximum(outside, 1)[:, None]
        mean = np.stack([np.bincount(flat, weights=f[:, k] * out_w, minlength=n) for k in range(3)], 1) / cnt
        sq = np.stack([np.bincount(flat, weights=f[:, k] ** 2 * out_w, minlength=n) for k in range(3)], 1) / cnt
        sd = np.sqrt(np.maximum(sq - mean ** 2, 0.0)) + np.array([2.0, 2.0, 4.0])
        d = np.abs(f - mean[flat]) / sd[flat]
        same = (d.max(1) <= CONTINUE_SIGMA).reshape(lab.shape) & comp_occ[lab] & ns & c.cover
        # only over a feature the occluder covers for the most part (a lens over an eye); where it
        # touches a feature's edge (the hair at a face's outline beside an eye, a frame's rim by
        # the lashes) the feature's own dark pixels stay
        for m in rules.features.values():
            fm = m.reshape(-1)[t] & c.cover
            if fm.any() and same[fm].mean() >= COVERED_SHARE:
                inside |= fm & same
        # and a few pixels past a feature's edge where the occluder enters it (a lens's rim over a
        # brow's lower half, a frame across a brow, the nose or an eye's lid)
        edge = _grow(comp_occ[lab] & ~narrow & joined, max(1, int(round(ENTER * np.sqrt(face_px)))))
        inside |= narrow & same & edge
    occ = (comp_occ[lab] & ~narrow) | inside
    # a region's texels whose mirror is not seen follow the region's other texels in the beard
    # zone: kept as a beard when those are symmetric (or there are none), not when they are not
    # (the far jaw's texels of a phone held to one cheek)
    zone_seen = (rules.zone & ~rules.one_sided).reshape(-1)[t] & c.cover & ns
    sym = rules.beard.reshape(-1)[t] & zone_seen
    votes_sym = np.bincount(flat, weights=sym.reshape(-1).astype(np.float64), minlength=n)
    votes_all = np.bincount(flat, weights=zone_seen.reshape(-1).astype(np.float64), minlength=n)
    beard_comp = votes_sym >= 0.5 * votes_all
    beard = rules.beard.reshape(-1)[t] | (rules.one_sided.reshape(-1)[t] & beard_comp[lab])
    return ns & occ & c.cover & ~beard


#: A thin dark line (:func:`frame_lines`) is one the luma's closing with a disk of this radius (a
#: fraction of the face's size: wider than a frame's bar, narrower than a brow) lifts by at least
#: :data:`FRAME_CONTRAST` of the closed luma.
FRAME_RADIUS = 0.02
FRAME_CONTRAST = 0.15
#: The thin lines a frame adds must cover at least this share of the face's pixels (a pair of
#: glasses' top bars and bridge; not the lashes at an eye's corner beside the hair at the outline).
FRAME_MIN_AREA = 0.01


def frame_lines(luma: np.ndarray, c: _Crop, layout: UVLayout, occluders: np.ndarray) -> np.ndarray:
    """The rest of a pair of glasses: thin dark lines around the features that join an occluder
    found outside them.

    The colour rules find a frame's rims and sides where they cross skin, but its top bars run
    along the brows and its bridge between the eyes, inside the features' surroundings, where dark
    pixels are allowed (brows, lashes, sockets). A frame's bar is a thin line, though: pixels that
    a closing with a disk of :data:`FRAME_RADIUS` lifts by :data:`FRAME_CONTRAST` (a black top-hat,
    relative). Those outside the features themselves, in the features' surroundings, that are
    connected to ``occluders`` outside the surroundings, are the frame continuing, when together
    they cover :data:`FRAME_MIN_AREA` of the face.

    Args:
        luma: (h, w) float luma of the crop in [0, 255].
        c: the crop; layout: its layout.
        occluders: (h, w) bool what the colour rules found.

    Returns:
        (h, w) bool the frame's pixels added (none of ``occluders``).
    """
    import cv2

    face_px = max(1, int(c.cover.sum()))
    r = max(1, int(round(FRAME_RADIUS * np.sqrt(face_px))))
    y = luma.astype(np.float32)
    closed = cv2.morphologyEx(y, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    thin = ((closed - y) / (closed + 10.0) > FRAME_CONTRAST) & c.cover
    wide = _feature_pixels(c, layout, TEXTURE_MARGIN)
    narrow = _feature_pixels(c, layout, RULE_FEATURE_MARGIN)
    marker = occluders & ~wide
    cand = (thin & ~narrow) | marker
    n, lab = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    hit = np.zeros(n, bool)
    hit[np.unique(lab[marker])] = True
    hit[0] = False
    frame = hit[lab] & thin & ~narrow & ~occluders
    return frame if frame.sum() >= FRAME_MIN_AREA * face_px else np.zeros_like(frame)


@dataclass(frozen=True)
class SkinEvidence:
    """What the colour model found on a face's crop (each (h, w) bool on the crop's pixels); the
    steps of :func:`skin_evidence`, kept for the tests and for looking at them.

    Attributes:
        core, seed: the pixels the skin's colour was learnt from (the face away from its features
            and outline; the cheeks and nose).
        ratio: (h, w) float64 :func:`shading_ratio` of each pixel.
        dark: darker than the shading explains (:data:`DARK_RATIO`), above the beard zone, away
            from the features.
        colour: strong evidence, far from the whole face's skin colour (shadowed skin left out).
        weak: weak evidence (far from the cheeks' colour, textured, or dark) in regions that join
            the hair around the face.
        hair: the non-skin pixels around the face (off the mesh).
        frame: thin dark lines around the features joined to an occluder (:func:`frame_lines`).
        occluders: the ``skin`` source: what the layout's rules keep of ``colour | weak``, grown.
        highlights: the ``highlights`` source.
    """

    core: np.ndarray
    seed: np.ndarray
    ratio: np.ndarray
    dark: np.ndarray
    colour: np.ndarray
    weak: np.ndarray
    hair: np.ndarray
    frame: np.ndarray
    occluders: np.ndarray
    highlights: np.ndarray


def _above_eyes(feats: dict[str, np.ndarray]) -> np.ndarray:
    """(U, U) bool: the rule grid's rows above the eyes' top (the brows and the forehead); all
    False when the layout has no eyes."""
    U = next(iter(feats.values())).shape[0] if feats else RULE_SIZE
    out = np.zeros((U, U), bool)
    eyes = [feats[k] for k in ("LEFT_EYE", "RIGHT_EYE") if k in feats and feats[k].any()]
    if eyes:
        out[:min(int(np.nonzero(e.any(1))[0].min()) for e in eyes)] = True
    return out


def skin_evidence(c: _Crop, layout: UVLayout, already: np.ndarray) -> SkinEvidence | None:
    """The ``skin`` and ``highlights`` sources on a face's crop (see the module docstring).

    Args:
        c: the crop; layout: its layout.
        already: (h, w) bool pixels other sources found (a hand): not learnt as skin.

    Returns:
        :class:`SkinEvidence`, or None when too little of the face's skin is seen to learn its
        colour (fewer than 50 pixels).
    """
    import cv2

    h, w = c.cover.shape
    face_px = max(1, int(c.cover.sum()))
    face_size = np.sqrt(face_px)
    t = np.maximum(c.texel, 0)
    ycc = colour_features(c.rgb)
    luma = ycc[..., 2]
    U = RULE_SIZE
    fm = feature_masks(layout, U, RULE_FEATURE_MARGIN)
    feats = np.zeros((U, U), bool)
    for m in fm.values():
        feats |= m
    core, seed = _skin_samples(c, layout, fm)
    core &= ~already
    seed &= ~already
    wide = _feature_pixels(c, layout, TEXTURE_MARGIN)
    # darker than the face's own shading explains (hair of the skin's hue over the forehead, a
    # frame): kept out of the skin's colour model, and weak evidence below. Only above the beard
    # zone: stubble and a chin's shadow below the nose are darker than a first-order shading
    # explains, and hair over the face falls from above
    ratio = shading_ratio(luma, c.normals, seed, core)
    zone = beard_zone(layout).reshape(-1)[t] & c.cover
    dark = (ratio < DARK_RATIO) & c.cover & ~zone
    dark &= ~wide | _above_eyes(fm).reshape(-1)[t]
    # only where it makes a large region away from the features (a fringe over the forehead, down
    # to the brows; not a shaded strip at the hairline or a lock at a temple)
    n, lab = cv2.connectedComponents(dark.astype(np.uint8), connectivity=8)
    away = np.bincount(lab.reshape(-1), weights=(dark & ~wide).reshape(-1).astype(np.float64), minlength=n)
    large = away >= FALLING_AREA * face_px
    large[0] = False
    dark &= large[lab]
    core &= ~dark
    if core.sum() < 50:
        return None
    around = ~_grow(c.cover, max(1, int(0.02 * face_size))) & (c.rgb.max(-1) > 0)
    # the skin as the whole face shows it (its forehead, its shaded side), started on the cheeks and
    # nose; and, stricter, as the cheeks and nose alone show it
    model = fit_skin_model(ycc[core], ycc[around], start=ycc[seed])
    strict = fit_skin_model(ycc[seed], ycc[around]) if seed.sum() >= 50 else model
    # strong evidence: far from the whole face's skin colour. Weak evidence: far from the cheeks'
    # and nose's colour alone (a brown fringe on fair skin is near the whole face's, whose spread
    # its shaded side widens), structure finer than skin's (hair strands, a frame's edges; away
    # from the features and their surroundings, since lashes, brows, make-up and lips have it too),
    # or darker than the shading explains. Weak evidence counts where its region joins the hair and
    # background around the face: hair falling over the face, a frame reaching to the temples; not
    # a shadow or stubble on the jaw.
    textured = (texture_contrast(luma, seed, TEXTURE_SIGMA * face_size) > TEXTURE_RATIO) & ~wide
    colour_ns = model.non_skin(ycc)
    # the skin's own colour, only darker, is the skin in shadow (the jaw, a turned face's far side),
    # unless it is part of the hair falling over the face
    d2 = model.skin.chroma_mahalanobis2(ycc)
    shadow = (d2 <= SHADOW_CHROMA) & (luma < model.skin.mean[2])
    # around the face: non-skin colour, hair's texture, or, beside the upper face (not the neck),
    # far darker than the cheeks
    upper = _grow(c.cover & ~zone, max(1, int(round(HAIR_REACH * face_size))))
    hair = _clean(colour_ns | textured | ((luma < DARK_RATIO * float(np.median(luma[seed]))) & upper & (d2 <= SHADOW_CHROMA)),
                  face_size) & ~c.cover
    # weak evidence by the cheeks' colour leaves out smooth shadowed skin and whatever the shading
    # explains (a shaded jaw that the cheeks' strict model rejects, joined to the shaded neck beside
    # it); textured pixels stay
    smooth_shade = (d2 <= WEAK_SHADOW_CHROMA) & (luma < model.skin.mean[2]) & ~dark
    explained = np.abs(np.log(np.maximum(ratio, 1e-6))) < np.log(EXPLAINED)
    weak = _clean((strict.non_skin(ycc) & ~smooth_shade & ~explained) | textured | dark, face_size) & c.cover
    n, lab = cv2.connectedComponents((weak | hair).astype(np.uint8), connectivity=8)
    out_part = np.bincount(lab.reshape(-1), weights=hair.reshape(-1).astype(np.float64), minlength=n)
    falling = out_part >= FALLING_AREA * face_px
    falling[0] = False
    weak &= falling[lab]
    colour = _clean(colour_ns & ~shadow, face_size) & c.cover
    occ = occluders_by_colour(colour | weak, c, layout, features=ycc, shadow=shadow, around=hair)
    occ = _drop_small(occ, int(MIN_REGION * face_px))
    frame = frame_lines(luma, c, layout, occ)
    occluders = _grow(occ | frame, int(round(GROW * face_size)), c.cover)
    # highlights: far brighter than the skin (and at least halfway from it to white) and whiter than
    # it, or clipped white (no channel keeps the skin's colour); not on the features (a catchlight)
    sat = (c.rgb.max(-1).astype(np.float64) - c.rgb.min(-1)) / np.maximum(c.rgb.max(-1), 1)
    mu = float(np.median(luma[core]))
    sd = 1.4826 * float(np.median(np.abs(luma[core] - mu)))
    bright = luma > max(mu + SPECULAR_SIGMA * sd, (mu + 255.0) / 2)
    spec = bright & (sat < SPECULAR_SATURATION * np.median(sat[core]))
    clipped = c.rgb.min(-1) >= CLIPPED
    in_feature = feats.reshape(-1)[t] & c.cover
    highlights = _grow((spec | clipped) & c.cover & ~in_feature, 1, c.cover)
    return SkinEvidence(core, seed, ratio, dark, colour, weak, hair, frame, occluders, highlights)


#: A piece of the face left visible between occluders that is smaller than this share of the face's
#: pixels and holds no facial feature is left out too (:func:`islands`).
ISLAND_AREA = 0.03
#: Pieces joined by a neck narrower than twice this fraction of the face's size are separate.
ISLAND_NECK = 0.01


def islands(c: _Crop, layout: UVLayout, masks) -> np.ndarray:
    """(h, w) bool: the small pieces of the face that the ``masks`` ((h, w) bool each) leave
    visible between them: connected pieces of the face under :data:`ISLAND_AREA` of its pixels
    that hold no pixel of a facial feature. Between the strands of a fringe or the pieces of hair
    found at a face's edge they are hair the colour rules missed, and the completion would spread
    their colour over the hidden skin around them; an eye seen through a frame holds a feature and
    stays."""
    import cv2

    union = np.zeros(c.cover.shape, bool)
    for m in masks:
        union |= m
    free = c.cover & ~union
    if not union.any() or not free.any():
        return np.zeros_like(free)
    face_px = max(1, int(c.cover.sum()))
    # pieces joined by a neck thinner than a strand's width are separate pieces
    r = max(1, int(round(ISLAND_NECK * np.sqrt(face_px))))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    core = cv2.erode(free.astype(np.uint8), k)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
    feature = np.zeros(n, bool)
    feature[np.unique(lab[_feature_pixels(c, layout, RULE_FEATURE_MARGIN) & (core > 0)])] = True
    keep = (stats[:, cv2.CC_STAT_AREA] >= ISLAND_AREA * face_px) | feature
    keep[0] = False
    kept = cv2.dilate(keep[lab].astype(np.uint8), k).astype(bool)
    return free & ~kept


def find_occlusions(rgb: np.ndarray, geometry: FaceGeometry, layout: UVLayout | None = None, *,
                    sources: Sequence[str] = SOURCES, models: OcclusionModels | None = None) -> Occlusion:
    """Find what covers the face in a photo (see the module docstring for the sources and rules).

    Args:
        rgb: (H, W, 3) uint8 RGB photo.
        geometry: the face (:func:`facerefiner.reconstruct.reconstruct`).
        layout: its UV layout (default: the shipped one): the features, the mirror and the outline
            the colour model's rules use.
        sources: the sources to run, from :data:`SOURCES`.
        models: the MediaPipe graphs (default: the process-wide :func:`default_models`).

    Returns:
        :class:`Occlusion` with the masks in the photo's pixels.
    """
    import cv2

    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"sources: expected names from {SOURCES}, got {unknown}")
    layout = layout or default_layout()
    models = models or default_models()
    rgb = np.asarray(rgb)
    H, W = rgb.shape[:2]
    c = _face_crop(rgb, geometry, layout)
    h, w = c.cover.shape
    face_px = max(1, int(c.cover.sum()))
    face_size = np.sqrt(face_px)
    notes: list[str] = []
    found: dict[str, np.ndarray] = {}

    if "hands" in sources:
        try:
            hands = models.hands(c.rgb)
            if not hands:  # the palm detector is sensitive to scale: a second look at half the size
                small = cv2.resize(c.rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
                hands = [p * np.array([w / small.shape[1], h / small.shape[0]]) for p in models.hands(small)]
            found["hands"] = _grow(hand_mask(hands, (h, w)), int(round(GROW * face_size)), c.cover)
        except Exception as e:  # a graph that does not load or run: the others still count
            notes.append(f"hands: left out ({type(e).__name__}: {e})")
    if "background" in sources:
        try:
            found["background"] = (models.person(c.rgb) < BACKGROUND_PROB) & c.cover
        except Exception as e:
            notes.append(f"background: left out ({type(e).__name__}: {e})")
    if "skin" in sources or "highlights" in sources:
        already = np.zeros((h, w), bool)
        for m in found.values():
            already |= m
        ev = skin_evidence(c, layout, already)
        if ev is None:
            notes.append("skin, highlights: left out (too little of the face's skin is seen to learn its colour)")
        else:
            if "skin" in sources:
                found["skin"] = ev.occluders
            if "highlights" in sources:
                found["highlights"] = ev.highlights
            if "skin" in sources:
                found["skin"] = found["skin"] | islands(c, layout, found.values())
    full = {k: _to_photo(m, c.region, (H, W)) for k, m in found.items()}
    face = _to_photo(c.cover, c.region, (H, W))
    mask = np.zeros((H, W), bool)
    for m in full.values():
        mask |= m
    return Occlusion(mask=mask, sources=full, face=face, notes=notes)


def _to_photo(m: np.ndarray, region: Region, shape: tuple[int, int]) -> np.ndarray:
    """A crop's (h, w) bool mask -> (H, W) bool in the photo (False outside the crop)."""
    import cv2

    out = np.zeros(shape, bool)
    ww, hh = region.x1 - region.x0, region.y1 - region.y0
    if region.scale != 1.0:
        m = cv2.resize(m.astype(np.float32), (ww, hh), interpolation=cv2.INTER_LINEAR) > 0.5
    out[region.y0:region.y1, region.x0:region.x1] = m[:hh, :ww]
    return out


#: ``--occlusion`` values: find the occluders, or trust every pixel that ``--mask`` does not hide.
MODES = ("auto", "off")


def face_mask(rgb: np.ndarray, geometry: FaceGeometry, layout: UVLayout | None, user_mask: np.ndarray | None,
              mode: str = "auto", *, models: OcclusionModels | None = None) -> tuple[np.ndarray | None, dict]:
    """The mask one face is unwrapped and refined with: the user's mask, and with ``mode`` ``auto``
    what :func:`find_occlusions` finds, combined (a pixel is left out when either says so).

    Args:
        rgb: (H, W, 3) uint8 photo; geometry, layout: the face.
        user_mask: optional (H, W) bool from ``--mask`` (True = not to be trusted).
        mode: one of :data:`MODES`.

    Returns:
        ``(mask, report)``: (H, W) bool or None (nothing left out), and the ``occlusion`` block of
        ``report.json`` (the mode, the share of the face each source and the user's mask hide,
        the sources' notes).
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    report: dict = {"mode": mode}
    if mode == "off":
        return user_mask, report
    occ = find_occlusions(rgb, geometry, layout, models=models)
    report.update(occ.report())
    mask = occ.mask
    if user_mask is not None:
        n = max(1, int(occ.face.sum()))
        report["face_share"]["user_mask"] = round(float((user_mask & occ.face).sum()) / n, 4)
        mask = mask | user_mask
        report["face_share"]["total"] = round(float((mask & occ.face).sum()) / n, 4)
    return mask, report
