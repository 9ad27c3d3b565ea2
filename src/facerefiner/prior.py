"""Prior: facial structure from other faces, for what the photo never shows (both eyes under
sunglasses, both brows under a fringe), after Saito et al., "Photorealistic Facial Texture Inference
Using Deep Neural Networks" (CVPR 2017; ``shared/seeds/003``).

A prior is a small database of face textures in the layout's UV space, one per photo, each with the
texels it shows (the visible half and its mirror image). For a new face, a convex combination of
the entries is fitted to the face's own visible region (:func:`fit`): the entries whose
brightness-normalised luma best matches the visible texels, weighted by how well. The combination,
brought to the person's colours per entry, gives the Poisson fill of :func:`facerefiner.complete.complete`
its gradients where neither the photo nor its mirror shows the face: the fill takes the prior's
structure (brows, lids, iris and sclera, lips) and the photo's own colours and light around the hole.
The finest detail there is the person's own skin (:func:`facerefiner.complete.synthesize_detail`).

Where we differ from Saito et al.: they fit the combination to mid-layer feature correlations and
synthesise the whole texture from the fitted correlations, since their database faces are not
aligned texel for texel. Every texture here is in one layout whose vertices follow the same
landmarks, so the entries are aligned and the combination is fitted and applied on the texels
themselves (cheaper on a CPU, and the structure lands where the face has it).

A prior never completes a photo with itself: entries whose photo digest (of the decoded pixels)
equals the photo being completed are left out (the benchmark's masked probes on the very photos a
prior was built from stay honest).

What ships: nothing. The development photos are research images without a licence to redistribute;
``facerefiner prior build PHOTOS -o prior.npz`` makes a prior from photos you may use, and
``--prior prior.npz`` uses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .complete import lowpass
from .errors import FaceRefinerError, InputError
from .layout import UVLayout, default_layout

log = logging.getLogger(__name__)

#: How far (colour in [0, 1]) an entry may stray from the chosen entries' per-texel median.
PRIOR_OUTLIER = 0.08
#: Texture size the entries are stored at (the structure the prior gives is coarser than this).
PRIOR_SIZE = 256
#: Entries combined per face.
PRIOR_K = 3
#: Restore the fine detail that averaging entries takes away (see :func:`fit`).
RESTORE_DETAIL = True
#: The detail restored is finer than this Gaussian sigma, a fraction of S (4 texels at 512).
PRIOR_DETAIL_SIGMA = 1 / 128
#: File format version written into prior files.
PRIOR_VERSION = 1


@dataclass(frozen=True)
class TexturePrior:
    """A face-texture database in one UV layout.

    Attributes:
        textures: (N, P, P, 3) uint8 RGB textures (P = the stored size).
        masks: (N, P, P) bool, the texels each texture shows (its visible half and the mirror image).
        digests: N photo digests (:func:`photo_digest`) of the photos the entries come from.
        sources: N file names (for the record).
        layout: the layout's name.
    """

    textures: np.ndarray
    masks: np.ndarray
    digests: tuple[str, ...]
    sources: tuple[str, ...]
    layout: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.textures.shape[1])

    def __len__(self) -> int:
        return int(self.textures.shape[0])


def photo_digest(rgb: np.ndarray) -> str:
    """A short digest of a decoded photo ((H, W, 3) uint8): the same pixels, the same digest."""
    a = np.ascontiguousarray(rgb)
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:20]


def entry_from_photo(rgb: np.ndarray, geometry: Any, layout: UVLayout | None = None,
                     size: int = PRIOR_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One prior entry: the photo unwrapped at ``size`` and mirrored onto the half it does not show.

    Returns:
        ``(texture, mask)``: (size, size, 3) uint8 and (size, size) bool (visible or mirror-visible).
    """
    from .complete import mirror_texture, mirror_uv
    from .io import to_uint8
    from .unwrap import unwrap, uv_raster

    layout = layout or default_layout()
    uvr = uv_raster(layout, size)
    un = unwrap(rgb, geometry, size, layout=layout, uvr=uvr)
    vis = un.visibility & uvr.valid
    muv = mirror_uv(layout, size, uvr)
    mir = mirror_texture(un.texture, muv)
    mir_vis = (mirror_texture(vis[None].float(), muv)[0] > 0.999) & uvr.valid & ~vis
    tex = torch.where(vis[None], un.texture, torch.where(mir_vis[None], mir, torch.zeros_like(mir)))
    return to_uint8(tex), (vis | mir_vis).numpy()


def build_prior(photos: Iterable[str | os.PathLike], *, size: int = PRIOR_SIZE, layout: UVLayout | None = None,
                detector: Any = None, min_face: float = 64.0,
                on_photo: Callable[[Path, str | None], None] | None = None, head: Any = None) -> TexturePrior:
    """A prior from photos (the largest face of each).

    Args:
        photos: photo paths.
        size: stored texture size.
        on_photo: called with ``(path, error)`` after each photo (error None when it was used).
        head: the head model (:func:`facerefiner.heads.get_head`; default the face mask); its
            layout is used when ``layout`` is None.

    Raises:
        InputError: no photo gave an entry.
    """
    from .io import load_image
    from .reconstruct import default_detector, reconstruct

    layout = layout or (head.layout() if head is not None else default_layout())
    det = detector or default_detector()
    texs, masks, digests, sources = [], [], [], []
    for p in photos:
        p = Path(p)
        try:
            rgb = load_image(p)
            geo = reconstruct(rgb, min_face=min_face, detector=det, source=str(p), head=head)
            t, m = entry_from_photo(rgb, geo, layout, size)
        except FaceRefinerError as e:
            if on_photo:
                on_photo(p, str(e))
            continue
        dg = photo_digest(rgb)
        if dg in digests:  # the same photo twice
            if on_photo:
                on_photo(p, f"{p}: the same photo as {sources[digests.index(dg)]} (left out)")
            continue
        texs.append(t)
        masks.append(m)
        digests.append(dg)
        sources.append(p.name)
        if on_photo:
            on_photo(p, None)
    if not texs:
        raise InputError("no photo gave a prior entry (no face found in any)")
    return TexturePrior(np.stack(texs), np.stack(masks), tuple(digests), tuple(sources), layout.name)


def save_prior(prior: TexturePrior, path: str | os.PathLike) -> Path:
    """Write a prior as a compressed ``.npz`` (atomically)."""
    import io as _io

    from .io import atomic_write_bytes

    buf = _io.BytesIO()
    np.savez_compressed(buf, version=np.int64(PRIOR_VERSION), textures=prior.textures, masks=prior.masks,
                        digests=np.array(prior.digests), sources=np.array(prior.sources),
                        layout=np.array(prior.layout))
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_prior(path: str | os.PathLike, layout: UVLayout | None = None) -> TexturePrior:
    """Read a prior file.

    Raises:
        InputError: missing, not a prior, another version, or made for another layout (one line).
    """
    p = Path(path)
    layout = layout or default_layout()
    if not p.is_file():
        raise InputError(f"{p}: no such file (--prior)")
    try:
        with np.load(p, allow_pickle=False) as z:
            version = int(z["version"])
            textures, masks = z["textures"], z["masks"]
            digests = tuple(str(s) for s in z["digests"])
            sources = tuple(str(s) for s in z["sources"])
            lay = str(z["layout"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{p}: not a facerefiner prior ({str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                         "make one with `facerefiner prior build`)") from None
    if version != PRIOR_VERSION:
        raise InputError(f"{p}: prior format {version}, this version reads {PRIOR_VERSION} (build it again)")
    n = textures.shape[0] if textures.ndim == 4 else -1
    if (textures.dtype != np.uint8 or textures.ndim != 4 or textures.shape[3] != 3 or masks.shape != textures.shape[:3]
            or len(digests) != n or len(sources) != n or textures.shape[1] != textures.shape[2]):
        raise InputError(f"{p}: a damaged prior (arrays of shapes {textures.shape} and {masks.shape})")
    if lay != layout.name:
        raise InputError(f"{p}: a prior for the UV layout {lay!r}, not {layout.name!r} "
                         "(build it again with `facerefiner prior build` and the same --head)")
    return TexturePrior(textures, masks.astype(bool), digests, sources, lay)


def _luma(t: torch.Tensor) -> torch.Tensor:
    return 0.299 * t[..., 0, :, :] + 0.587 * t[..., 1, :, :] + 0.114 * t[..., 2, :, :]


def fit(prior: TexturePrior, sampled: torch.Tensor, visibility: torch.Tensor, valid: torch.Tensor, *,
        exclude: Iterable[str] = (), k: int = PRIOR_K) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The prior's structure for one face, in that face's colours.

    Each entry is compared with the face on the texels both show (at least a tenth of the face's
    visible texels): the mean squared difference of their luma, each divided by its mean there
    (exposure and skin tone do not count), after a blur of S / 128 (the structure, not the grain).
    The ``k`` best entries are combined with convex weights proportional to 1 / cost; each entry is
    brought to the face's colours by the per-channel ratio of their means on the shared texels and
    kept within :data:`PRIOR_OUTLIER` of the entries' per-texel median (what one entry alone has,
    a highlight or a mole, is not copied).

    Args:
        prior: the database.
        sampled: (3, S, S) float I_S in [0, 1].
        visibility: (S, S) bool V.
        valid: (S, S) bool texels inside the layout.
        exclude: photo digests whose entries are not used (the photo being completed).
        k: entries combined.

    Returns:
        ``(image, where, info)``: (3, S, S) float32 in [0, 1] the combination, (S, S) bool where the
        chosen entries cover the texel (weight at least half), and ``{"entries": [{"source",
        "weight", "cost"}], "excluded": n}``. ``where`` is all False when no entry fits.
    """
    S = sampled.shape[-1]
    dev = sampled.device
    excl = set(exclude)
    keep = [i for i, d in enumerate(prior.digests) if d not in excl]
    info: dict[str, Any] = {"entries": [], "excluded": len(prior) - len(keep), "size": prior.size}
    empty = (torch.zeros((3, S, S), device=dev), torch.zeros((S, S), dtype=torch.bool, device=dev), info)
    if not keep:
        return empty
    tex = torch.from_numpy(prior.textures[keep]).to(dev).permute(0, 3, 1, 2).float() / 255.0
    msk = torch.from_numpy(prior.masks[keep]).to(dev)[:, None].float()
    if prior.size != S:
        tex = F.interpolate(tex, size=(S, S), mode="bilinear", align_corners=False, antialias=prior.size > S)
        msk = F.interpolate(msk, size=(S, S), mode="bilinear", align_corners=False)
    msk = (msk[:, 0] > 0.5) & valid.to(dev)[None]
    vis = (visibility & valid).to(dev)
    sigma = max(1.0, S / 128)
    t_l = lowpass(_luma(sampled.float())[None], vis, sigma)[0]
    costs, ratios = [], []
    need = max(16, int(0.1 * int(vis.sum())))
    for j in range(len(keep)):
        both = vis & msk[j]
        n = int(both.sum())
        if n < need:
            costs.append(float("inf"))
            ratios.append(torch.ones(3, device=dev))
            continue
        e_l = lowpass(_luma(tex[j])[None], both, sigma)[0]
        a, b = t_l[both], e_l[both]
        costs.append(float(((a / a.mean().clamp_min(1e-4) - b / b.mean().clamp_min(1e-4)) ** 2).mean()))
        ratios.append(sampled[:, both].mean(1) / tex[j][:, both].mean(1).clamp_min(1e-4))
    order = [j for j in np.argsort(costs) if np.isfinite(costs[j])][:k]
    if not order:
        return empty
    w = np.array([1.0 / max(costs[j], 1e-9) for j in order])
    w = w / w.sum()
    num = torch.zeros((3, S, S), device=dev)
    den = torch.zeros((S, S), device=dev)
    sq = torch.zeros((S, S), device=dev)
    aligned = torch.stack([(tex[j] * ratios[j][:, None, None]).clamp(0, 1) for j in order])  # (k, 3, S, S)
    covers = torch.stack([msk[j] for j in order])[:, None].expand_as(aligned)
    # what one entry alone has (a highlight, a mole, what is left of a frame) is clipped to the
    # entries' median there: ffhq_00145's highlight on the side of his nose came out as an orange
    # blob on deca_ex_img0392's hidden nose side
    med = torch.where(covers, aligned, torch.full_like(aligned, float("nan"))).nanmedian(0).values
    med = torch.nan_to_num(med)
    aligned = torch.minimum(torch.maximum(aligned, med - PRIOR_OUTLIER), med + PRIOR_OUTLIER)
    for wj, (i, j) in zip(w, enumerate(order)):
        m = msk[j].float() * float(wj)
        num += m[None] * aligned[i]
        den += m
        sq += m * m
        info["entries"].append({"source": prior.sources[keep[j]], "weight": round(float(wj), 4),
                                "cost": round(costs[j], 6)})
    image = num / den.clamp_min(1e-6)[None]
    if RESTORE_DETAIL:
        # the average of k entries keeps their common structure (aligned brows, lids, irises) but
        # divides the rest of their fine detail's amplitude by up to sqrt(k): the detail finer than
        # PRIOR_DETAIL_SIGMA is scaled back by 1 / sqrt(sum of the squared normalised weights)
        where = den > 1e-6
        gain = torch.where(where, den / sq.clamp_min(1e-12).sqrt(), torch.ones_like(den))
        base = lowpass(image, where, max(1.0, PRIOR_DETAIL_SIGMA * S))
        image = torch.where(where[None], base + (image - base) * gain[None], image)
    return image.clamp(0, 1), den >= 0.5, info
