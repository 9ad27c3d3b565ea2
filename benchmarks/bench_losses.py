"""Time the STROTSS losses at the refiner's sizes: style_loss + content_loss, forward + backward.

    python benchmarks/bench_losses.py [--n 2048] [--m 5000] [--c 2179] [--repeats 5]

x (N, C) is the texture's hypercolumns (requires grad), y (M, C) the style samples, c (N, C) the
content hypercolumns. Prints the median wall time of each configuration and a per-term breakdown,
plus a naive reference (dense autograd through the full distance matrices) for comparison.
Reported per case: the minimum and the median wall time over the repeats and the minimum process
CPU time (all threads). On a shared machine the minimum is the best estimate of the idle cost; a
load average well above 0 at start/end means the numbers are inflated by other processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from facerefiner import losses as L


def _time(fn, repeats: int) -> tuple[float, float, float]:
    """Minimum wall time, median wall time and minimum process CPU time (all threads) of
    ``fn()``, in seconds. The minimum is the best estimate of the cost on an idle machine."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), statistics.median(walls), min(cpus)


def _naive_style_content(x, y, c, cw, sw):
    """Reference without the shortcuts: autograd through the dense min and plain matmuls."""

    def cos(a, b):
        an = a / a.norm(dim=1, keepdim=True).clamp_min(1e-8)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return 1 - an @ bn.T

    def moments(a):
        mu = a.mean(0)
        ac = a - mu
        return mu, ac.T @ ac / (a.shape[0] - 1)

    r = cos(x, y).min(1).values.mean()
    mx, cx = moments(x)
    my, cy = moments(y)
    mom = (mx - my).abs().mean() + (cx - cy).abs().mean()
    col = L.euclidean_distance_matrix(L.rgb_to_yuv(x[:, :3]), L.rgb_to_yuv(y[:, :3])).min(1).values.mean()
    style = (r + mom + col / max(cw, 1)) * sw
    dx = cos(x, x)
    dx = dx / dx.sum(0, keepdim=True)
    dc = cos(c, c)
    dc = dc / dc.sum(0, keepdim=True)
    content = (dx - dc).abs().mean() * x.shape[0]
    return style + cw * content


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--m", type=int, default=5000)
    ap.add_argument("--c", type=int, default=2179)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive reference")
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    # non-negative like ReLU activations, RGB in [0, 1]
    x0 = torch.rand(args.n, args.c, generator=g)
    y = torch.rand(args.m, args.c, generator=g)
    c = torch.rand(args.n, args.c, generator=g)
    cw, sw = 8.0, 1.7
    y_mom = L.feature_moments(y)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={args.n} M={args.m} C={args.c}, float32")
    print("load average at start: %.2f %.2f %.2f (other processes on the machine inflate wall times)" % os.getloadavg())
    print(f"{'case':45s} {'min ms':>8s} {'median':>8s} {'cpu ms':>8s}")

    def step(fn):
        def run():
            x = x0.clone().requires_grad_()
            fn(x).backward()

        return run

    cases = {
        "style_loss + content_loss (fwd+bwd)": step(lambda x: L.style_loss(x, y, cw, sw)[0] + cw * L.content_loss(x, c)),
        "  same, style moments precomputed": step(
            lambda x: L.style_loss(x, y, cw, sw, y_moments=y_mom)[0] + cw * L.content_loss(x, c)
        ),
        "  remd cosine": step(lambda x: L.remd(x, y)),
        "  moment_loss": step(lambda x: L.moment_loss(x, y)),
        "  moment_loss, y moments precomputed": step(lambda x: L.moment_loss(x, y_moments=y_mom)),
        "  color_loss": step(lambda x: L.color_loss(x[:, :3], y[:, :3])),
        "  content_loss": step(lambda x: L.content_loss(x, c)),
    }
    if not args.no_naive:
        cases["naive reference (dense autograd)"] = step(lambda x: _naive_style_content(x, y, c, cw, sw))
    with torch.no_grad():
        cases["style_loss + content_loss forward only"] = lambda: L.style_loss(x0, y, cw, sw)[0] + cw * L.content_loss(x0, c)

    for name, fn in cases.items():
        wall, med, cpu = _time(fn, args.repeats)
        print(f"{name:45s} {wall * 1000:8.1f} {med * 1000:8.1f} {cpu * 1000:8.1f}", flush=True)
    print("load average at end:   %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
