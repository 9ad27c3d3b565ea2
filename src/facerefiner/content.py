"""The content texture I_C of one photo: the sampled texture completed (Poisson fill, mirror),
with the hidden region synthesised (the person's skin grain, a prior's structure) and a record of
what the photo hid. The refinement starts from it (:mod:`facerefiner.refine`); the albedo is
completed with it (:mod:`facerefiner.light`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .complete import complete
from .layout import UVLayout
from .unwrap import UnwrapResult


#: A notice is given when more than this share of an eye's, a brow's or the lips' texels is hidden
#: with no visible mirror and no prior is given (on the 19 dev photos without a mask the most is
#: 0.35, a turned face's far eye corner, at S = 128 and 512; under the sunglasses probe both eyes are at 1.0).
HIDDEN_FEATURE_NOTICE = 0.5
#: The features the notice names (the nose's underside is never seen, so it is left out).
NOTICE_FEATURES = {"LEFT_EYE": "the left eye", "RIGHT_EYE": "the right eye", "LEFT_EYEBROW": "the left brow",
                   "RIGHT_EYEBROW": "the right brow", "LIPS": "the lips"}


def synthesis_report(visibility: torch.Tensor, layout: UVLayout, uvr: Any) -> dict[str, float]:
    """Share of each facial feature's texels (:func:`facerefiner.layout.feature_masks`) that are
    hidden and whose mirror texel is hidden too (what only a prior can give structure)."""
    from .complete import mirror_texture, mirror_uv
    from .layout import feature_masks

    S = visibility.shape[-1]
    feats = feature_masks(layout, S)
    if not feats or layout.mirror is None:
        return {}
    valid = uvr.valid.cpu()
    vis = visibility.cpu() & valid
    lost = valid & ~vis & ~(mirror_texture(vis[None].float(), mirror_uv(layout, S, uvr))[0] > 0.999)
    out = {}
    for name, m in feats.items():
        m = torch.as_tensor(np.array(m)) & valid  # (the cached masks are read-only)
        out[name] = round(float((m & lost).sum()) / max(1.0, float(m.sum())), 4)
    return out


def content_texture(image: np.ndarray, unwrapped: UnwrapResult, layout: UVLayout, uvr: Any, *, detail: bool,
                    seed: int = 0, prior: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The project's content texture I_C for one photo: the Poisson completion, with the hidden
    region synthesised when ``detail`` (the person's skin grain) and ``prior`` (structure of hidden
    features; entries of this very photo, found by its pixel digest, are left out).

    Args:
        image: (H, W, 3) uint8 RGB photo (for its digest).
        unwrapped: the photo's :func:`facerefiner.unwrap` at the texture size.
        uvr: the layout's :func:`facerefiner.unwrap.uv_raster` at that size.

    Returns:
        ``(initial, synthesis)``: (3, S, S) float32 I_C in [0, 1] and the record of what was done
        (``detail``, ``hidden_features`` per feature, ``prior``'s entries, or a ``notice``).
    """
    synthesis: dict[str, Any] = {"detail": bool(detail)}
    hidden = synthesis_report(unwrapped.visibility, layout, uvr)
    synthesis["hidden_features"] = hidden
    lost = [NOTICE_FEATURES[k] for k, v in hidden.items() if k in NOTICE_FEATURES and v > HIDDEN_FEATURE_NOTICE]
    guide = None
    if prior is not None:
        from .prior import fit, photo_digest

        img, where, info = fit(prior, unwrapped.texture, unwrapped.visibility, uvr.valid,
                               exclude=[photo_digest(image)])
        guide = (img, where)
        synthesis["prior"] = info
    elif lost:
        synthesis["notice"] = (f"{', '.join(lost)} {'is' if len(lost) == 1 else 'are'} hidden on both sides and "
                               "filled without a prior (as skin); --prior FILE gives them structure "
                               "(facerefiner prior build)")
    initial = complete(unwrapped.texture, unwrapped.visibility, layout, uvr=uvr, detail=detail, seed=seed,
                       guide=guide)
    return initial, synthesis
