"""Resources: the memory a run will need, estimated before it starts, and the memory there is.

The estimates are the peak resident memory measured for ``facerefiner unwrap`` and ``refine`` at
several texture sizes (the tables below; the commands and machine are in BENCHMARKS.md "Memory"),
interpolated linearly in the number of texels S^2 between the measured sizes and extrapolated
along the last segment beyond them. The unwrap table is the larger of a 224 px and a 7.4-megapixel
photo (636 against 437 MB at S = 512: about 27 bytes per photo pixel); the check runs before any
photo is read, so a much larger photo (up to the 250 MP that are read) needs more than the estimate.

The verbs call :func:`check_memory` before they write anything: a run that would not fit in the
memory available now is refused with a one-line error naming the flag and the largest size that
fits. ``FACEREFINER_MEMORY_CHECK=off`` skips the check (for a machine whose free memory is
misreported, or a user who knows better).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FaceRefinerError

log = logging.getLogger(__name__)

#: Environment variable that turns the check off (``off``, ``0``, ``no`` or ``false``).
CHECK_ENV = "FACEREFINER_MEMORY_CHECK"

#: Peak resident memory (MB) of ``facerefiner unwrap``, by texture size S: the larger of a 224 x 224
#: photo (deca_exp_1) and a 7.4-megapixel one (3ddfa_emma_multi); /usr/bin/time -f %M, dev CPU.
UNWRAP_PEAK_MB: dict[int, float] = {512: 636.0, 2048: 1062.0, 4096: 3113.0, 8192: 10096.0}

#: Peak resident memory (MB) of ``facerefiner refine`` (the ``default`` preset's schedule, VGG16
#: features, the heavier of the two extractors; patches measured 1 to 9 % less) on a 224 x 224
#: photo (deca_exp_1), by texture size S; /usr/bin/time -f %M, dev CPU.
REFINE_PEAK_MB: dict[int, float] = {256: 1295.0, 512: 1247.0, 1024: 1394.0, 2048: 4489.0, 4096: 18746.0}

#: Share of the available memory a run may plan to use (the rest is left for the system and the
#: estimate's error).
HEADROOM = 0.9


class MemoryLimitError(FaceRefinerError):
    """The run would need more memory than the machine has available."""


def _interpolate(table: dict[int, float], size: int) -> float:
    """The table's peak (MB) at ``size``: linear in size^2 between entries, the last (or first)
    segment's slope beyond them, never below the smallest entry."""
    ks = sorted(table)
    x = np.array([k * k for k in ks], dtype=np.float64)
    y = np.array([table[k] for k in ks], dtype=np.float64)
    s2 = float(size) ** 2
    if len(ks) == 1:
        return float(y[0])
    if s2 <= x[0]:
        i = 0
    elif s2 >= x[-1]:
        i = len(ks) - 2
    else:
        i = int(np.searchsorted(x, s2)) - 1
    slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
    return float(max(y[0], y[i] + slope * (s2 - x[i])))


def unwrap_memory_mb(size: int) -> float:
    """Estimated peak resident memory (MB) of ``unwrap`` at texture size ``size``."""
    return _interpolate(UNWRAP_PEAK_MB, size)


def refine_memory_mb(config: Any, export_size: int | None = None) -> float:
    """Estimated peak resident memory (MB) of ``refine`` with ``config`` (a RefineConfig: its
    ``size``), and of the export at ``export_size`` (an unwrap at that size) when larger."""
    est = _interpolate(REFINE_PEAK_MB, int(config.size))
    if export_size:
        est = max(est, unwrap_memory_mb(int(export_size)))
    return est


def _cgroup_available_mb() -> float | None:
    """Memory left under this process's cgroup (v2) limit, or None when there is no limit."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("\n")[0].split(":", 2)[2]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((base / "memory.current").read_text().strip())
        return max(0.0, (int(limit) - used) / 2 ** 20)
    except (OSError, IndexError, ValueError):
        return None


def available_memory_mb() -> float | None:
    """Memory available to a new allocation now (MB): the kernel's MemAvailable, or the cgroup's
    remaining limit when that is smaller; None where neither can be read (no check is made)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) / 1024.0
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (ValueError, OSError, AttributeError):
            avail = None
    cg = _cgroup_available_mb()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


def check_memory(needed_mb: float, flag: str, value: Any, *, sizes: dict[int, float] | None = None,
                 available_mb: float | None = None) -> None:
    """Refuse a run that will not fit.

    Args:
        needed_mb: the estimate (:func:`refine_memory_mb`, :func:`unwrap_memory_mb`).
        flag, value: the option that sets the size (``"--size"``, 4096), named in the message.
        sizes: optional table of sizes to suggest from (default: the powers of two 256 to 8192
            with :func:`unwrap_memory_mb` when ``flag`` is about unwrap, else nothing suggested).
        available_mb: the memory available (default: :func:`available_memory_mb`).

    Raises:
        MemoryLimitError: ``needed_mb`` exceeds :data:`HEADROOM` of the available memory; the
            message names the flag, both amounts, the largest suggested size that fits and how to
            skip the check.
    """
    if os.environ.get(CHECK_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return
    avail = available_memory_mb() if available_mb is None else available_mb
    if avail is None:
        log.info("memory check skipped: the available memory cannot be read here")
        return
    if needed_mb <= HEADROOM * avail:
        log.info("memory: about %.0f MB needed, %.0f MB available", needed_mb, avail)
        return
    fits = [s for s, mb in sorted((sizes or {}).items()) if mb <= HEADROOM * avail]
    hint = f"; use {flag} {fits[-1]} or less (about {_gb(sizes[fits[-1]])})" if fits else ""
    raise MemoryLimitError(f"{flag} {value} needs about {_gb(needed_mb)} of memory and {_gb(avail)} is available"
                           f"{hint} (or set {CHECK_ENV}=off to run anyway)")


def refine_sizes(config: Any) -> dict[int, float]:
    """Estimates for the same config at the powers of two from 128 to 4096 (for suggestions)."""
    from dataclasses import replace

    out = {}
    for s in (128, 256, 512, 1024, 2048, 4096):
        try:
            out[s] = refine_memory_mb(replace(config, size=s))
        except ValueError:  # a schedule with too many scales for a small size
            continue
    return out


def unwrap_sizes() -> dict[int, float]:
    """Estimates of ``unwrap`` at the powers of two from 256 to 8192 (for suggestions)."""
    return {s: unwrap_memory_mb(s) for s in (256, 512, 1024, 2048, 4096, 8192)}
