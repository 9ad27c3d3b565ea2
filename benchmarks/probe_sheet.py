"""A picture of the benchmark's completion probes: what each method put where the photo was hidden.

    python benchmarks/probe_sheet.py BENCH_OUT -o sheet.png [--kinds fringe,hand] [--methods initial,facerefiner-vgg16]
        [--photos deca_exp_1,ffhq_00128] [--tile 256]

BENCH_OUT is the output folder of ``python benchmarks/bench.py ... --completion --probes KINDS``.
One row per photo and probe: the probe's mask over the photo, I_C (``initial``) and each method's
masked-run texture, and the truth (the unmasked unwrap's sampled texture), cropped to the
bounding box in UV space of the texels the mask hid (the texels around them dimmed), each with its
PSNR and detail ratio there (:func:`bench.probe_sheet`). Enlarged tiles use whole
factors and nearest neighbour, so that brows, eyelids and pores are seen at the texture's own
resolution. Exit status: 0 written, 1 input error (one line), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from bench import METHODS, probe_sheet
    from facerefiner.errors import FaceRefinerError
    from facerefiner.metrics import PROBE_KINDS

    p = argparse.ArgumentParser(prog="benchmarks/probe_sheet.py", description=__doc__.splitlines()[0])
    p.add_argument("bench", type=Path, help="the benchmark's output folder (with results.json)")
    p.add_argument("-o", "--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--kinds", help="comma-separated probes (default: every probe of the run), from: "
                                   + ", ".join(PROBE_KINDS))
    p.add_argument("--methods", help="comma-separated methods (default: every method of the run but sampled)")
    p.add_argument("--photos", help="comma-separated photo names (default: all)")
    p.add_argument("--tile", type=int, default=256, help="tile side in px (default 256)")
    a = p.parse_args(argv)

    def items(v: str | None) -> list[str]:
        return [x.strip() for x in v.split(",") if x.strip()] if v else []

    kinds, methods = items(a.kinds), items(a.methods)
    if bad := [k for k in kinds if k not in PROBE_KINDS]:
        p.error(f"--kinds: unknown probe(s) {', '.join(map(repr, bad))}; choose from {', '.join(PROBE_KINDS)}")
    if bad := [m for m in methods if m not in METHODS]:
        p.error(f"--methods: unknown method(s) {', '.join(map(repr, bad))}; choose from {', '.join(METHODS)}")
    if not 32 <= a.tile <= 1024:
        p.error(f"--tile must be between 32 and 1024, got {a.tile}")
    try:
        img = probe_sheet(a.bench, kinds or None, methods or None, items(a.photos) or None, tile=a.tile)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        img.save(a.out, format="PNG", optimize=True)
    except FaceRefinerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {a.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"wrote {a.out} ({img.width}x{img.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
