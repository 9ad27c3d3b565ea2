"""Time one forward + backward of the feature extractors at the refiner's sizes.

    python benchmarks/bench_features.py [--sizes 256 512] [--n 2048] [--repeats 5] [--warmup 4] [--weights PATH]
                                        [--threads N] [--channels-last]

For each extractor (vgg16 with the paper's 9 hypercolumn layers, when weights resolve; patches) and
each size: a random (1, 3, S, S) image requiring grad, hypercolumns at ``--n`` random positions,
``loss = hypercolumns.square().mean()``, backward to the image. Prints the median and minimum
wall time of forward+backward and of the forward alone (no grad); on a shared machine the minimum
is the better estimate of the uncontended cost. VGG16 weights: ``--weights``, else
``FACEREFINER_VGG16``, the torch hub cache, else ../shared/models/vgg16_imagenet_caffe_conv.pth
(timing does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from facerefiner import features as FE
from facerefiner.errors import WeightsError

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared" / "models" / "vgg16_imagenet_caffe_conv.pth"


def _time(fn, repeats: int, warmup: int) -> tuple[float, float]:
    """(median, min) wall seconds over ``repeats`` calls after ``warmup`` calls. The first calls
    are slow (first touch of freshly mapped memory: the allocator returns the large activation
    buffers to the OS until its mmap threshold adapts; on this VM page faults are expensive), so
    steady state -- what the refiner sees over hundreds of steps -- needs a few warm-up calls. On a
    shared machine the minimum is the better estimate of the uncontended cost."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--n", type=int, default=2048, help="sampled positions")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--channels-last", action="store_true", help="feed VGG16 a channels_last image")
    ap.add_argument("--skip-vgg", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    extractors = []
    if not args.skip_vgg:
        try:
            path = FE.resolve_vgg16_weights(args.weights, download=False)
        except WeightsError:
            path = SHARED_VGG if SHARED_VGG.is_file() else None
        if path is None:
            print("vgg16: no weights (pass --weights); skipped")
        else:
            ext, info = FE.get_extractor("vgg16", weights=path, download=False)
            extractors.append((f"vgg16 ({info['convention']}, {ext.channels} ch)", ext))
    pe, _ = FE.get_extractor("patches")
    extractors.append((f"patches ({pe.channels} ch)", pe))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N={args.n} positions, "
          f"{args.warmup} warm-up calls, median/min of {args.repeats}")
    for name, ext in extractors:
        for s in args.sizes:
            img = torch.rand(1, 3, s, s)
            if args.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            img.requires_grad_(True)
            pos = torch.rand(args.n, 2)

            def fwd_bwd():
                img.grad = None
                h = ext.features(img, pos)
                h.square().mean().backward()

            def fwd():
                with torch.no_grad():
                    ext.features(img, pos)

            t_fb, m_fb = _time(fwd_bwd, args.repeats, args.warmup)
            t_f, m_f = _time(fwd, args.repeats, args.warmup)
            print(
                f"{name:30s} {s:4d}x{s:<4d} forward+backward median {t_fb * 1000:7.0f} ms (min {m_fb * 1000:7.0f})"
                f"   forward only median {t_f * 1000:7.0f} ms (min {m_f * 1000:7.0f})"
            )


if __name__ == "__main__":
    main()
