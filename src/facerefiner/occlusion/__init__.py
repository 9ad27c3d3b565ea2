"""Occlusion: what stands in front of the face (hands, hair, glasses, background, highlights), found
in the photo so that those pixels count as not visible and the synthesis fills their texels.

The mask is in the photo's pixels (True = not this face's skin), made of independent sources, each
run on a crop around the face (:data:`~.crop.OCCLUSION_SIDE` pixels on its long side,
:mod:`.crop`) and scaled back:

- ``hands`` (:mod:`.models`): MediaPipe's hand landmarker (bundled in the pinned wheel), run on the
  crop padded with grey (a hand cut by the photo's edge is found then); each hand is drawn as its
  palm polygon and its finger bones as strokes a little wider than a finger (not the hull: the
  face seen between spread fingers stays visible).
- ``background`` (:mod:`.models`): MediaPipe's selfie segmentation (bundled): pixels inside the
  mesh's outline that are not the person (the background behind a slightly wide outline at profile
  views).
- ``skin`` (:mod:`.skin`, with the cues of :mod:`.colour` and the rules of :mod:`.rules`):

  * a per-photo colour model (:func:`~.colour.colour_features`: two log colour ratios, which a
    shadow does not change, and the luma). The skin is a robust Gaussian fitted to the face's own
    skin (the mesh's pixels away from the facial features and the outline; started on the cheeks
    and nose between the eyes and the mouth, where a fringe, a cap or sunglasses leave skin, and
    trimmed iteratively, so hair or a hand over part of the face does not enter); the rest is a
    Gaussian mixture fitted to the pixels around the face that are not skin-coloured (hair,
    background, clothes). Far from the skin Gaussian is strong evidence of an occluder.
  * weak evidence, which counts where its region joins the hair around the face (hair falling over
    the face; not a shadow or stubble on the jaw): far from the cheeks' colour alone, structure
    finer than the skin's (:func:`~.colour.texture_contrast`: hair strands, a frame's edges), or
    darker than the face's own shading explains (:func:`~.colour.shading_ratio`: a first-order
    light fitted to the cheeks predicts each pixel's luma from its normal; a fringe of the shaded
    skin's hue over the forehead is at half that, a jaw turned from the light is not). The dark
    evidence counts above the beard zone, away from the features except over the brows, and only
    in regions large enough to be a fringe.
  * the layout's rules (:mod:`.rules`) decide which non-skin pixels occlude: the facial features
    (eyes, brows, lips, nose of :func:`facerefiner.layout.feature_masks`) may differ from skin;
    over a feature an occluder counts only where it continues from outside (a lens over an eye, a
    frame's rim over a brow) or surrounds it; around the features, the skin's colour only darker is
    shadowed skin (eye sockets, the sides of the nose); below the nose (the beard zone), non-skin
    texels whose mirror texel is non-skin of the same colour are a beard or a moustache: the
    face's own texture, kept (an asymmetric region there, a phone or a strand of hair, is
    occluded; a symmetric scarf over the chin is kept as well: the rule cannot tell it from a
    beard). Thin dark lines around the features that join an occluder are the rest of a pair of
    glasses (:func:`~.rules.frame_lines`: the top bars over the brows and the bridge), and small
    pieces of the face left between occluders with no feature in them are left out too
    (:func:`~.rules.islands`: hair between strands).
- ``highlights`` (:mod:`.skin`): clipped pixels and specular highlights (far brighter than the
  skin and less saturated), outside the features (the catchlight of an eye stays).

Every source that cannot run (no hand found is not a failure; a graph that fails to load is)
degrades to the others with a note, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..layout import UVLayout, default_layout
from ..reconstruct import FaceGeometry
from .colour import (DARK_RATIO, EXPLAINED, FAR, NEAR, Gaussian, SkinModel, colour_features, fit_robust_gaussian,
                     fit_skin_model, shading_ratio, texture_contrast)
from .crop import (GROW, OCCLUSION_SIDE, RULE_FEATURE_MARGIN, RULE_SIZE, TEXTURE_MARGIN, Crop, face_crop,
                   feature_pixels, grow, share_around, to_photo)
from .models import BACKGROUND_PROB, OcclusionModels, default_models, hand_mask
from .rules import (BEARD_CHROMA, FRAME_MIN_AREA, ISLAND_AREA, beard_zone, frame_lines, islands,
                    occluders_by_colour)
from .skin import TEXTURE_RATIO, SkinEvidence, skin_evidence

__all__ = [
    "BACKGROUND_PROB", "BEARD_CHROMA", "DARK_RATIO", "EXPLAINED", "FAR", "FRAME_MIN_AREA", "GROW", "ISLAND_AREA",
    "MODES", "NEAR", "OCCLUSION_SIDE", "RULE_FEATURE_MARGIN", "RULE_SIZE", "SOURCES", "TEXTURE_MARGIN", "TEXTURE_RATIO", "Crop",
    "Gaussian", "Occlusion", "OcclusionModels", "SkinEvidence", "SkinModel", "beard_zone", "colour_features",
    "default_models", "face_crop", "face_mask", "feature_pixels", "find_occlusions", "fit_robust_gaussian",
    "fit_skin_model", "frame_lines", "hand_mask", "islands", "occluders_by_colour", "shading_ratio", "share_around",
    "skin_evidence", "texture_contrast",
]

#: The sources, in the order they are reported.
SOURCES = ("hands", "background", "skin", "highlights")


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
    c = face_crop(rgb, geometry, layout)
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
            found["hands"] = grow(hand_mask(hands, (h, w)), int(round(GROW * face_size)), c.cover)
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
    full = {k: to_photo(m, c.region, (H, W)) for k, m in found.items()}
    face = to_photo(c.cover, c.region, (H, W))
    mask = np.zeros((H, W), bool)
    for m in full.values():
        mask |= m
    return Occlusion(mask=mask, sources=full, face=face, notes=notes)


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
