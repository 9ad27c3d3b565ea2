"""The refinement's settings: :class:`RefineConfig` (every field documented; the CLI's help and
``--set`` come from these docs), the named :data:`PRESETS`, overrides and the dict written to
report.json. The loop is :mod:`facerefiner.refine`."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any



log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the refinement (every field is recorded in ``report.json``)."""

    size: int = 512
    """Texture size S of the output (S x S texels)."""
    steps: tuple[int, ...] = (150, 150)
    """SGD steps at each scale, coarse to fine; scale k of n works at size / 2**(n - 1 - k) texels
    (two scales at S = 512: 256 then 512), synthesised from the coarser pyramid levels only."""
    passes: int = 5
    """Outer passes; each restarts from the previous result as the new content texture."""
    content_weight: float = 8.0
    """Weight of the self-similarity content term (divided by ``pass_decay`` every pass)."""
    style_weight: float = 1.7
    """Weight of the style term (REMD + moments + colour)."""
    render_weight: float = 20.0
    """Weight of the rendering L1 term (multiplied by ``pass_decay`` every pass)."""
    pass_decay: float = 1.1
    """Per-pass factor: content weight / pass_decay, rendering weight * pass_decay."""
    coarse_factor: float = 2.0
    """All weights are multiplied by this at every scale but the last."""
    optimizer: str = "sgd"
    """Optimiser of the pyramid levels: sgd (the paper's, with momentum) or adam."""
    lr: float = 0.3
    """Learning rate."""
    momentum: float = 0.9
    """SGD momentum (Adam's beta1)."""
    levels: int = 5
    """Laplacian pyramid levels of the parametrisation."""
    content_samples: int = 2048
    """Hypercolumn samples of I_X (and I_C) per step."""
    style_samples: int = 1000
    """Style samples per set."""
    style_sets: int = 5
    """Style sample sets, alternately from I_S and its mirror image."""
    render_side: int | None = None
    """Long side (px) of the photo region the rendering term compares against (default: unwrap's, ``facerefiner.unwrap.sample_side`` = 2 S, whose raster it then reuses)."""
    features: str = "auto"
    """Feature extractor: vgg16, patches or auto (vgg16 when weights resolve, else patches)."""
    seed: int = 0
    """Random seed (sample positions): same seed, photo and machine -> same texture."""
    keep_visible: bool = False
    """Put the sampled texture I_S back on the visible region at the end, and blend from I_C to the
    refined texture across a band of the hidden region just outside it (:func:`keep_visible_weight`):
    on V the back-projected photo is already the best texture (unwrap's round trip is >= 39 dB) and
    the style term only costs fidelity; the refinement supplies the hidden region. False = the
    optimisation's raw I_X (the paper)."""
    keep_visible_feather: float = 1 / 64
    """Width of that band, as a fraction of the texture size (1/64: 8 texels at S = 512)."""
    crop: int | None = None
    """Side (texels) of a random square crop the features are computed on at each step, at every
    scale larger than it (the content samples of the step are drawn inside it, the content features
    are those of the same crop of I_C, and the style samples come from crops of the same size, so
    that the network sees the same kind of window everywhere). With ``keep_visible`` the crops are
    centred on hidden texels (the visible interior is replaced by I_S at the end anyway).
    None: the whole texture (the paper)."""
    nn_dims: int | None = None
    """Approximate nearest-style-sample search for the REMD term: random projection to this many
    dimensions, then exact among ``nn_candidates`` (losses.NearestSearch). None: exact search."""
    nn_candidates: int = 8
    """Candidates re-ranked exactly per sample by the approximate search."""
    moment_channels: int | None = None
    """Channels (random per step) whose covariance the moment term matches. None: all (the paper)."""
    crop_levels: int | None = None
    """At scales whose features are computed on crops, update only this many of the finest pyramid
    bands (the coarser bands, shared by texels far outside any one crop, keep what the full-view
    scales before made of them). None: all bands."""
    render_visible: bool = False
    """Count the rendering term only on the pixels that see visible texels alone (V rendered >= 0.999,
    the pixels the visible-fidelity metric compares), not on the whole eroded face mask. The mask
    also covers the far cheek at grazing angles, where the photo is smeared or shows hair and
    background past a slightly wide mesh outline: there the term pulls hidden texels towards
    those colours (a green patch beside the mouth of deca_exp_1). False: the eroded render mask
    alone (the paper)."""
    keep_shading: float | None = None
    """Give the hidden region I_C's low frequencies (its brightness, colour and shading) back at the
    end: I_X + G_sigma * (I_C - I_X) there (:func:`keep_shading`), with sigma this fraction of the
    texture size, feathered to nothing on V like ``keep_visible``; the refinement then supplies only
    the detail finer than sigma. The style term is global: it pulls the hidden region's colour
    towards the statistics of the whole visible face (hidden cheeks a few levels brighter than
    their truth: completion PSNR worse than I_C on 14 of 19 photos, BENCHMARKS.md), where I_C's
    fill, lit by the photo's texels around the hole, is the better estimate. None: off (the paper,
    whose content texture is a morphable model's albedo with no shading of its own)."""

    detail: bool = False
    """Start from a content texture whose hidden texels without a visible mirror carry fine detail
    made of the person's own visible skin (:func:`facerefiner.complete.synthesize_detail`), not a
    smooth Poisson fill: the optimisation's short schedules barely move away from its start, so the
    detail has to be there already (the refinement then makes it coherent). False: the smooth fill
    (the paper, whose content texture is a morphable model's albedo)."""

    def __post_init__(self) -> None:
        if not self.steps or len(self.steps) > self.levels + 1:
            raise ValueError(f"steps {self.steps}: one entry per scale, 1 to levels + 1 = {self.levels + 1} scales")
        if min(self.scales) < 16:
            raise ValueError(f"texture sizes must be at least 16, got scales {self.scales} for size {self.size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.passes < 1 or any(n < 0 for n in self.steps):
            raise ValueError("passes must be >= 1 and steps >= 0")
        if self.crop is not None and self.crop < 32:
            raise ValueError(f"crop must be at least 32 texels (or None), got {self.crop}")
        if (self.nn_dims is not None and self.nn_dims < 1) or self.nn_candidates < 1:
            raise ValueError("nn_dims (or None) and nn_candidates must be >= 1")
        if self.crop_levels is not None and self.crop_levels < 1:
            raise ValueError(f"crop_levels must be >= 1 (or None), got {self.crop_levels}")
        if self.keep_shading is not None and not 0.0 < self.keep_shading <= 0.25:
            raise ValueError(f"keep_shading must be in (0, 0.25] (a fraction of the size) or None, "
                             f"got {self.keep_shading}")
        if self.moment_channels is not None and self.moment_channels < 2:
            raise ValueError(f"moment_channels must be >= 2 (or None), got {self.moment_channels}")

    @property
    def num_scales(self) -> int:
        return len(self.steps)

    @property
    def scales(self) -> tuple[int, ...]:
        """Texture size at each scale, coarse to fine."""
        n = len(self.steps)
        return tuple(self.size >> (n - 1 - k) for k in range(n))


#: Named presets. ``paper`` is the authors' literal schedule; ``default`` the everyday one (fast on
#: a CPU: fewer steps, features of the finest scale on 256-texel crops, approximate style search,
#: covariance on 512 random channels per step); ``quick`` a smoke-test schedule (seconds, low quality).
PRESETS: dict[str, RefineConfig] = {
    "paper": RefineConfig(lr=0.03),
    # issue "fast": median 49-51 s per face at 512 on a 2-core CPU (BENCHMARKS.md); every speed option
    # measured against the previous default (60 + 20 steps x 2 passes, full texture, exact losses)
    "default": RefineConfig(steps=(40, 12), passes=1, lr=0.03, keep_visible=True, content_samples=1024,
                            crop=256, crop_levels=1, nn_dims=128, nn_candidates=8, moment_channels=512,
                            render_visible=True, keep_shading=1 / 128, detail=True),
    "quick": RefineConfig(size=128, steps=(20, 20), passes=1, lr=0.03, content_samples=512, style_samples=256,
                          keep_visible=True, render_visible=True, detail=True),
}


def preset(name: str, **overrides: Any) -> RefineConfig:
    """A preset with some fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **overrides)


def apply_overrides(cfg: RefineConfig, items: "list[str] | tuple[str, ...]") -> RefineConfig:
    """``cfg`` with fields replaced from ``FIELD=VALUE`` strings (for benchmark variants).

    Values are parsed by the field's current type: int, float, bool (1/true/yes), tuples of ints
    (``60,20``), ``none`` for an optional field. Raises ValueError naming a bad field or value."""
    names = {f.name for f in fields(cfg)}
    declared = {f.name: str(f.type) for f in fields(cfg)}
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in names:
            raise ValueError(f"{item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(names))}")
        cur = getattr(cfg, key)
        # by the field's declared type (an optional field set to None has no type of its own)
        kind = declared[key].replace(" ", "").split("|")
        try:
            if raw.lower() == "none":
                val: Any = None
            elif isinstance(cur, bool) or "bool" in kind:
                val = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(cur, tuple) or any(k.startswith("tuple") for k in kind):
                val = tuple(int(v) for v in raw.split(","))
            elif isinstance(cur, float) or "float" in kind:
                val = float(raw)
            elif isinstance(cur, int) or "int" in kind:
                val = int(raw)
            else:
                val = raw
        except ValueError:
            raise ValueError(f"{item!r}: bad value for {key} (currently {cur!r})") from None
        out[key] = val
    return replace(cfg, **out)


def config_dict(cfg: RefineConfig) -> dict[str, Any]:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    d["scales"] = list(cfg.scales)
    return d
