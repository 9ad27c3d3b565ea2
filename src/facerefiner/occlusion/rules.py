"""The layout's rules: which non-skin pixels occlude the face (the features may differ from skin, a
beard is the face's own), the rest of a pair of glasses, and the islands left between occluders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import UVLayout, feature_masks
from .crop import RULE_FEATURE_MARGIN, RULE_SIZE, TEXTURE_MARGIN, Crop, feature_pixels, grow, share_around

#: A feature's non-skin texels are occluded when at least this share of the skin around it is
#: non-skin (a Gaussian neighbourhood of :data:`RING_SIGMA`).
RING_SHARE = 0.6
#: Sigma of that neighbourhood, as a fraction of the rule grid (8 texels at 128: a brow's height).
RING_SIGMA = 1 / 16
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
#: Below the nose, non-skin whose mirror texel's non-skin differs by more than this in either log
#: colour ratio (:func:`colour_features`, 100 log(R/G), 100 log(B/G)) is not a beard.
BEARD_CHROMA = 16.0


def beard_zone(layout: UVLayout, size: int = RULE_SIZE) -> np.ndarray:
    """(size, size) bool: the layout's texels below the nose on the face proper (a head's neck is
    below the chin: a collar or a scarf there is symmetric too, and not a beard). All False when the
    layout has no nose feature."""
    from ..layout import face_region_mask

    nose = feature_masks(layout, size, RULE_FEATURE_MARGIN).get("NOSE")
    zone = np.zeros((size, size), bool)
    if nose is not None and nose.any():
        zone[int(np.nonzero(nose.any(1))[0].max()):] = True
        zone &= face_region_mask(layout, size)
    return zone


def above_eyes(feats: dict[str, np.ndarray]) -> np.ndarray:
    """(U, U) bool: the rule grid's rows above the eyes' top (the brows and the forehead); all
    False when the layout has no eyes."""
    U = next(iter(feats.values())).shape[0] if feats else RULE_SIZE
    out = np.zeros((U, U), bool)
    eyes = [feats[k] for k in ("LEFT_EYE", "RIGHT_EYE") if k in feats and feats[k].any()]
    if eyes:
        out[:min(int(np.nonzero(e.any(1))[0].min()) for e in eyes)] = True
    return out


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


def _rules(ns_pix: np.ndarray, c: Crop, layout: UVLayout, features: np.ndarray | None = None) -> _Rules:
    from ..complete import mirror_uv
    from ..layout import FEATURE_MARGIN, texel_charts, vertex_charts

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
    # (on a layout of several charts, only the skin of the texel's own chart: UV neighbours in
    # other charts are elsewhere on the head, an eyeball's chart beside the neck's)
    if vertex_charts(layout).max() > 0:
        tc = texel_charts(layout, U)
        surrounded = np.zeros((U, U), bool)
        for k in np.unique(tc[narrow]):
            own = tc == k
            ring = share_around(ns, seen & ~wide & own, RING_SIGMA * U)
            surrounded |= narrow & own & (ring >= RING_SHARE)
    else:
        ring = share_around(ns, seen & ~wide, RING_SIGMA * U)
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


def occluders_by_colour(ns: np.ndarray, c: Crop, layout: UVLayout, features: np.ndarray | None = None,
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
        from ..layout import FEATURE_MARGIN

        around_features = feature_pixels(c, layout, FEATURE_MARGIN) & ~feature_pixels(c, layout, RULE_FEATURE_MARGIN)
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
        edge = grow(comp_occ[lab] & ~narrow & joined, max(1, int(round(ENTER * np.sqrt(face_px)))))
        inside |= narrow & same & edge
        # and along the brows, every pixel of the colour of an occluder that spans both eyes (a
        # frame's top bar running over brows of another colour; not the hair at one temple)
        eyes = [grow(m.reshape(-1)[t] & c.cover, max(1, int(round(ENTER * np.sqrt(face_px)))))
                for name, m in rules.features.items() if name in ("LEFT_EYE", "RIGHT_EYE")]
        if len(eyes) == 2:
            both = np.ones(n, bool)
            for e in eyes:
                touch = np.zeros(n, bool)
                touch[np.unique(lab[e & comp_occ[lab]])] = True
                both &= touch
            both[0] = False
            for name, m in rules.features.items():
                if "EYEBROW" in name:
                    inside |= m.reshape(-1)[t] & c.cover & same & both[lab]
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


def frame_lines(luma: np.ndarray, c: Crop, layout: UVLayout, occluders: np.ndarray) -> np.ndarray:
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
    wide = feature_pixels(c, layout, TEXTURE_MARGIN)
    narrow = feature_pixels(c, layout, RULE_FEATURE_MARGIN)
    marker = occluders & ~wide
    cand = (thin & ~narrow) | marker
    n, lab = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    hit = np.zeros(n, bool)
    hit[np.unique(lab[marker])] = True
    hit[0] = False
    frame = hit[lab] & thin & ~narrow & ~occluders
    return frame if frame.sum() >= FRAME_MIN_AREA * face_px else np.zeros_like(frame)

#: A piece of the face left visible between occluders that is smaller than this share of the face's
#: pixels and holds no facial feature is left out too (:func:`islands`).
ISLAND_AREA = 0.03
#: Pieces joined by a neck narrower than twice this fraction of the face's size are separate.
ISLAND_NECK = 0.01


def islands(c: Crop, layout: UVLayout, masks) -> np.ndarray:
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
    feature[np.unique(lab[feature_pixels(c, layout, RULE_FEATURE_MARGIN) & (core > 0)])] = True
    keep = (stats[:, cv2.CC_STAT_AREA] >= ISLAND_AREA * face_px) | feature
    keep[0] = False
    kept = cv2.dilate(keep[lab].astype(np.uint8), k).astype(bool)
    return free & ~kept
