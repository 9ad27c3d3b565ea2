"""The ``skin`` and ``highlights`` sources: what the face's own colours, texture and shading say is
not its skin, kept or dropped by the layout's rules (:mod:`.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import UVLayout, feature_masks
from .colour import DARK_RATIO, EXPLAINED, colour_features, fit_skin_model, shading_ratio, texture_contrast
from .crop import (GROW, RULE_FEATURE_MARGIN, RULE_SIZE, TEXTURE_MARGIN, Crop, clean, drop_small, feature_pixels, grow,
                   skin_samples)
from .rules import above_eyes, beard_zone, frame_lines, occluders_by_colour

#: Squared Mahalanobis distance in the skin's colour alone (chi-square, 2 d.o.f.: p = 0.01) within
#: which a darker pixel counts as the skin in shadow.
SHADOW_CHROMA = 9.2
#: The same for the weak evidence (:data:`FALLING_AREA`): stricter, since a fringe's smooth strands
#: can have the shaded skin's colour.
WEAK_SHADOW_CHROMA = 4.6
#: Pixels whose :func:`texture_contrast` is above this are not skin (hair strands, fabric), whatever
#: their colour; the features' rules then keep brows, lashes and lips.
TEXTURE_RATIO = 5.0
#: Neighbourhood of that contrast, as a fraction of the face's size.
TEXTURE_SIGMA = 0.015
#: A region non-skin by the cheeks' and nose's colour alone is hair falling over the face when it
#: joins at least this share of the face's pixels of non-skin off the face.
FALLING_AREA = 0.05
#: Pixels off the face within this fraction of the face's size of its part above the beard zone
#: (the forehead, the temples, the cheeks) that are far darker than the cheeks are hair too.
HAIR_REACH = 0.15
#: Connected occluder regions smaller than this share of the face's pixels are dropped (pores,
#: moles, noise).
MIN_REGION = 0.002
#: Specular: luma above the skin's mean by this many of its standard deviations, and saturation
#: below this share of the skin's median.
SPECULAR_SIGMA = 3.0
SPECULAR_SATURATION = 0.6
#: A pixel whose channels are all at least this is clipped white.
CLIPPED = 250


@dataclass(frozen=True)
class SkinEvidence:
    """What the colour model found on a face's crop (each (h, w) bool on the crop's pixels); the
    steps of :func:`skin_evidence`, kept for the tests and for looking at them.

    Attributes:
        core, seed: the pixels the skin's colour was learnt from (the face away from its features
            and outline; the cheeks and nose).
        ratio: (h, w) float64 :func:`shading_ratio` of each pixel.
        dark: darker than the shading explains (:data:`DARK_RATIO`), above the beard zone, away
            from the features but over the brows, in regions of at least :data:`FALLING_AREA`.
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


def skin_evidence(c: Crop, layout: UVLayout, already: np.ndarray) -> SkinEvidence | None:
    """The ``skin`` and ``highlights`` sources on a face's crop (see the module docstring).

    Args:
        c: the crop; layout: its layout.
        already: (h, w) bool pixels other sources found (a hand): not learnt as skin.

    Returns:
        :class:`SkinEvidence`, or None when too little of the face's skin is seen to learn its
        colour (fewer than 50 pixels).
    """
    import cv2

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
    core, seed = skin_samples(c, layout, fm)
    core &= ~already
    seed &= ~already
    wide = feature_pixels(c, layout, TEXTURE_MARGIN)
    # darker than the face's own shading explains (hair of the skin's hue over the forehead, a
    # frame): kept out of the skin's colour model, and weak evidence below. Only above the beard
    # zone: stubble and a chin's shadow below the nose are darker than a first-order shading
    # explains, and hair over the face falls from above
    ratio = shading_ratio(luma, c.normals, seed, core)
    zone = beard_zone(layout).reshape(-1)[t] & c.cover
    dark = (ratio < DARK_RATIO) & c.cover & ~zone
    dark &= ~wide | above_eyes(fm).reshape(-1)[t]
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
    around = ~grow(c.cover, max(1, int(0.02 * face_size))) & (c.rgb.max(-1) > 0)
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
    # far darker than the cheeks in the skin's own hue (hair the colour model cannot tell)
    upper = grow(c.cover & ~zone, max(1, int(round(HAIR_REACH * face_size))))
    dark_hue = (luma < DARK_RATIO * float(np.median(luma[seed]))) & (d2 <= SHADOW_CHROMA) & upper
    hair = clean(colour_ns | textured | dark_hue, face_size) & ~c.cover
    # weak evidence by the cheeks' colour leaves out smooth shadowed skin and whatever the shading
    # explains (a shaded jaw that the cheeks' strict model rejects, joined to the shaded neck beside
    # it); textured pixels stay
    smooth_shade = (d2 <= WEAK_SHADOW_CHROMA) & (luma < model.skin.mean[2]) & ~dark
    explained = np.abs(np.log(np.maximum(ratio, 1e-6))) < np.log(EXPLAINED)
    weak = clean((strict.non_skin(ycc) & ~smooth_shade & ~explained) | textured | dark, face_size) & c.cover
    n, lab = cv2.connectedComponents((weak | hair).astype(np.uint8), connectivity=8)
    out_part = np.bincount(lab.reshape(-1), weights=hair.reshape(-1).astype(np.float64), minlength=n)
    falling = out_part >= FALLING_AREA * face_px
    falling[0] = False
    weak &= falling[lab]
    colour = clean(colour_ns & ~shadow, face_size) & c.cover
    occ = occluders_by_colour(colour | weak, c, layout, features=ycc, shadow=shadow, around=hair)
    occ = drop_small(occ, int(MIN_REGION * face_px))
    frame = frame_lines(luma, c, layout, occ)
    occluders = grow(occ | frame, int(round(GROW * face_size)), c.cover)
    # highlights: far brighter than the skin (and at least halfway from it to white) and whiter than
    # it, or clipped white (no channel keeps the skin's colour); not on the features (a catchlight)
    sat = (c.rgb.max(-1).astype(np.float64) - c.rgb.min(-1)) / np.maximum(c.rgb.max(-1), 1)
    mu = float(np.median(luma[core]))
    sd = 1.4826 * float(np.median(np.abs(luma[core] - mu)))
    bright = luma > max(mu + SPECULAR_SIGMA * sd, (mu + 255.0) / 2)
    spec = bright & (sat < SPECULAR_SATURATION * np.median(sat[core]))
    clipped = c.rgb.min(-1) >= CLIPPED
    in_feature = feats.reshape(-1)[t] & c.cover
    highlights = grow((spec | clipped) & c.cover & ~in_feature, 1, c.cover)
    return SkinEvidence(core, seed, ratio, dark, colour, weak, hair, frame, occluders, highlights)
