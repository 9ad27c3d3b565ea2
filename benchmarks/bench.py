"""The side-by-side benchmark: several texture methods on the same photos, measured alike.

Usage::

    python benchmarks/bench.py PHOTOS... -o OUT [--methods a,b,...] [--preset default] [--size N]
        [--steps A,B] [--passes N] [--seed N] [--set FIELD=VALUE ...] [--features vgg16|patches] [--vgg-weights PATH]
        [--limit N] [--paper-subset N] [--completion [--probes KINDS]] [--prior FILE] [--occlusion auto|off]
        [--no-identity] [--overwrite] [-v]

PHOTOS are files, folders (their image files, sorted) or glob patterns. Every photo is loaded,
reconstructed (MediaPipe, the largest face) and unwrapped once at the texture size S; every method
then works from that shared unwrap, and each feature extractor (VGG16, patches) is built once.

Methods (``--methods``, comma-separated; default all of them):

* ``sampled``: the sampled texture I_S alone, holes black (fidelity and the identity at the input
  pose only; no seam, no completion).
* ``initial``: the project's content texture I_C (:func:`facerefiner.complete.complete`), no
  optimisation.
* ``strotss``: the optimisation with the style and content terms but no rendering term
  (``refine(render=False)``), ``keep_visible=False``, ``keep_shading=None``, starting from I_C,
  features ``--features``.
* ``facerefiner-vgg16``: the full method with ``--preset`` (default "default"), VGG16 features.
* ``facerefiner-patches``: the same with the offline "patches" features.
* ``paper``: the authors' literal schedule (``PRESETS["paper"]`` at the benchmark's texture size
  and seed; ``--steps``/``--passes`` do not apply), VGG16, only on the first ``--paper-subset``
  photos (default 1: about half an hour per face on a 2-core CPU).
* ``initial-blurred``: I_C blurred by a Gaussian of sigma S/64 texels, a stand-in for a
  detail-poor 3D morphable model albedo; no optimisation.
* ``facerefiner-vgg16-from-blurred``: the full method with that blurred texture as content and
  ``keep_visible=False`` and ``keep_shading=None`` (the paper's setting: the rendering term has to
  bring the detail back, and the content texture's colour is not to be trusted).

Metrics (per photo and method; :mod:`facerefiner.metrics`): visible fidelity (PSNR, SSIM of the
render at the input camera inside V), identity (dlib distance at the input pose and turned to
+-30 degrees; skipped without the ``eval`` extra or with ``--no-identity``), seam (``local_ratio``,
1 = no seam), completion and cost. Completion needs one more run of every method on the photo
per probe, with part of the face hidden (:func:`facerefiner.metrics.probe_mask` as ``mask=``),
which multiplies the cost, so it is computed only with ``--completion`` (recorded as skipped
otherwise); ``--probes`` names the probes (comma-separated from
:data:`facerefiner.metrics.PROBE_KINDS`, or ``all``; default ``cheek``, the cheek facing the
camera). Each probe's run is scored on the texels its mask hid against the unmasked unwrap: PSNR,
SSIM, the detail ratio (:func:`facerefiner.metrics.detail_ratio`, 1 = the photo's fine detail, 0 =
flat) and the identity of its render at the input pose and turned to +-30 degrees. The "fill"
columns are the cheek probe's (today's measure); each probe has its own table. The probe runs are
not counted in the method's time. Cost: ``wall_s`` is the method's time per face end to end
(load, reconstruct, unwrap, completion, blur, optimisation; not the metrics, views or writing);
``peak_rss_mb`` is the peak resident memory while the method ran (the kernel's high-water mark,
reset before the run through ``/proc/self/clear_refs``; where that is not possible, the process's
peak so far, and ``rss_scope`` says which); it includes what the process already holds (torch,
MediaPipe, dlib, VGG16). One-off start-up work (MediaPipe's graphs, torch's first kernels: one tiny
untimed refinement per extractor) is done before the first timed run, so the first photo's times
are comparable with the others'. A reused pair keeps the times of the run that made it (its
``cost`` block records the torch threads it ran with).

Output::

    OUT/runs/<method>/<photo stem>/   texture.png, views.png, report.json (with "metrics" and
                                      "bench"), mesh.obj, camera.json, visibility.png
                                      (`facerefiner eval` reads it too; no render.png: it is a
                                      tile of views.png); with --completion per probe KIND
                                      mask_KIND.png (the photo mask, usable as --mask) and
                                      texture_masked_KIND.png (texture_masked.png for the cheek)
    OUT/results.json                  every metric per photo and method, settings, machine
    OUT/results.md                    medians, per-photo tables, wins of the compared pairs
    OUT/grid.png                      photos x methods: I_X and the head turned -45/+45 degrees
    OUT/metrics.png                   median PSNR, identity, seam, completion vs time per face

Each (photo, method) folder is written atomically, and a finished one is not recomputed when the
command is run again with the same settings (a pair made with other settings is redone, but one
made with ``--completion`` also serves a run without it, and one made with more ``--probes`` a run
with fewer; ``--overwrite`` redoes everything). ``benchmarks/probe_sheet.py OUT`` puts each probe's
hidden region side by side: the mask over the photo, I_C, each method, the truth. Exit
status: 0 all done, 2 some photos or pairs failed (each listed on one line; the batch continues),
1 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from facerefiner.folder import report_or_none
from facerefiner.io import atomic_write_bytes as _atomic_write

log = logging.getLogger(__name__)

__all__ = ["METHODS", "Method", "METRICS", "COMPARISONS", "BenchSettings", "blur_texture", "flat_metrics",
           "probe_metrics", "metric_columns", "wins", "run_bench", "probe_sheet", "main"]

#: Version of results.json and of the "bench" block of each report.json.
BENCH_VERSION = 1
#: Exit statuses (as ``facerefiner``'s verbs).
EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2
#: Blur of ``initial-blurred``: Gaussian sigma = S / BLUR_DIVISOR texels.
BLUR_DIVISOR = 64
#: grid.png is kept under this many bytes (colour-quantised, then shrunk, when larger).
GRID_MAX_BYTES = 1_000_000
#: Tiles of views.png (``facerefiner.views.contact_sheet``): photo, I_S, I_C, I_X, render, -45, -20, +20, +45.
SHEET_PHOTO, SHEET_TEXTURE, SHEET_LEFT, SHEET_RIGHT = 0, 3, 5, 8


# --------------------------------------------------------------------------------------------
# methods


@dataclass(frozen=True)
class Method:
    """One benchmarked method.

    Attributes:
        kind: ``sampled``, ``initial``, ``synth``, ``blurred`` (no optimisation) or ``optimise``.
        features: the extractor of an ``optimise`` method (None: ``--features``).
        render: the rendering term on.
        content: the content texture of an ``optimise`` method: ``initial`` (synthesised when the
            config's ``detail`` is on, as ``refine`` does) or ``blurred``.
        keep_visible: override of the preset's ``keep_visible`` (None: the preset's).
        keep_shading: False turns the preset's ``keep_shading`` off (the paper's setting).
        preset: a fixed preset (``paper``) instead of ``--preset``.
    """

    name: str
    kind: str
    description: str
    features: str | None = None
    render: bool = True
    content: str = "initial"
    keep_visible: bool | None = None
    keep_shading: bool = True
    preset: str | None = None

    @property
    def optimises(self) -> bool:
        return self.kind == "optimise"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sampled", "sampled", "I_S alone, holes black"),
    Method("initial", "initial", "the project's smooth I_C (Poisson completion), no optimisation"),
    Method("synthesis", "synth", "I_C with the hidden region synthesised (the person's own skin detail; a "
                                 "prior's structure with --prior), no optimisation"),
    Method("strotss", "optimise", "style + content, no rendering term, keep_visible and keep_shading off",
           render=False, keep_visible=False, keep_shading=False),
    Method("facerefiner-vgg16", "optimise", "the full method, --preset, VGG16 features", features="vgg16"),
    Method("facerefiner-patches", "optimise", "the full method, --preset, patch features", features="patches"),
    Method("paper", "optimise", "the authors' literal schedule (paper preset), VGG16", features="vgg16",
           preset="paper"),
    Method("initial-blurred", "blurred", f"I_C blurred (Gaussian sigma S/{BLUR_DIVISOR}), a detail-poor "
                                         "3DMM albedo stand-in"),
    Method("facerefiner-vgg16-from-blurred", "optimise", "the full method from the blurred I_C, keep_visible "
                                                         "and keep_shading off, VGG16", features="vgg16",
           content="blurred", keep_visible=False, keep_shading=False),
)}


def comparisons(strotss_features: str = "vgg16") -> list[tuple[str, str, str]]:
    """The pairs (A, B, what it tells) of the "wins" table: on how many photos A beats B."""
    return [
        ("facerefiner-vgg16", "initial", "refinement vs the smooth I_C"),
        ("synthesis", "initial", "the synthesised hidden region vs the smooth fill"),
        ("facerefiner-vgg16", "synthesis", "refinement vs its synthesised starting point"),
        (f"facerefiner-{strotss_features}", "strotss", "the full method vs style + content alone (no rendering "
                                                         "term, no keep_visible or keep_shading), same features"),
        ("facerefiner-vgg16", "paper", "the everyday preset vs the authors' literal schedule"),
        ("facerefiner-vgg16", "facerefiner-patches", "VGG16 vs the offline patch features"),
        ("facerefiner-vgg16-from-blurred", "initial-blurred", "the rendering term brings detail back to a "
                                                              "detail-poor I_C"),
        ("facerefiner-vgg16-from-blurred", "facerefiner-vgg16", "a blurred vs the project's I_C as content"),
        ("facerefiner-patches", "initial", "refinement (patch features) vs its starting point I_C"),
        ("facerefiner-vgg16", "sampled", "visible fidelity given up against the sampled texture"),
        ("facerefiner-patches", "sampled", "visible fidelity given up against the sampled texture"),
    ]


#: Kept for reference: the comparisons with VGG16 features for ``strotss``.
COMPARISONS = comparisons()


# --------------------------------------------------------------------------------------------
# metrics of the tables


@dataclass(frozen=True)
class Metric:
    """A column of the tables. ``better``: ``high``, ``low`` or ``one`` (closest to 1 wins, compared
    as |ln x|). Two values tie when they differ by at most ``max(tol, rel * the larger magnitude)``."""

    key: str
    label: str
    fmt: str
    better: str
    tol: float
    rel: float = 0.0
    in_wins: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("psnr", "PSNR dB", ".2f", "high", 0.05),
    Metric("ssim", "SSIM", ".4f", "high", 5e-4),
    Metric("id", "ID", ".3f", "low", 0.005),
    Metric("id+30", "ID +30", ".3f", "low", 0.005),
    Metric("id-30", "ID -30", ".3f", "low", 0.005),
    Metric("seam", "seam", ".3f", "one", 0.01),
    Metric("fill_psnr", "fill PSNR", ".2f", "high", 0.05),
    Metric("fill_ssim", "fill SSIM", ".4f", "high", 5e-4),
    Metric("fill_detail", "fill detail", ".3f", "one", 0.02),
    Metric("time_s", "time s", ".2f", "low", 0.05, rel=0.05),
    Metric("rss_mb", "RSS MB", ".0f", "low", 1.0, in_wins=False),
)
_METRIC = {m.key: m for m in METRICS}


def probe_metrics(kind: str) -> tuple[Metric, ...]:
    """The columns of one completion probe (keys ``"<kind>:psnr"`` ...): PSNR, SSIM and detail
    ratio on its hidden texels, identity of its masked run at the input pose and turned +-30."""
    return (Metric(f"{kind}:psnr", "PSNR dB", ".2f", "high", 0.05),
            Metric(f"{kind}:ssim", "SSIM", ".4f", "high", 5e-4),
            Metric(f"{kind}:detail", "detail", ".3f", "one", 0.02),
            Metric(f"{kind}:id", "ID", ".3f", "low", 0.005),
            Metric(f"{kind}:id+30", "ID +30", ".3f", "low", 0.005),
            Metric(f"{kind}:id-30", "ID -30", ".3f", "low", 0.005))


def metric_columns(probes: Iterable[str] = ()) -> tuple[Metric, ...]:
    """:data:`METRICS` and the columns of each probe of ``probes`` (:func:`probe_metrics`)."""
    return METRICS + tuple(m for k in probes for m in probe_metrics(k))


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _sub(d: Any, k: str) -> dict:
    v = d.get(k) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """A report's ``"metrics"`` block -> ``{metric key: value or None}`` (see :func:`metric_columns`).

    The ``fill_*`` values are the cheek probe's (``completion["probes"]["cheek"]``; the
    ``completion`` block itself in a pair made before the probes); each probe in
    ``completion["probes"]`` adds its :func:`probe_metrics` keys.
    """
    fid, idn, seam = _sub(metrics, "fidelity"), _sub(metrics, "identity"), _sub(metrics, "seam")
    comp, cost = _sub(metrics, "completion"), _sub(metrics, "cost")
    turned = _sub(idn, "turned")
    probes = _sub(comp, "probes")
    cheek = _sub(probes, "cheek") if probes else comp
    out = {"psnr": _finite(fid.get("psnr")), "ssim": _finite(fid.get("ssim")), "id": _finite(idn.get("render")),
           "id+30": _finite(turned.get("+30")), "id-30": _finite(turned.get("-30")),
           "seam": _finite(seam.get("local_ratio")), "fill_psnr": _finite(cheek.get("psnr")),
           "fill_ssim": _finite(cheek.get("ssim")), "fill_detail": _finite(cheek.get("detail")),
           "time_s": _finite(cost.get("wall_s")), "rss_mb": _finite(cost.get("peak_rss_mb"))}
    for kind, c in probes.items():
        c = c if isinstance(c, dict) else {}
        pid = _sub(c, "identity")
        pturn = _sub(pid, "turned")
        out.update({f"{kind}:psnr": _finite(c.get("psnr")), f"{kind}:ssim": _finite(c.get("ssim")),
                    f"{kind}:detail": _finite(c.get("detail")), f"{kind}:id": _finite(pid.get("render")),
                    f"{kind}:id+30": _finite(pturn.get("+30")), f"{kind}:id-30": _finite(pturn.get("-30"))})
    return out


def compare(metric: Metric, a: float, b: float) -> int:
    """+1 when ``a`` is better than ``b``, -1 when worse, 0 within the metric's tolerance (for
    ``better="one"`` a value <= 0, e.g. the detail ratio of a flat texture, is the farthest from 1)."""
    if metric.better == "one":
        if a <= 0 or b <= 0:
            return 0 if (a <= 0) == (b <= 0) else (1 if b <= 0 else -1)
        a, b = -abs(math.log(a)), -abs(math.log(b))
    elif metric.better == "low":
        a, b = -a, -b
    if abs(a - b) <= max(metric.tol, metric.rel * max(abs(a), abs(b))):
        return 0
    return 1 if a > b else -1


def wins(values: dict[str, dict[str, dict[str, float | None]]], a: str, b: str,
         photos: Iterable[str], metrics: Sequence[Metric] = METRICS) -> dict[str, dict[str, int]]:
    """On how many photos ``a`` beats ``b``, per metric.

    Args:
        values: ``{method: {photo: flat metrics}}``.
        metrics: the columns (default :data:`METRICS`; :func:`metric_columns` adds the probes').

    Returns:
        ``{metric key: {"a": wins of a, "b": wins of b, "ties": n, "n": photos with both values}}``
        for the metrics of ``metrics`` with ``in_wins``.
    """
    photos = list(photos)
    out: dict[str, dict[str, int]] = {}
    for m in metrics:
        if not m.in_wins:
            continue
        c = {"a": 0, "b": 0, "ties": 0, "n": 0}
        for p in photos:
            va = (values.get(a, {}).get(p) or {}).get(m.key)
            vb = (values.get(b, {}).get(p) or {}).get(m.key)
            if va is None or vb is None:
                continue
            c["n"] += 1
            r = compare(m, va, vb)
            c["a" if r > 0 else "b" if r < 0 else "ties"] += 1
        out[m.key] = c
    return out


def median(xs: Iterable[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return float(statistics.median(v)) if v else None


# --------------------------------------------------------------------------------------------
# settings and machine


@dataclass
class BenchSettings:
    """Settings of one benchmark run (see the module docstring and ``--help``)."""

    methods: tuple[str, ...] = tuple(METHODS)
    preset: str = "default"
    size: int | None = None
    steps: tuple[int, ...] | None = None
    passes: int | None = None
    seed: int | None = None
    features: str = "vgg16"
    vgg_weights: Path | None = None
    vgg_format: str = "auto"
    device: str = "auto"
    threads: int | None = None
    limit: int | None = None
    paper_subset: int = 1
    completion: bool = False
    probes: tuple[str, ...] = ("cheek",)
    identity: bool = True
    overwrite: bool = False
    grid_tile: int = 96
    min_face: float = 64.0
    overrides: tuple[str, ...] = ()
    prior: Path | None = None
    occlusion: str = "auto"

    def base_config(self):
        from facerefiner.refine import apply_overrides, preset

        cfg = preset(self.preset, size=self.size, steps=self.steps, passes=self.passes, seed=self.seed)
        return apply_overrides(cfg, self.overrides)

    def configs(self) -> dict[str, Any]:
        """The :class:`~facerefiner.refine.RefineConfig` of each requested optimising method."""
        from facerefiner.refine import PRESETS

        base = self.base_config()
        out = {}
        for name in self.methods:
            spec = METHODS[name]
            if not spec.optimises:
                continue
            cfg = replace(PRESETS[spec.preset], size=base.size, seed=base.seed) if spec.preset else base
            cfg = replace(cfg, features=spec.features or self.features)
            if spec.keep_visible is not None:
                cfg = replace(cfg, keep_visible=spec.keep_visible)
            if not spec.keep_shading:
                cfg = replace(cfg, keep_shading=None)
            out[name] = cfg
        return out


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, cores, torch threads, memory and the device (with the GPU's name)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info = {"cpu_model": cpu, "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "torch_threads": torch.get_num_threads(), "memory_gib": mem, "device": device,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident set size (MB): VmHWM (resettable), else getrusage's ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


# --------------------------------------------------------------------------------------------
# one photo


def blur_texture(texture: torch.Tensor, sigma: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(3, S, S) float texture -> the same blurred by a Gaussian of ``sigma`` texels (reflected at
    the border; border colours extended outside ``valid`` again when given)."""
    import cv2

    from facerefiner.complete import extend_outside

    a = np.ascontiguousarray(texture.detach().float().cpu().permute(1, 2, 0).numpy())
    b = cv2.GaussianBlur(a, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT)
    if valid is not None:
        b = extend_outside(b, valid.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1).clamp(0, 1).contiguous()


class PhotoContext:
    """One photo loaded, reconstructed and unwrapped, with the textures the methods share (computed
    on first use and timed)."""

    def __init__(self, path: Path, size: int, layout, detector, min_face: float, prior: Any = None,
                 seed: int = 0, occlusion: str = "auto") -> None:
        from facerefiner.io import load_image
        from facerefiner.occlusion import face_mask
        from facerefiner.reconstruct import reconstruct_all
        from facerefiner.unwrap import unwrap, uv_raster

        self.path = path
        self.layout = layout
        t0 = time.perf_counter()
        self.rgb = load_image(path)
        t1 = time.perf_counter()
        self.geo = reconstruct_all(self.rgb, min_face=min_face, detector=detector, source=str(path))[0]
        t2 = time.perf_counter()
        # what the CLI leaves out by default (--occlusion auto) is left out here too, in every run
        self.mask, self.occlusion = face_mask(self.rgb, self.geo, layout, None, occlusion)
        t3 = time.perf_counter()
        self.uvr = uv_raster(layout, size)
        self.un = unwrap(self.rgb, self.geo, size, layout=layout, uvr=self.uvr, mask=self.mask)
        t4 = time.perf_counter()
        self.size = size
        self.timings = {"load": t1 - t0, "reconstruct": t2 - t1, "occlusion": t3 - t2, "unwrap": t4 - t3}
        self._cache: dict[str, tuple[Any, float]] = {}
        self.prior = prior
        self.seed = seed

    def _get(self, key: str, fn: Callable[[], Any]) -> tuple[Any, float]:
        if key not in self._cache:
            t = time.perf_counter()
            v = fn()
            self._cache[key] = (v, time.perf_counter() - t)
        return self._cache[key]

    def initial(self, masked: bool | str = False) -> tuple[torch.Tensor, float]:
        """I_C of the photo, or of the probe ``masked`` (a kind; True: the cheek) with its mask."""
        from facerefiner.complete import complete

        kind = _probe_kind(masked)
        un = self.probe(kind)["unwrapped"] if kind else self.un
        return self._get("initial" + (f"_masked_{kind}" if kind else ""),
                         lambda: complete(un.texture, un.visibility, self.layout, uvr=self.uvr))

    def synth(self, masked: bool | str = False) -> tuple[torch.Tensor, float]:
        """I_C with the hidden region synthesised (detail; the prior's structure when there is one,
        leaving out the entries made from this photo): ``refine``'s own content texture."""
        from facerefiner.content import content_texture

        kind = _probe_kind(masked)
        un = self.probe(kind)["unwrapped"] if kind else self.un

        def make() -> torch.Tensor:
            return content_texture(self.rgb, un, self.layout, self.uvr, detail=True, seed=self.seed,
                                   prior=self.prior)[0]

        return self._get("synth" + (f"_masked_{kind}" if kind else ""), make)

    def blurred(self, masked: bool | str = False) -> tuple[torch.Tensor, float]:
        ic, _ = self.initial(masked)
        kind = _probe_kind(masked)
        return self._get("blurred" + (f"_masked_{kind}" if kind else ""),
                         lambda: blur_texture(ic, self.size / BLUR_DIVISOR, self.uvr.valid))

    def probe(self, kind: str = "cheek") -> dict[str, Any]:
        """A completion probe (``metrics.probe_mask`` of ``kind``; ``"cheek"``: the cheek facing the
        camera): ``{"mask", "side", "unwrapped", "hidden"}``, the photo mask, the side it hid, the
        unwrap with it and the texels it hides (visible without it)."""
        from facerefiner.metrics import _probe
        from facerefiner.unwrap import unwrap

        def make() -> dict[str, Any]:
            mask, side = _probe(self.geo, kind, "auto", self.layout)
            if self.mask is not None:
                mask = mask | self.mask
            masked = unwrap(self.rgb, self.geo, self.size, layout=self.layout, uvr=self.uvr, mask=mask)
            return {"mask": mask, "side": side, "unwrapped": masked, "hidden": self.un.visibility & ~masked.visibility}

        return self._get(f"probe_{kind}", make)[0]


def _probe_kind(masked: bool | str) -> str | None:
    """``produce``'s ``masked`` -> the probe kind (True: ``"cheek"``), or None for the unmasked run."""
    if masked is True:
        return "cheek"
    return masked or None


def warm_up_detector(detector) -> float:
    """Build MediaPipe's graphs before the first timed photo (untimed); returns the seconds spent."""
    t = time.perf_counter()
    grey = np.full((256, 256, 3), 128, np.uint8)
    try:
        detector.detect(grey)
        if hasattr(detector, "_run"):
            detector._run(grey, single=True)  # the graph that re-measures the faces of large photos
    except Exception:  # noqa: BLE001 - a warm-up only
        log.info("detector warm-up failed", exc_info=True)
    return time.perf_counter() - t


def warm_up(ctx: PhotoContext, cfgs: dict[str, Any], extractors: dict[str, tuple], device: str) -> float:
    """One tiny untimed refinement per feature extractor before the first timed run (torch's
    kernels and thread pools), so that the first photo's times do not include it. Returns the seconds."""
    from facerefiner.refine import refine

    t = time.perf_counter()
    done = set()
    for cfg in cfgs.values():
        if cfg.features in done or cfg.features not in extractors:
            continue
        done.add(cfg.features)
        tiny = replace(cfg, size=32, steps=(1,), passes=1, content_samples=256, style_samples=64, style_sets=2)
        try:
            refine(ctx.rgb, ctx.geo, config=tiny, extractor=extractors[cfg.features], layout=ctx.layout,
                   device=device)
        except Exception:  # noqa: BLE001
            log.info("refine warm-up failed", exc_info=True)
    return time.perf_counter() - t


@dataclass
class Produced:
    """A method's texture for one photo, what it started from and its timings."""

    texture: torch.Tensor
    content: torch.Tensor
    timings: dict[str, float]
    refine: dict[str, Any] | None = None


def produce(ctx: PhotoContext, spec: Method, cfg: Any, extractor: tuple | None, device: str, *,
            masked: bool | str = False, on_step: Callable[[dict], None] | None = None) -> Produced:
    """Run one method on one photo (``masked``: the run of that completion probe, a kind of
    ``metrics.PROBE_KINDS``, with its mask; True: the cheek)."""
    from facerefiner.refine import refine

    kind = _probe_kind(masked)
    un = ctx.probe(kind)["unwrapped"] if kind else ctx.un
    t = dict(ctx.timings)
    if spec.kind == "sampled":
        return Produced(un.texture, un.texture, t)
    ic, t["complete"] = ctx.initial(masked)
    if spec.kind == "initial":
        return Produced(ic, ic, t)
    if spec.kind == "synth" or (spec.kind == "optimise" and spec.content == "initial" and cfg.detail):
        content, t["complete"] = ctx.synth(masked)
        if spec.kind == "synth":
            return Produced(content, content, t)
    else:
        content = ic
    if spec.kind == "blurred" or spec.content == "blurred":
        content, t["blur"] = ctx.blurred(masked)
    if spec.kind == "blurred":
        return Produced(content, ic, t)
    r = refine(ctx.rgb, ctx.geo, config=cfg, content=content, mask=ctx.probe(kind)["mask"] if kind else ctx.mask,
               extractor=extractor, layout=ctx.layout, device=device, render=spec.render, on_step=on_step,
               unwrapped=un)
    rt = r.timings
    t["refine_setup"] = sum(v for k, v in rt.items() if k != "optimise")
    t["optimise"] = rt.get("optimise", 0.0)
    from facerefiner.refine import config_dict

    return Produced(r.texture, content, t, {"config": config_dict(cfg), "features": r.features, "device": r.device,
                                            "render_term": spec.render, "loss_history": r.history})


def measure(ctx: PhotoContext, spec: Method, texture: torch.Tensor, *, identity: bool) -> dict[str, Any]:
    """Fidelity, identity and seam of one method's texture (the "metrics" block, less completion
    and cost)."""
    from facerefiner import metrics as M

    complete = spec.kind != "sampled"
    vis = ctx.un.visibility
    times: dict[str, float] = {}
    m: dict[str, Any] = {"version": M.METRICS_VERSION, "texture_complete": complete}
    t = time.perf_counter()
    m["fidelity"] = M.visible_fidelity(ctx.rgb, texture, ctx.geo, ctx.layout, vis)
    times["fidelity"] = time.perf_counter() - t
    if not identity:
        m["identity"] = {"skipped": "disabled (--no-identity)"}
    else:
        try:
            model = M.identity_model()
        except M.EvalExtraMissing as e:
            m["identity"] = {"skipped": str(e)}
        else:
            t = time.perf_counter()
            m["identity"] = M.identity_distances(ctx.rgb, texture, ctx.geo, ctx.layout,
                                                 None if complete else vis,
                                                 yaws=M.IDENTITY_YAWS if complete else None, model=model)
            if not complete:
                m["identity"]["turned"] = {"skipped": "the sampled texture is not complete"}
            times["identity"] = time.perf_counter() - t
    if complete:
        t = time.perf_counter()
        m["seam"] = M.seam_ratio(texture, vis, ctx.uvr.valid)
        times["seam"] = time.perf_counter() - t
    else:
        m["seam"] = {"skipped": "the sampled texture is not complete"}
    m["eval_timings_s"] = {k: round(v, 4) for k, v in times.items()}
    return m


def pair_settings(spec: Method, cfg: Any, s: BenchSettings, size: int) -> dict[str, Any]:
    """What a pair's result depends on; a stored pair with other settings is recomputed."""
    from facerefiner.refine import config_dict

    d: dict[str, Any] = {"bench_version": BENCH_VERSION, "method": spec.name, "size": size,
                         "identity": s.identity, "min_face": s.min_face,
                         "completion": bool(s.completion and spec.kind != "sampled"), "occlusion": s.occlusion}
    if d["completion"]:
        d["probes"] = list(s.probes)
    if spec.kind == "synth" or (cfg is not None and cfg.detail and spec.content == "initial"):
        d["synthesis"] = {"detail": True, "prior": str(s.prior) if s.prior else None}
    if spec.kind in ("blurred",) or spec.content == "blurred":
        d["blur_sigma_texels"] = size / BLUR_DIVISOR
    if cfg is not None:
        d["config"] = config_dict(cfg)
        d["render_term"] = spec.render
        if cfg.features == "vgg16":
            d["vgg_weights"] = str(s.vgg_weights) if s.vgg_weights else None
            d["vgg_format"] = s.vgg_format
    from facerefiner.metrics import _json_safe

    return _json_safe(json.loads(json.dumps(d)))  # as stored in report.json (floats rounded)


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class PairState:
    photo: str
    method: str
    status: str = "pending"        # ok, failed, not run
    computed: bool = False
    error: str | None = None
    folder: Path | None = None
    wall: float = 0.0


@dataclass
class BenchRun:
    """Outcome of :func:`run_bench`."""

    out: Path
    photos: list[tuple[str, Path]]
    states: dict[tuple[str, str], PairState]
    photo_errors: dict[str, str] = field(default_factory=dict)
    extractors: dict[str, dict[str, Any]] = field(default_factory=dict)
    warm_up_s: float | None = None
    command: list[str] = field(default_factory=lambda: list(sys.argv))

    @property
    def failed(self) -> bool:
        return bool(self.photo_errors) or any(s.status == "failed" for s in self.states.values())

    def count(self, status: str, computed: bool | None = None) -> int:
        return sum(s.status == status and (computed is None or s.computed == computed) for s in self.states.values())


def photo_names(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(folder name, path) per photo: the stem, or stem_ext when two photos share a stem."""
    stems = [p.stem for p in paths]
    out, seen = [], set()
    for p in paths:
        name = p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        base, i = name, 2
        while name in seen:
            name, i = f"{base}_{i}", i + 1
        seen.add(name)
        out.append((name, p))
    return out


def _stored(folder: Path, settings: dict[str, Any]) -> bool:
    rep = report_or_none(folder)
    if rep is None:
        return False
    b = rep.get("bench") or {}
    stored = b.get("settings")
    if isinstance(stored, dict) and stored.get("completion"):
        if not settings.get("completion"):
            # a pair made with the completion probes holds every other metric as a run without them
            # makes them (each probe is a separate run): it serves that run too
            stored = {k: v for k, v in stored.items() if k != "probes"}
            stored["completion"] = False
        elif set(settings.get("probes") or ()) <= set(stored.get("probes") or ()):
            stored = {**stored, "probes": settings.get("probes")}  # more probes than asked for
    return stored == settings and isinstance(rep.get("metrics"), dict)


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def run_bench(photos: Sequence[Path], out: Path, s: BenchSettings, *, console=None,
              progress: bool | None = None, command: Sequence[str] | None = None) -> BenchRun:
    """Run every requested (photo, method) pair not already done, then write the results files.

    Raises:
        FaceRefinerError: a configuration problem found before any photo (weights, device, output).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from facerefiner.errors import FaceRefinerError
    from facerefiner.features import get_extractor
    from facerefiner.io import ensure_writable_dir
    from facerefiner.layout import default_layout
    from facerefiner.reconstruct import default_detector
    from facerefiner.refine import resolve_device

    con = console or Console(stderr=True, soft_wrap=True)
    out = ensure_writable_dir(out)
    dev = resolve_device(s.device)
    if s.threads:
        torch.set_num_threads(int(s.threads))
    cfgs = s.configs()
    size = s.base_config().size
    photos_named = photo_names(list(photos)[: s.limit] if s.limit else list(photos))
    run = BenchRun(out=out, photos=photos_named, states={})
    if command is not None:
        run.command = list(command)
    settings = {name: pair_settings(METHODS[name], cfgs.get(name), s, size) for name in s.methods}

    pending: dict[str, list[str]] = {}
    for i, (stem, path) in enumerate(photos_named):
        for name in s.methods:
            st = PairState(stem, name, folder=out / "runs" / name / stem)
            run.states[(stem, name)] = st
            if name == "paper" and i >= s.paper_subset:
                st.status, st.error = "not run", f"--paper-subset {s.paper_subset}"
            elif not s.overwrite and _stored(st.folder, settings[name]):
                st.status = "ok"
            else:
                pending.setdefault(stem, []).append(name)

    # One extractor per feature type, built only when a pending pair needs it.
    extractors: dict[str, tuple] = {}
    needed = {cfgs[n].features for names in pending.values() for n in names if n in cfgs}
    for feat in sorted(needed):
        t = time.perf_counter()
        ext = get_extractor(feat, weights=s.vgg_weights if feat == "vgg16" else None,
                            weights_format=s.vgg_format, device=dev)
        extractors[feat] = ext
        run.extractors[feat] = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in ext[1].items()},
                                "load_s": round(time.perf_counter() - t, 3)}

    if pending and s.identity:
        from facerefiner.metrics import EvalExtraMissing, identity_model

        try:
            identity_model()  # load dlib's models now, not inside the first pair
        except EvalExtraMissing as e:
            con.print(f"[yellow]notice:[/yellow] identity metric skipped: {escape(str(e))}", highlight=False)
    layout = default_layout()
    prior = None
    if s.prior is not None:
        from facerefiner.prior import load_prior

        prior = load_prior(s.prior, layout)  # an InputError: one line, exit 1 (main)
    detector = default_detector()
    total = sum(st.status != "not run" for st in run.states.values())
    show = con.is_terminal if progress is None else progress
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[stage]}"), console=con, transient=True, disable=not show) as bar:
        task = bar.add_task("bench", total=total, stage="")
        bar.advance(task, sum(st.status == "ok" for st in run.states.values()))
        warmed = False
        if pending:
            bar.update(task, stage="warm-up (untimed)")
            run.warm_up_s = warm_up_detector(detector)
        for stem, path in photos_named:
            names = pending.get(stem, [])
            if not names:
                continue
            bar.update(task, description=f"{stem[:28]}", stage="reconstruct + unwrap")
            try:
                ctx = PhotoContext(path, size, layout, detector, s.min_face, prior=prior,
                                   seed=s.seed or 0, occlusion=s.occlusion)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - one line per failed photo, the batch goes on
                if isinstance(e, FaceRefinerError):  # its message names the file
                    msg = _one_line(e) if str(path) in str(e) else f"{path}: {_one_line(e)}"
                else:
                    log.info("%s", path, exc_info=True)
                    msg = f"{path}: {type(e).__name__}: {_one_line(e)}"
                run.photo_errors[stem] = msg
                for name in names:
                    run.states[(stem, name)].status = "failed"
                    run.states[(stem, name)].error = run.photo_errors[stem]
                con.print(f"[red]failed[/red] {escape(run.photo_errors[stem])}", highlight=False)
                bar.advance(task, len(names))
                continue
            if not warmed:
                bar.update(task, stage="warm-up (untimed)")
                run.warm_up_s = (run.warm_up_s or 0.0) + warm_up(ctx, cfgs, extractors, str(dev))
                warmed = True
            for name in names:
                st = run.states[(stem, name)]
                spec = METHODS[name]
                bar.update(task, description=f"{stem[:28]} {name}", stage="")

                def step(rec: dict, _bar=bar) -> None:
                    _bar.update(task, stage=f"pass {rec['pass'] + 1} scale {rec['scale']} "
                                            f"step {rec['step'] + 1}/{rec['steps']}")

                try:
                    _run_pair(ctx, spec, cfgs.get(name), extractors, s, str(dev), settings[name], st, step,
                              lambda msg: bar.update(task, stage=msg))
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001
                    log.info("%s [%s]", path, name, exc_info=True)
                    st.status, st.error = "failed", f"{path} [{name}]: {type(e).__name__}: {_one_line(e)}"
                    con.print(f"[red]failed[/red] {escape(st.error)}", highlight=False)
                else:
                    con.print(f"[green]ok[/green] {escape(f'{stem} [{name}] {st.wall:.1f} s -> {st.folder}')}",
                              highlight=False)
                bar.advance(task)
            del ctx
            write_results(run, s, cfgs, size, str(dev))
    write_results(run, s, cfgs, size, str(dev))
    return run


def _run_pair(ctx: PhotoContext, spec: Method, cfg: Any, extractors: dict[str, tuple], s: BenchSettings,
              device: str, settings: dict[str, Any], st: PairState, on_step: Callable[[dict], None] | None,
              stage: Callable[[str], None]) -> None:
    """Produce, measure and write one (photo, method) pair into ``st.folder`` (atomically)."""
    from facerefiner.io import atomic_dir, save_png
    from facerefiner.metrics import _json_safe
    from facerefiner.folder import write_face_folder, write_thumb
    from facerefiner.pipeline import render_over_photo, texture_to_uint8
    from facerefiner.views import contact_sheet

    ext = extractors.get(cfg.features) if cfg is not None else None
    stage("texture")
    scoped = _reset_peak_rss()
    p = produce(ctx, spec, cfg, ext, device, on_step=on_step)
    rss = _peak_rss_mb()
    wall = sum(p.timings.values())
    stage("metrics")
    t = time.perf_counter()
    m = measure(ctx, spec, p.texture, identity=s.identity)
    t_metrics = time.perf_counter() - t
    masked: dict[str, tuple[np.ndarray, torch.Tensor]] = {}  # kind -> (photo mask, texture)
    t_comp = 0.0
    if spec.kind == "sampled":
        m["completion"] = {"skipped": "the sampled texture is not complete"}
    elif not s.completion:
        m["completion"] = {"skipped": "not requested (--completion)"}
    else:
        t = time.perf_counter()
        m["completion"] = completion_runs(ctx, spec, cfg, ext, device, s, masked, on_step, stage)
        t_comp = time.perf_counter() - t
    m["cost"] = {"wall_s": round(wall, 4), "peak_rss_mb": round(rss, 1),
                 "rss_scope": "run" if scoped else "process (the process's peak so far)", "device": device,
                 "torch_threads": torch.get_num_threads()}
    stage("views")
    t = time.perf_counter()
    vis = ctx.un.visibility if spec.kind == "sampled" else None
    comp = render_over_photo(ctx.rgb, p.texture, ctx.geo, ctx.layout, vis)
    sheet = contact_sheet(ctx.rgb, ctx.un.texture, p.content, p.texture, comp, ctx.geo, ctx.layout)
    t_views = time.perf_counter() - t
    extra: dict[str, Any] = {
        "bench": {"version": BENCH_VERSION, "method": spec.name, "description": spec.description,
                  "settings": settings, "device": device,
                  "overhead_s": {"metrics": round(t_metrics, 4), "completion_run": round(t_comp, 4),
                                 "views": round(t_views, 4)}},
        "metrics": m,
    }
    if p.refine is not None:
        extra["refine"] = p.refine
    extra = _json_safe(extra)
    stage("write")
    with atomic_dir(st.folder) as tmp:
        write_face_folder(tmp, ctx.path, ctx.rgb, ctx.geo, ctx.un, ctx.layout, settings, comp, p.timings, extra,
                          texture=p.texture, thumbnail=False)
        (tmp / "render.png").unlink(missing_ok=True)  # full size; views.png has it (a tile) already
        save_png(tmp / "views.png", sheet)
        write_thumb(tmp, sheet)  # the gallery's thumbnail, of views.png
        for kind, (mask, tex) in masked.items():
            save_png(tmp / masked_texture_name(kind), texture_to_uint8(tex))
            save_png(tmp / f"mask_{kind}.png", mask.astype(np.uint8) * 255)
    st.status, st.computed, st.error, st.wall = "ok", True, None, wall


def masked_texture_name(kind: str) -> str:
    """The file of a probe's masked-run texture in a pair folder (the cheek's keeps its old name)."""
    return "texture_masked.png" if kind == "cheek" else f"texture_masked_{kind}.png"


def completion_runs(ctx: PhotoContext, spec: Method, cfg: Any, ext: tuple | None, device: str, s: BenchSettings,
                    masked: dict[str, tuple[np.ndarray, torch.Tensor]], on_step: Callable[[dict], None] | None,
                    stage: Callable[[str], None]) -> dict[str, Any]:
    """One run of the method per probe of ``s.probes``, each scored on the texels its mask hid.

    Fills ``masked`` with ``{kind: (photo mask, texture)}``. Returns the ``"completion"`` block:
    ``{"probes": {kind: {"psnr", "ssim", "detail", "texels", "kind", "side", "mask", "identity"}
    or {"skipped"}}}`` and, at its top level, the first probe's entries (the cheek's by default:
    the block as it was before the probes).
    """
    from facerefiner import metrics as M

    model = None
    id_skip = "disabled (--no-identity)"
    if s.identity:
        try:
            model = M.identity_model()
        except M.EvalExtraMissing as e:
            id_skip = str(e)
    probes: dict[str, Any] = {}
    for kind in s.probes:
        stage(f"completion run: {kind}")
        pr = ctx.probe(kind)
        if not bool(pr["hidden"].any()):
            probes[kind] = {"skipped": f"the {kind} mask hides no texel that the photo shows"}
            continue
        tex = produce(ctx, spec, cfg, ext, device, masked=kind, on_step=on_step).texture
        masked[kind] = (pr["mask"], tex)
        c = {**M.completion_score(tex, ctx.un.texture, pr["hidden"], ctx.un.visibility), "kind": kind,
             "side": pr["side"], "mask": f"cheek_mask ({pr['side']})" if kind == "cheek" else
             f"probe_mask {kind} ({pr['side']})"}
        if model is None:
            c["identity"] = {"skipped": id_skip}
        else:
            stage(f"completion identity: {kind}")
            c["identity"] = M.identity_distances(ctx.rgb, tex, ctx.geo, ctx.layout, None, yaws=M.IDENTITY_YAWS,
                                                 model=model)
        probes[kind] = c
    first = probes[s.probes[0]] if s.probes else {"skipped": "no probes"}
    return {**{k: v for k, v in first.items() if k != "identity"}, "probes": probes}


# --------------------------------------------------------------------------------------------
# results


_read_report = report_or_none




def collect(run: BenchRun, s: BenchSettings) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict]]]:
    """Per pair ``{"photo", "input", "method", "status", "computed", "folder", "metrics", "values"}``
    and ``{method: {photo: flat metrics}}`` of the pairs that are done."""
    rows, values = [], {}
    for stem, path in run.photos:
        for name in s.methods:
            st = run.states[(stem, name)]
            row: dict[str, Any] = {"photo": stem, "input": str(path), "method": name, "status": st.status,
                                   "computed_now": st.computed}
            if st.error:
                row["error"] = st.error
            if st.status == "ok":
                rep = _read_report(st.folder) or {}
                met = rep.get("metrics") or {}
                row["folder"] = str(st.folder.relative_to(run.out))
                row["values"] = flat_metrics(met)
                row["metrics"] = met
                values.setdefault(name, {})[stem] = row["values"]
            rows.append(row)
    return rows, values


def write_results(run: BenchRun, s: BenchSettings, cfgs: dict[str, Any], size: int, device: str) -> None:
    """results.json, results.md, grid.png and metrics.png from the pairs done so far."""
    from facerefiner.metrics import _json_safe
    from facerefiner.refine import config_dict

    rows, values = collect(run, s)
    stems = [p for p, _ in run.photos]
    columns = metric_columns(s.probes if s.completion else ())
    summary = {name: {m.key: {"median": median((values.get(name, {}).get(p) or {}).get(m.key) for p in stems),
                              "n": sum((values.get(name, {}).get(p) or {}).get(m.key) is not None for p in stems)}
                      for m in columns} for name in s.methods}
    pairs = []
    for a, b, why in comparisons(s.features):
        if a in s.methods and b in s.methods:
            pairs.append({"a": a, "b": b, "why": why, "wins": wins(values, a, b, stems, columns)})
    settings = {"methods": list(s.methods), "preset": s.preset, "size": size,
                "steps": list(s.steps) if s.steps else None, "passes": s.passes, "seed": s.seed,
                "strotss_features": s.features, "vgg_weights": str(s.vgg_weights) if s.vgg_weights else None,
                "vgg_format": s.vgg_format, "limit": s.limit, "paper_subset": s.paper_subset,
                "completion": s.completion, "probes": list(s.probes) if s.completion else [],
                "identity": s.identity, "blur_sigma_texels": size / BLUR_DIVISOR,
                "configs": {k: config_dict(v) for k, v in cfgs.items()},
                "extractors_built": run.extractors, "warm_up_s": run.warm_up_s}
    doc = {"version": BENCH_VERSION, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": run.command, "settings": settings, "machine": machine_info(device),
           "photos": [{"name": n, "input": str(p), **({"error": run.photo_errors[n]} if n in run.photo_errors else {})}
                      for n, p in run.photos],
           "metric_columns": {m.key: {"label": m.label, "better": m.better} for m in columns},
           "summary": summary, "comparisons": pairs, "runs": rows,
           "counts": {"ok": run.count("ok"), "computed": run.count("ok", True), "reused": run.count("ok", False),
                      "failed": run.count("failed"), "not_run": run.count("not run")}}
    _atomic_write(run.out / "results.json",
                  (json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n").encode("utf-8"))
    _atomic_write(run.out / "results.md", results_markdown(doc, values, stems).encode("utf-8"))
    try:
        grid = make_grid(run, s, s.grid_tile)
        buf = _png_under(grid, GRID_MAX_BYTES)
        _atomic_write(run.out / "grid.png", buf)
    except Exception:  # noqa: BLE001 - a picture must not lose the numbers
        log.warning("grid.png not written", exc_info=True)
    try:
        _atomic_write(run.out / "metrics.png", _png_bytes(metrics_plot(summary, list(s.methods))))
    except Exception:  # noqa: BLE001
        log.warning("metrics.png not written", exc_info=True)


def _fmt(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def results_markdown(doc: dict[str, Any], values: dict[str, dict[str, dict]], stems: list[str]) -> str:
    st, mach = doc["settings"], doc["machine"]
    c = doc["counts"]
    arrow = {"high": "↑", "low": "↓", "one": "→1"}
    lines = ["# FaceRefiner benchmark", "",
             f"Written {doc['written']}. {len(stems)} photos, methods: {', '.join(st['methods'])}. "
             f"Preset `{st['preset']}`, texture {st['size']} px"
             + (f", steps {st['steps']}" if st["steps"] else "") + (f", passes {st['passes']}" if st["passes"] else "")
             + f"; strotss features `{st['strotss_features']}`; paper on the first {st['paper_subset']} photo(s); "
             f"completion {'on, probes ' + ', '.join(st.get('probes') or []) if st['completion'] else 'off (--completion)'}; identity "
             f"{'on' if st['identity'] else 'off'}.", "",
             f"Machine: {mach['cpu_model']}, {mach['cpus_usable']} usable of {mach['cpu_count']} CPUs, "
             f"torch {mach['torch']} with {mach['torch_threads']} threads, device {mach['device']}"
             + (f" ({mach['gpu']})" if mach.get("gpu") else "") + ".", "",
             f"Pairs: {c['ok']} done ({c['computed']} computed now, {c['reused']} reused), {c['failed']} failed, "
             f"{c['not_run']} not run.", "",
             "Columns: PSNR/SSIM = visible fidelity (render at the input camera vs the photo, inside V); "
             "ID = dlib descriptor distance photo vs render at the input pose, ID ±30 = turned to ±30° "
             "(< 0.6: same person); seam = local seam ratio (1 = no seam); fill PSNR/SSIM/detail = completion "
             "(cheek hidden, `--completion`; detail = detail ratio, 1 = the photo's fine detail, 0 = flat; "
             "see Completion probes); time s = the method's time per face (load, reconstruct, unwrap "
             "and its own work); RSS MB = peak resident memory during the run (the process's models included). "
             "↑ higher is better, ↓ lower, "
             "→1 closest to 1. – = not measured.", ""]
    head = "| method | " + " | ".join(f"{m.label} {arrow[m.better]}" for m in METRICS) + " | n |"
    sep = "|---|" + "---:|" * (len(METRICS) + 1)
    lines += ["## Medians", "", head, sep]
    for name in st["methods"]:
        sm = doc["summary"][name]
        n = len(values.get(name, {}))
        lines.append(f"| {name} | " + " | ".join(_fmt(sm[m.key]["median"], m.fmt) for m in METRICS) + f" | {n} |")
    lines.append("")
    if doc["comparisons"]:
        wm = [m for m in METRICS if m.in_wins]
        lines += ["## Wins", "",
                  "On how many photos A beats B : B beats A (=t: t ties). Ties: within "
                  + ", ".join(f"{m.label} {m.tol:g}" + (f" or {m.rel:.0%}" if m.rel else "")
                              + (" (of |ln x|)" if m.better == "one" else "") for m in wm) + ".", "",
                  "| A | B | what it tells | " + " | ".join(m.label for m in wm) + " |",
                  "|---|---|---|" + "---:|" * len(wm)]
        for p in doc["comparisons"]:
            cells = [_wins_cell(p["wins"][m.key]) for m in wm]
            lines.append(f"| {p['a']} | {p['b']} | {p['why']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _probes_markdown(doc, stems)
    lines += ["## Per photo", ""]
    runs = {(r["photo"], r["method"]): r for r in doc["runs"]}
    for name in st["methods"]:
        lines += [f"### {name}", "", METHODS[name].description + ".", "",
                  "| photo | " + " | ".join(m.label for m in METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
        for p in stems:
            r = runs.get((p, name), {})
            if r.get("status") == "ok":
                v = r["values"]
                lines.append(f"| {p} | " + " | ".join(_fmt(v.get(m.key), m.fmt) for m in METRICS) + " |")
            else:
                why = r.get("status", "missing")
                if r.get("status") == "not run" and r.get("error"):
                    why += f" ({r['error']})"
                elif r.get("status") == "failed":
                    why += " (see Failures)"
                lines.append(f"| {p} | {why} |" + " |" * (len(METRICS) - 1))
        sm = doc["summary"][name]
        lines.append("| **median** | " + " | ".join(f"**{_fmt(sm[m.key]['median'], m.fmt)}**"
                                                    if sm[m.key]["median"] is not None else "–" for m in METRICS) + " |")
        lines.append("")
    photo_fail = {p["name"]: p["error"] for p in doc["photos"] if p.get("error")}
    fails = [r for r in doc["runs"] if r["status"] == "failed" and r["photo"] not in photo_fail]
    if photo_fail or fails:
        lines += ["## Failures", ""]
        lines += [f"- {name} (every method): {err}" for name, err in photo_fail.items()]
        lines += [f"- {r['photo']} [{r['method']}]: {r.get('error', '')}" for r in fails]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# pictures (Pillow only)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _png_bytes(img) -> bytes:
    import io

    b = io.BytesIO()
    img.save(b, format="PNG", optimize=True)
    return b.getvalue()


def _png_under(img, limit: int) -> bytes:
    """PNG bytes of ``img``; colour-quantised and then shrunk until under ``limit`` bytes."""
    from PIL import Image

    data = _png_bytes(img)
    cur = img
    while len(data) > limit:
        q = cur.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        data = _png_bytes(q)
        if len(data) <= limit or min(cur.size) < 64:
            break
        cur = cur.resize((max(1, int(cur.width * 0.8)), max(1, int(cur.height * 0.8))), Image.LANCZOS)
        data = _png_bytes(cur)
    return data


def _wins_cell(w: dict[str, int]) -> str:
    return "–" if w["n"] == 0 else f"{w['a']}:{w['b']}" + (f" ={w['ties']}" if w["ties"] else "")


def _probes_markdown(doc: dict[str, Any], stems: list[str]) -> list[str]:
    """The "Completion probes" section of results.md: per probe, medians, wins and per-photo rows."""
    kinds = doc["settings"].get("probes") or []
    if not doc["settings"].get("completion") or not kinds:
        return []
    arrow = {"high": "↑", "low": "↓", "one": "→1"}
    methods = [m for m in doc["settings"]["methods"] if METHODS[m].kind != "sampled"]
    runs = {(r["photo"], r["method"]): r for r in doc["runs"]}
    lines = ["## Completion probes", "",
             "Each method run once more per probe with part of the face hidden in the photo "
             "(`--probes`; masks drawn from MediaPipe's landmarks, `facerefiner.metrics.probe_mask`) and scored on "
             "the texels the mask hid against the unmasked unwrap's sampled texture. detail = detail ratio: std of "
             "the luma's difference of Gaussians (sigma 1 and 3 texels at S = 512) over the hidden texels eroded "
             "by 3, over the same for the truth (1 = the photo's fine detail, 0 = flat, above 1 = noise). PSNR "
             "alone rewards a blur and the detail ratio alone rewards noise: a good completion needs both. "
             "ID = identity of the masked run's render at the input pose and turned ±30°.", ""]
    for kind in kinds:
        cols = probe_metrics(kind)
        texels = median((((runs.get((p, m)) or {}).get("metrics") or {}).get("completion") or {})
                        .get("probes", {}).get(kind, {}).get("texels") for p in stems for m in methods[:1])
        lines += [f"### Probe: {kind}", ""]
        if texels is not None:
            lines += [f"Median hidden texels: {texels:.0f}.", ""]
        lines += ["| method | " + " | ".join(f"{m.label} {arrow[m.better]}" for m in cols) + " | n |",
                  "|---|" + "---:|" * (len(cols) + 1)]
        for name in methods:
            sm = doc["summary"][name]
            n = sum(((runs.get((p, name)) or {}).get("values") or {}).get(cols[0].key) is not None for p in stems)
            lines.append(f"| {name} | " + " | ".join(_fmt(sm[m.key]["median"], m.fmt) for m in cols) + f" | {n} |")
        lines.append("")
        comps = [p for p in doc["comparisons"] if METHODS[p["b"]].kind != "sampled"]
        if comps:
            lines += ["| A | B | " + " | ".join(m.label for m in cols) + " |", "|---|---|" + "---:|" * len(cols)]
            lines += [f"| {p['a']} | {p['b']} | " + " | ".join(_wins_cell(p["wins"][m.key]) for m in cols) + " |"
                      for p in comps]
            lines.append("")
        lines += ["| photo | method | " + " | ".join(m.label for m in cols) + " |", "|---|---|" + "---:|" * len(cols)]
        for p in stems:
            for name in methods:
                v = (runs.get((p, name)) or {}).get("values")
                if v is not None:
                    lines.append(f"| {p} | {name} | " + " | ".join(_fmt(v.get(m.key), m.fmt) for m in cols) + " |")
        lines.append("")
    return lines


def make_grid(run: BenchRun, s: BenchSettings, tile: int):
    """Rows photos, columns methods; a cell is I_X and the head turned -45 and +45 degrees (from
    each pair's views.png); the first column is the photo."""
    from PIL import Image, ImageDraw

    gap, head = 6, 22
    cell_w = 3 * tile
    W = tile + gap + len(s.methods) * (cell_w + gap)
    H = head + len(run.photos) * (tile + gap)
    img = Image.new("RGB", (W, max(H, head + tile)), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    for j, name in enumerate(s.methods):
        x = tile + gap + j * (cell_w + gap)
        d.text((x + cell_w / 2, head / 2), name, fill=(0, 0, 0), font=font, anchor="mm")
    d.text((tile / 2, head / 2), "photo", fill=(0, 0, 0), font=font, anchor="mm")
    for i, (stem, _) in enumerate(run.photos):
        y = head + i * (tile + gap)
        photo_done = False
        for j, name in enumerate(s.methods):
            x = tile + gap + j * (cell_w + gap)
            st = run.states[(stem, name)]
            sheet = None
            if st.status == "ok":
                try:
                    with Image.open(st.folder / "views.png") as im:
                        sheet = im.convert("RGB")
                except OSError:
                    sheet = None
            if sheet is None:
                d.rectangle([x, y, x + cell_w - 1, y + tile - 1], fill=(200, 200, 200))
                d.text((x + cell_w / 2, y + tile / 2), st.status if st.status != "ok" else "no views.png",
                       fill=(90, 0, 0), font=font, anchor="mm")
                continue
            t = sheet.height
            for k, idx in enumerate((SHEET_TEXTURE, SHEET_LEFT, SHEET_RIGHT)):
                part = sheet.crop((idx * t, 0, (idx + 1) * t, t)).resize((tile, tile), Image.LANCZOS)
                img.paste(part, (x + k * tile, y))
            if not photo_done:
                img.paste(sheet.crop((SHEET_PHOTO * t, 0, t, t)).resize((tile, tile), Image.LANCZOS), (0, y))
                photo_done = True
        if not photo_done:
            d.rectangle([0, y, tile - 1, y + tile - 1], fill=(200, 200, 200))
        bbox = d.textbbox((2, y + tile - 2), stem[:18], font=small, anchor="lb")
        d.rectangle(bbox, fill=(0, 0, 0))
        d.text((2, y + tile - 2), stem[:18], fill=(255, 255, 255), font=small, anchor="lb")
    return img


#: Colour of the probe mask over the photo in :func:`probe_sheet`.
PROBE_TINT = (255, 0, 200)


def _fit_tile(img, tile: int, texels: bool = True):
    """``img`` (PIL) scaled to fit a ``tile`` x ``tile`` square on grey: reduced (Lanczos), or
    enlarged by a whole factor with nearest neighbour for ``texels`` (each texel a sharp block),
    else smoothly (Lanczos) to the full tile."""
    from PIL import Image

    f = tile / max(img.width, img.height)
    if f >= 1 and texels:
        k = int(f)
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    else:
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
    out = Image.new("RGB", (tile, tile), (128, 128, 128))
    out.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    return out


def _read_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        return None


def _shaded(tex: np.ndarray, box: tuple[slice, slice], shade: np.ndarray):
    """(S, S, 3) texture in 0..255 -> the PIL crop ``box`` of it times ``shade`` ((h, w, 1))."""
    from PIL import Image

    return Image.fromarray((tex[box] * shade + 0.5).clip(0, 255).astype(np.uint8))


def _probe_entry(folder: Path, kind: str) -> dict[str, Any]:
    """A pair's ``metrics["completion"]["probes"][kind]`` ({} when absent)."""
    comp = _sub(_sub(_read_report(folder) or {}, "metrics"), "completion")
    return _sub(_sub(comp, "probes"), kind)


def probe_sheet(out: Path, kinds: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                photos: Sequence[str] | None = None, tile: int = 256, dim: float = 0.45):
    """A picture of the completion probes of a benchmark run, to judge brows, eyelids and pores.

    One row per photo and probe: the probe's mask over the photo (the face's crop), then each
    method's masked-run texture (``initial`` = I_C first) and the truth (the unmasked unwrap's
    sampled texture), all cropped to the bounding box (in UV space) of the texels the mask hid,
    with the texels outside it dimmed to ``dim``; under each, its PSNR and detail ratio there. The
    truth and the hidden texels are recomputed from the pair folder (its mesh, camera, photo and
    ``mask_KIND.png``), as ``facerefiner eval`` does.

    Args:
        out: the benchmark's OUT (with results.json).
        kinds, methods, photos: subsets (default: every probe, method but ``sampled``, photo of
            results.json).
        tile: side (px) of each square tile.

    Returns:
        The PIL image.

    Raises:
        InputError: no results.json, or nothing to show (no pair made with ``--completion``).
    """
    from PIL import Image, ImageDraw

    from facerefiner.errors import InputError
    from facerefiner.metrics import load_output
    from facerefiner.unwrap import unwrap, uv_raster

    out = Path(out)
    try:
        res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{out}: no results.json (not a benchmark output folder)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{out / 'results.json'}: unreadable ({type(e).__name__})") from None
    st = res.get("settings") or {}
    all_kinds = list(st.get("probes") or [])
    kinds = list(kinds) if kinds else all_kinds
    methods = list(methods) if methods else [m for m in st.get("methods", []) if m in METHODS
                                              and METHODS[m].kind != "sampled"]
    methods = sorted(methods, key=lambda m: m != "initial")  # I_C first
    stems = [p["name"] for p in res.get("photos", [])]
    if photos:
        unknown = [p for p in photos if p not in stems]
        if unknown:
            raise InputError(f"{out}: no photo {', '.join(map(repr, unknown))} in results.json")
        stems = [p for p in stems if p in photos]
    rows = []  # (label, [(tile image, caption)])
    for stem in stems:
        for kind in kinds:
            folders = {m: out / "runs" / m / stem for m in methods}
            base = next((f for f in folders.values() if (f / f"mask_{kind}.png").is_file()), None)
            if base is None:
                continue
            o = load_output(base)
            S = int(o.texture.shape[-1])
            mask = _read_rgb(base / f"mask_{kind}.png")[..., 0] > 127
            uvr = uv_raster(o.layout, S)
            full = unwrap(o.photo, o.geometry, S, layout=o.layout, uvr=uvr, cos_threshold=o.report.get("cos_threshold"))
            part = unwrap(o.photo, o.geometry, S, layout=o.layout, uvr=uvr, mask=mask,
                          cos_threshold=o.report.get("cos_threshold"))
            hidden = (full.visibility & ~part.visibility).numpy()
            if not hidden.any():
                continue
            ys, xs = np.nonzero(hidden)
            pad = max(2, S // 128)
            y0, y1 = max(0, ys.min() - pad), min(S, ys.max() + pad + 1)
            x0, x1 = max(0, xs.min() - pad), min(S, xs.max() + pad + 1)
            shade = np.where(hidden[y0:y1, x0:x1, None], 1.0, dim)
            box = (slice(y0, y1), slice(x0, x1))

            # the photo, the mask tinted over it, cropped to the face
            bx0, by0, bx1, by1 = o.geometry.box
            m = 0.12 * max(bx1 - bx0, by1 - by0)
            H, W = mask.shape
            fx0, fy0 = max(0, int(bx0 - m)), max(0, int(by0 - m))
            fx1, fy1 = min(W, int(bx1 + m) + 1), min(H, int(by1 + m) + 1)
            ph = o.photo[fy0:fy1, fx0:fx1].astype(np.float64)
            mk = mask[fy0:fy1, fx0:fx1, None]
            ph = np.where(mk, 0.5 * ph + 0.5 * np.array(PROBE_TINT), ph)
            side = _probe_entry(base, kind).get("side")
            tiles = [(_fit_tile(Image.fromarray(ph.astype(np.uint8)), tile, texels=False),
                      f"{kind} mask" + (f" ({side})" if side else ""))]
            for name in methods:
                f = folders[name]
                tex = _read_rgb(f / masked_texture_name(kind))
                if tex is None or tex.shape[:2] != (S, S):
                    tiles.append((None, "not run"))
                    continue
                c = _probe_entry(f, kind)
                cap = (f"PSNR {_fmt(_finite(c.get('psnr')), '.2f')}  detail {_fmt(_finite(c.get('detail')), '.2f')}")
                tiles.append((_fit_tile(_shaded(tex, box, shade), tile), cap))
            truth = (full.texture.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.float64)
            tiles.append((_fit_tile(_shaded(truth, box, shade), tile), f"{int(hidden.sum())} texels hidden"))
            rows.append((f"{stem} / {kind}", tiles))
    if not rows:
        raise InputError(f"{out}: no probe to show (run the benchmark with --completion; kinds: "
                         f"{', '.join(kinds) or 'none'})")
    gap, head, label, cap_h = 6, 24, 18, 18
    ncol = len(methods) + 2
    Wd = ncol * (tile + gap) + gap
    row_h = label + tile + cap_h + gap
    img = Image.new("RGB", (Wd, head + len(rows) * row_h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    for j, name in enumerate(["photo + mask", *[("I_C (initial)" if n == "initial" else n) for n in methods],
                              "truth (unmasked unwrap)"]):
        d.text((gap + j * (tile + gap) + tile / 2, head / 2), name, fill=(0, 0, 0), font=font, anchor="mm")
    for i, (lab, tiles) in enumerate(rows):
        y = head + i * row_h
        d.text((gap, y + label / 2), lab, fill=(0, 0, 0), font=font, anchor="lm")
        for j, (t, cap) in enumerate(tiles):
            x = gap + j * (tile + gap)
            if t is None:
                d.rectangle([x, y + label, x + tile - 1, y + label + tile - 1], fill=(200, 200, 200))
            else:
                img.paste(t, (x, y + label))
            d.text((x + tile / 2, y + label + tile + cap_h / 2), cap, fill=(0, 0, 0), font=small, anchor="mm")
    return img


_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-9 * step:
        out.append(round(t, 10))
        t += step
    return out


def metrics_plot(summary: dict[str, dict[str, dict]], methods: list[str]):
    """Four panels of median metrics per method (y) against the median time per face (x, log):
    PSNR, identity at the input pose, seam (local ratio) and completion PSNR."""
    from PIL import Image, ImageDraw

    panels = [("psnr", "visible PSNR (dB), higher is better"), ("id", "identity distance at the input pose, lower is better"),
              ("seam", "seam: local ratio, 1 = no seam"), ("fill_psnr", "completion PSNR (dB), higher is better")]
    pw, ph, legend_h = 560, 380, 26 * ((len(methods) + 3) // 4) + 40
    W, H = 2 * pw + 30, 2 * ph + 40 + legend_h
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font, title = _font(12), _font(14)
    d.text((W / 2, 16), "FaceRefiner benchmark: median per method vs median time per face", fill=(0, 0, 0),
           font=_font(16), anchor="mm")
    colour = {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(methods)}
    times = {m: summary[m]["time_s"]["median"] for m in methods}
    tvals = [t for t in times.values() if t is not None and t > 0]
    if tvals:
        x_lo, x_hi = math.log10(min(tvals)), math.log10(max(tvals))
        pad = max(0.15, 0.08 * (x_hi - x_lo))
        x_lo, x_hi = x_lo - pad, x_hi + pad
    for k, (key, label) in enumerate(panels):
        ox, oy = 15 + (k % 2) * pw, 34 + (k // 2) * ph
        L, T, R, B = ox + 60, oy + 28, ox + pw - 20, oy + ph - 44
        d.text(((L + R) / 2, oy + 12), label, fill=(0, 0, 0), font=title, anchor="mm")
        d.rectangle([L, T, R, B], outline=(0, 0, 0))
        pts = [(m, times[m], summary[m][key]["median"]) for m in methods
               if times[m] is not None and times[m] > 0 and summary[m][key]["median"] is not None]
        if not pts:
            d.text(((L + R) / 2, (T + B) / 2), "no data (not measured)", fill=(120, 120, 120), font=title,
                   anchor="mm")
            continue
        ys = [p[2] for p in pts] + ([1.0] if key == "seam" else [])
        y_lo, y_hi = min(ys), max(ys)
        span = (y_hi - y_lo) or max(abs(y_hi) * 0.1, 1e-3)
        y_lo, y_hi = y_lo - 0.12 * span, y_hi + 0.12 * span

        def X(t: float) -> float:
            return L + (math.log10(t) - x_lo) / (x_hi - x_lo) * (R - L)

        def Y(v: float) -> float:
            return B - (v - y_lo) / (y_hi - y_lo) * (B - T)

        for v in _nice_ticks(y_lo, y_hi):
            d.line([L - 4, Y(v), L, Y(v)], fill=(0, 0, 0))
            d.line([L + 1, Y(v), R - 1, Y(v)], fill=(235, 235, 235))
            d.text((L - 6, Y(v)), f"{v:g}", fill=(0, 0, 0), font=font, anchor="rm")
        e0, e1 = math.floor(x_lo), math.ceil(x_hi)
        for e in range(e0, e1 + 1):
            for mult in (1, 2, 5):
                t = mult * 10.0 ** e
                if x_lo <= math.log10(t) <= x_hi:
                    d.line([X(t), B, X(t), B + 4], fill=(0, 0, 0))
                    d.line([X(t), T + 1, X(t), B - 1], fill=(235, 235, 235))
                    d.text((X(t), B + 6), f"{t:g}", fill=(0, 0, 0), font=font, anchor="mt")
        d.text(((L + R) / 2, B + 24), "time per face (s, log scale)", fill=(0, 0, 0), font=font, anchor="mt")
        if key == "seam" and y_lo <= 1.0 <= y_hi:
            for xx in range(int(L) + 2, int(R) - 2, 8):
                d.line([xx, Y(1.0), xx + 4, Y(1.0)], fill=(120, 120, 120))
        for m, t, v in pts:
            cx, cy = X(t), Y(v)
            d.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], fill=colour[m], outline=(0, 0, 0))
    ly = 2 * ph + 44
    for i, m in enumerate(methods):
        x, y = 20 + (i % 4) * (W - 40) / 4, ly + (i // 4) * 26
        d.ellipse([x, y, x + 12, y + 12], fill=colour[m], outline=(0, 0, 0))
        d.text((x + 18, y + 6), m, fill=(0, 0, 0), font=font, anchor="lm")
    return img


# --------------------------------------------------------------------------------------------
# command line


def _probe_kinds() -> tuple[str, ...]:
    from facerefiner.metrics import PROBE_KINDS

    return PROBE_KINDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 1, as the facerefiner verbs
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    epilog = "methods:\n" + "\n".join(f"  {m.name:32s}{m.description}" for m in METHODS.values()) + (
        "\n\nOUT/runs/<method>/<photo>/ holds each pair's texture.png, views.png and report.json (with the "
        "metrics);\na finished pair is not recomputed on a rerun with the same settings (--overwrite redoes it).")
    p = _Parser(prog="python benchmarks/bench.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=epilog,
                description="Run several texture methods side by side on photos and compare them "
                            "(results.json, results.md, grid.png, metrics.png).\nExit: 0 ok, 2 some failed, 1 usage.")
    p.add_argument("photos", nargs="+", help="photos, folders of photos or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (resumable)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated, from: " + ", ".join(METHODS) + " (default: all)")
    p.add_argument("--preset", default="default", help="schedule of the facerefiner-* methods: paper, default, quick")
    p.add_argument("--size", type=int, help="texture size S (default: the preset's)")
    p.add_argument("--steps", help="steps per scale, coarse to fine, e.g. 60,20 (not for the paper method)")
    p.add_argument("--passes", type=int, help="outer passes (not for the paper method)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="replace a field of the preset's RefineConfig, e.g. --set crop=128 (repeatable; "
                        "not for the paper method)")
    p.add_argument("--features", default="vgg16", choices=("vgg16", "patches"),
                   help="features of the strotss method (the others' are in their names)")
    p.add_argument("--vgg-weights", type=Path, help="VGG16 weights file")
    p.add_argument("--vgg-format", default="auto", choices=("auto", "torchvision", "caffe"))
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--limit", type=int, help="only the first N photos")
    p.add_argument("--paper-subset", type=int, default=1, help="run the paper method on the first N photos only (default 1)")
    p.add_argument("--completion", action="store_true",
                   help="also measure completion: one more run per method and probe with part of the face hidden "
                        "(see --probes; each probe adds the cost of a run)")
    p.add_argument("--probes", default="cheek", metavar="KINDS",
                   help="the completion probes, comma-separated from: " + ", ".join(_probe_kinds())
                        + ", or all (default: cheek, the cheek facing the camera)")
    p.add_argument("--prior", type=Path, default=None, metavar="FILE",
                   help="a face-texture prior (facerefiner prior build) for the synthesis; entries made from the "
                        "photo being completed are left out")
    p.add_argument("--occlusion", default="auto", choices=("auto", "off"),
                   help="auto (as the facerefiner verbs): hands, hair, glasses, background and highlights found in "
                        "front of the face are left out of every run and of the truth; off: every pixel is trusted")
    p.add_argument("--no-identity", action="store_true", help="skip the identity metric (dlib)")
    p.add_argument("--overwrite", action="store_true", help="recompute pairs that are already done")
    p.add_argument("--grid-tile", type=int, default=96, help="tile size (px) in grid.png (default 96)")
    p.add_argument("--min-face", type=float, default=64.0, help="ignore faces smaller than this (px)")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (tracebacks of failures) to stderr")
    return p


def _choose(parser: argparse.ArgumentParser, flag: str, raw: str, choices: list[str], what: str) -> list[str]:
    """A comma-separated list of ``choices`` (or ``all``), duplicates dropped; a usage error names
    the unknown ones."""
    picked = [m.strip() for m in raw.split(",") if m.strip()]
    if picked == ["all"]:
        picked = list(choices)
    bad = [m for m in picked if m not in choices]
    if bad or not picked:
        parser.error(f"{flag}: unknown {what}(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                     f"choose from {', '.join(choices)} or all")
    return list(dict.fromkeys(picked))


def settings_from_args(a: argparse.Namespace, parser: argparse.ArgumentParser) -> BenchSettings:
    from facerefiner.refine import PRESETS

    methods = _choose(parser, "--methods", a.methods, list(METHODS), "method")
    if a.preset not in PRESETS:
        parser.error(f"--preset must be one of {', '.join(PRESETS)}, got {a.preset!r}")
    if a.size is not None and not 32 <= a.size <= 4096:
        parser.error(f"--size must be between 32 and 4096, got {a.size}")
    steps = None
    if a.steps is not None:
        try:
            steps = tuple(int(v) for v in a.steps.split(","))
        except ValueError:
            parser.error(f"--steps must be comma-separated integers such as 60,20, got {a.steps!r}")
    for name, v, lo in (("--passes", a.passes, 1), ("--limit", a.limit, 1), ("--threads", a.threads, 1),
                        ("--paper-subset", a.paper_subset, 0)):
        if v is not None and v < lo:
            parser.error(f"{name} must be at least {lo}, got {v}")
    if not 16 <= a.grid_tile <= 512:
        parser.error(f"--grid-tile must be between 16 and 512, got {a.grid_tile}")
    if a.vgg_weights is not None and not a.vgg_weights.is_file():
        parser.error(f"--vgg-weights {a.vgg_weights}: no such file")
    kinds = _probe_kinds()
    probes = sorted(_choose(parser, "--probes", a.probes, kinds, "probe"), key=kinds.index)  # one order
    s = BenchSettings(methods=tuple(methods), preset=a.preset, size=a.size, steps=steps, passes=a.passes,
                      seed=a.seed, features=a.features, vgg_weights=a.vgg_weights, vgg_format=a.vgg_format,
                      device=a.device, threads=a.threads, limit=a.limit, paper_subset=a.paper_subset,
                      completion=a.completion, probes=tuple(probes), prior=a.prior, occlusion=a.occlusion,
                      identity=not a.no_identity, overwrite=a.overwrite,
                      grid_tile=a.grid_tile, min_face=a.min_face, overrides=tuple(a.overrides))
    try:
        s.configs()
    except ValueError as e:
        parser.error(f"{e} (check --size, --steps, --passes, --set and --preset)")
    return s


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python benchmarks/bench.py``; returns the exit status."""
    from rich.console import Console

    from facerefiner.errors import FaceRefinerError
    from facerefiner.pipeline import expand_inputs

    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    con = Console(stderr=True, soft_wrap=True)
    try:
        s = settings_from_args(a, parser)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        files = expand_inputs(a.photos)
    except FaceRefinerError as e:
        con.print(f"[red]error:[/red] {e}", highlight=False)
        return EXIT_USAGE
    if not files:
        con.print("[red]error:[/red] no photos given (no file matched " + ", ".join(a.photos) + ")", highlight=False)
        return EXIT_USAGE
    t0 = time.perf_counter()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        run = run_bench(files, a.out, s, console=con, command=["python", "benchmarks/bench.py", *argv])
    except FaceRefinerError as e:
        con.print(f"[red]error:[/red] {e}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        con.print("interrupted", highlight=False)
        return 130
    con.print(f"bench: {run.count('ok', True)} computed, {run.count('ok', False)} reused, "
              f"{run.count('failed')} failed, {run.count('not run')} not run "
              f"({len(run.photo_errors)} photos failed) in {time.perf_counter() - t0:.1f} s; "
              f"results in {run.out / 'results.md'}", highlight=False)
    return EXIT_FAILED if run.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
