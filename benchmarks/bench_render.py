"""Timing of facerefiner.render on a random-ish 950-triangle grid mesh (CPU).

Run:  python benchmarks/bench_render.py [--threads N] [--repeat R]
Prints the median (and min) wall time of rasterize at 512x512 (mesh covering ~400x400 px) and at 2048x2048
(~1500x1500 px), of interpolate, texture and of render_cached with a 1024x1024 RGB texture.
"""

from __future__ import annotations

import argparse
import time

import torch

from facerefiner.render import interpolate, prepare, rasterize, render_cached, texture


def grid_mesh(nx: int = 25, ny: int = 19, seed: int = 0):
    """(V,2) positions in [0,1]^2 (interior vertices jittered), (F,3) triangles, (V,2) uv, (V,) z."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.meshgrid(torch.linspace(0, 1, nx + 1), torch.linspace(0, 1, ny + 1), indexing="xy")
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], 1).double()
    xy = uv.clone()
    interior = (uv > 0).all(1) & (uv < 1).all(1)
    jitter = (torch.rand(uv.shape, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([0.6 / nx, 0.6 / ny])
    xy[interior] += jitter[interior]
    z = 2.0 - ((xy - 0.5) ** 2).sum(1)  # a bump, nearer in the middle
    idx = torch.arange((nx + 1) * (ny + 1)).view(ny + 1, nx + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    flip = torch.rand(a.shape, generator=g) > 0.5  # random diagonal direction per quad
    t1 = torch.where(flip[..., None], torch.stack([a, b, c], -1), torch.stack([a, b, d], -1))
    t2 = torch.where(flip[..., None], torch.stack([a, c, d], -1), torch.stack([b, c, d], -1))
    tri = torch.cat([t1.reshape(-1, 3), t2.reshape(-1, 3)])
    return xy, tri, uv, z


def timeit(fn, repeat: int) -> str:
    """'median (min)' wall time in ms after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return f"{ts[len(ts) // 2] * 1e3:.1f} ({ts[0] * 1e3:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    xy, tri, uv, z = grid_mesh()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {tri.shape[0]} triangles")
    tex = torch.rand(1, 3, 1024, 1024)
    for res, extent in [(512, 400), (2048, 1500)]:
        off = (res - extent) / 2
        pos = torch.cat([xy * extent + off, z[:, None]], 1).float()
        t_r = timeit(lambda: rasterize(pos, tri, (res, res)), args.repeat)
        t_p = timeit(lambda: rasterize(pos, tri, (res, res), perspective=True), args.repeat)
        rast = rasterize(pos, tri, (res, res))
        covered = int((rast[..., 3] > 0).sum())
        uvf = uv.float()
        t_i = timeit(lambda: interpolate(uvf, rast, tri), args.repeat)
        uvi = interpolate(uvf, rast, tri)
        mask = rast[..., 3] > 0
        t_t = timeit(lambda: texture(tex, uvi, mask), args.repeat)
        cache = prepare(rast, tri, uvf)
        t_c = timeit(lambda: render_cached(tex, cache), args.repeat)
        texg = tex.clone().requires_grad_(True)
        t_cb = timeit(lambda: render_cached(texg, cache).sum().backward(), args.repeat)
        print(f"{res}x{res}, {covered} px covered, times in ms, median (min) of {args.repeat}:")
        print(f"  rasterize {t_r} | perspective {t_p} | interpolate uv {t_i}")
        print(f"  texture {t_t} | render_cached {t_c} | render_cached fwd+bwd {t_cb}")


if __name__ == "__main__":
    main()
