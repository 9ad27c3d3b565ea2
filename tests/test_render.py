"""Tests of facerefiner.render: hand-computed values on analytic meshes, batching, dtypes, typed
errors, gradients (kornia style)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerefiner.errors import ShapeError
from facerefiner.render import (
    RasterCache,
    interpolate,
    prepare,
    rasterize,
    render_cached,
    sample_image,
    texture,
)

DTYPES = [torch.float32, torch.float64]

# Axis-aligned quad covering pixels x in [2, 6), y in [1, 5) of an 8x8 image, z = 0.
QUAD_POS = [[2.0, 1.0, 0.0], [6.0, 1.0, 0.0], [6.0, 5.0, 0.0], [2.0, 5.0, 0.0]]
QUAD_TRI = [[0, 1, 2], [0, 2, 3]]
QUAD_UV = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def quad(dtype=torch.float64):
    return torch.tensor(QUAD_POS, dtype=dtype), torch.tensor(QUAD_TRI)


def pixel_centres(h, w, dtype=torch.float64):
    """(H, W, 2) pixel-centre coordinates [x, y]."""
    i, j = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return torch.stack([j + 0.5, i + 0.5], dim=-1)


def reference_rasterize(pos, tri, h, w, perspective=False):
    """Brute force in float64 numpy: closed triangles, nearest z, ties to the higher id."""
    p = pos.detach().double().numpy()
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    out = np.zeros((h, w, 4))
    zbuf = np.full((h, w), np.inf)
    for f, (a, b, c) in enumerate(tri.tolist()):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = p[a], p[b], p[c]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0:
            continue
        w0 = ((x2 - x1) * (ii - y1) - (y2 - y1) * (jj - x1)) / area
        w1 = ((x0 - x2) * (ii - y2) - (y0 - y2) * (jj - x2)) / area
        w2 = ((x1 - x0) * (ii - y0) - (y1 - y0) * (jj - x0)) / area
        m = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if perspective:
            z = 1.0 / (w0 / z0 + w1 / z1 + w2 / z2)
            b1, b2 = w1 / z1 * z, w2 / z2 * z
        else:
            z, b1, b2 = w0 * z0 + w1 * z1 + w2 * z2, w1, w2
        m &= z <= zbuf
        zbuf[m] = z[m]
        out[m] = np.stack([b1, b2, z, np.full_like(z, f + 1)], -1)[m]
    return torch.from_numpy(out)


def grid_mesh(nx, ny, x0, y0, x1, y1, jitter=0.0, seed=0):
    """Triangulated grid over [x0, x1] x [y0, y1] (interior vertices jittered by up to `jitter`
    cells), random diagonals. Returns pos (V, 3) float64 with z = 1, tri (F, 3)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.linspace(x0, x1, nx + 1, dtype=torch.float64), torch.linspace(y0, y1, ny + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    xy = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    interior = (xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)
    cell = torch.tensor([(x1 - x0) / nx, (y1 - y0) / ny], dtype=torch.float64)
    d = (torch.rand(xy.shape, generator=g, dtype=torch.float64) - 0.5) * 2 * jitter * cell
    xy = xy + d * interior.reshape(-1, 1)
    idx = torch.arange((nx + 1) * (ny + 1)).view(ny + 1, nx + 1)
    a, b, c, e = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    flip = (torch.rand(a.shape, generator=g) > 0.5)[..., None]
    t1 = torch.where(flip, torch.stack([a, b, c], -1), torch.stack([a, b, e], -1)).reshape(-1, 3)
    t2 = torch.where(flip, torch.stack([a, c, e], -1), torch.stack([b, c, e], -1)).reshape(-1, 3)
    pos = torch.cat([xy, torch.ones(xy.shape[0], 1, dtype=torch.float64)], 1)
    return pos, torch.cat([t1, t2])


# ------------------------------------------------------------------------------------------------
# rasterize
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_quad_coverage_and_ids(dtype):
    pos, tri = quad(dtype)
    rast = rasterize(pos, tri, (8, 8))
    assert rast.shape == (1, 8, 8, 4) and rast.dtype == dtype and rast.device == pos.device
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:5, 2:6] = True
    assert torch.equal(rast[0, ..., 3] > 0, expected)
    # Background is all zero.
    assert torch.all(rast[0][~expected] == 0)
    # The diagonal from (2, 1) to (6, 5) passes through the centres (j + .5, j - .5): both
    # triangles cover them, the higher id (2) wins; above the diagonal triangle 1, below 2.
    ids = rast[0, ..., 3]
    for i in range(1, 5):
        for j in range(2, 6):
            want = 1.0 if (j + 0.5) - (i + 0.5) > 1 else 2.0
            assert ids[i, j] == want, (i, j)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quad_barycentrics_hand_computed(dtype):
    pos, tri = quad(dtype)
    pos[:, 2] = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=dtype)
    rast = rasterize(pos, tri, (8, 8))
    # Pixel (row 1, col 5), centre (5.5, 1.5), in triangle 0 = (2,1), (6,1), (6,5):
    # (5.5, 1.5) = (2,1) + b1 (4,0) + b2 (4,4) -> b2 = 1/8, b1 = 3/4; z = 1/8*1 + 3/4*2 + 1/8*3.
    expected = torch.tensor([0.75, 0.125, 0.125 + 1.5 + 0.375, 1.0], dtype=dtype)
    torch.testing.assert_close(rast[0, 1, 5], expected)
    # Pixel (row 4, col 2), centre (2.5, 4.5), in triangle 1 = (2,1), (6,5), (2,5):
    # (2.5, 4.5) = (2,1) + b1 (4,4) + b2 (0,4) -> b1 = 1/8, b2 = 3/4; z = 1/8*1 + 1/8*3 + 3/4*4.
    expected = torch.tensor([0.125, 0.75, 0.125 + 0.375 + 3.0, 2.0], dtype=dtype)
    torch.testing.assert_close(rast[0, 4, 2], expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quad_interpolate_exact_at_pixel_centres(dtype):
    pos, tri = quad(dtype)
    rast = rasterize(pos, tri, (8, 8))
    xy = interpolate(pos[:, :2], rast, tri)
    assert xy.shape == (1, 8, 8, 2) and xy.dtype == dtype
    mask = rast[0, ..., 3] > 0
    centres = pixel_centres(8, 8, dtype)
    torch.testing.assert_close(xy[0][mask], centres[mask], rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
    assert torch.all(xy[0][~mask] == 0)


def test_closed_rule_includes_centres_on_edges():
    # Right triangle with its vertices on pixel centres: every centre with i + j <= 4 is covered,
    # including the 5 on the hypotenuse and those on the two legs.
    pos = torch.tensor([[0.5, 0.5, 0.0], [4.5, 0.5, 0.0], [0.5, 4.5, 0.0]], dtype=torch.float64)
    for t in ([0, 1, 2], [0, 2, 1]):  # both windings
        rast = rasterize(pos, torch.tensor([t]), (6, 6))
        i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
        assert torch.equal(rast[0, ..., 3] > 0, i + j <= 4)
        assert int((rast[0, ..., 3] > 0).sum()) == 15


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("jitter", [0.0, 0.35])
def test_no_cracks_in_a_tessellated_rectangle(seed, jitter):
    # A jittered grid mesh tiling [3.2, 60.7] x [2.9, 41.3]: every pixel centre inside the rectangle
    # is covered (no cracks along shared edges), none outside. jitter=0 with cell sizes that put
    # many centres exactly on the edges.
    x0, y0, x1, y1 = (3.2, 2.9, 60.7, 41.3) if jitter else (2.5, 1.5, 62.5, 41.5)
    pos, tri = grid_mesh(15, 10, x0, y0, x1, y1, jitter=jitter, seed=seed)
    for dtype in DTYPES:
        rast = rasterize(pos.to(dtype), tri, (48, 64))
        c = pixel_centres(48, 64)
        inside = (c[..., 0] >= x0) & (c[..., 0] <= x1) & (c[..., 1] >= y0) & (c[..., 1] <= y1)
        assert torch.equal(rast[0, ..., 3] > 0, inside)


def test_no_cracks_across_duplicated_seam_vertices():
    # The two halves share an edge geometrically but through different vertex indices (a UV
    # seam): coverage is still watertight.
    pos, tri = grid_mesh(9, 7, 0.3, 0.7, 30.1, 22.9, jitter=0.4, seed=5)
    col = pos[:, 0].view(8, 10)[:, 5].clone()  # the seam: vertex column 5
    n = pos.shape[0]
    seam = torch.arange(n).view(8, 10)[:, 5]
    pos2 = torch.cat([pos, pos[seam]])
    remap = torch.arange(n)
    remap[seam] = n + torch.arange(seam.numel())
    right = pos[tri].mean(1)[:, 0] > col.mean()  # triangles right of the seam use the copies
    tri2 = torch.where(right[:, None], remap[tri], tri)
    a = rasterize(pos2, tri2, (24, 32))
    b = rasterize(pos, tri, (24, 32))
    assert torch.equal(a[..., 3] > 0, b[..., 3] > 0)
    c = pixel_centres(24, 32)
    inside = (c[..., 0] >= 0.3) & (c[..., 0] <= 30.1) & (c[..., 1] >= 0.7) & (c[..., 1] <= 22.9)
    assert torch.equal(a[0, ..., 3] > 0, inside)


@pytest.mark.parametrize("dtype", DTYPES)
def test_depth_test_nearest_wins_in_either_order(dtype):
    big = [[0.0, 0.0, 2.0], [8.0, 0.0, 2.0], [0.0, 8.0, 2.0]]  # far
    small = [[1.0, 1.0, 1.0], [5.0, 1.0, 1.0], [1.0, 5.0, 1.0]]  # near, inside the big one
    for order in (0, 1):
        pos = torch.tensor(big + small if order == 0 else small + big, dtype=dtype)
        tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
        rast = rasterize(pos, tri, (8, 8))[0]
        near_id, far_id = (2.0, 1.0) if order == 0 else (1.0, 2.0)
        c = pixel_centres(8, 8)
        in_small = (c[..., 0] > 1) & (c[..., 1] > 1) & (c[..., 0] + c[..., 1] <= 6)
        in_big = c[..., 0] + c[..., 1] <= 8  # closed: centres on the hypotenuse count
        assert torch.all(rast[..., 3][in_small] == near_id)
        assert torch.all(rast[..., 2][in_small] == 1.0)
        assert torch.all(rast[..., 3][in_big & ~in_small] == far_id)
        assert torch.all(rast[..., 2][in_big & ~in_small] == 2.0)


def test_depth_ties_go_to_the_higher_triangle_id():
    pos = torch.tensor([[0.0, 0.0, 1.0], [8.0, 0.0, 1.0], [0.0, 8.0, 1.0]])
    tri = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 2]])
    rast = rasterize(pos, tri, (8, 8))
    covered = rast[0, ..., 3] > 0
    assert covered.any() and torch.all(rast[0, ..., 3][covered] == 3.0)
    # Also when the triangles are processed in separate chunks.
    assert torch.equal(rasterize(pos, tri, (8, 8), chunk_pairs=4), rast)
    # A nearer triangle before or after the tied pair (in an earlier or a later chunk) wins.
    pos2 = torch.cat([pos, torch.tensor([[0.0, 0.0, 0.5], [8.0, 0.0, 0.5], [0.0, 8.0, 0.5]])])
    for tri2, want in ([[3, 4, 5], [0, 1, 2], [0, 2, 1]], 1.0), ([[0, 1, 2], [0, 2, 1], [3, 4, 5]], 3.0):
        for chunk in (4, 1 << 22):
            r = rasterize(pos2, torch.tensor(tri2), (8, 8), chunk_pairs=chunk)
            assert torch.all(r[0, ..., 3][covered] == want) and torch.all(r[0, ..., 2][covered] == 0.5)


def test_perspective_correct_interpolation_on_tilted_quad():
    # Camera-space quad on the plane Z = 3 + X (tilted about the Y axis), X, Y in [-1, 1]; pinhole
    # f = 20, principal point (16, 16), 32x32 image.
    f, cx, cy = 20.0, 16.0, 16.0
    cam = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    Z = 3.0 + cam[:, 0]
    pos = torch.stack([f * cam[:, 0] / Z + cx, f * cam[:, 1] / Z + cy, Z], 1)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = rasterize(pos, tri, (32, 32), perspective=True)
    mask = rast[0, ..., 3] > 0
    assert int(mask.sum()) > 100
    # Analytic: the ray through (x, y) is (X, Y, Z) = Z * ((x - cx) / f, (y - cy) / f, 1); on the
    # plane Z = 3 + X -> Z = 3 / (1 - (x - cx) / f).
    c = pixel_centres(32, 32)
    Zr = 3.0 / (1.0 - (c[..., 0] - cx) / f)
    Xr, Yr = Zr * (c[..., 0] - cx) / f, Zr * (c[..., 1] - cy) / f
    torch.testing.assert_close(rast[0, ..., 2][mask], Zr[mask], rtol=0, atol=1e-12)
    attr = torch.cat([cam, Z[:, None]], 1)  # [X, Y, Z] per vertex
    got = interpolate(attr, rast, tri)[0][mask]
    torch.testing.assert_close(got, torch.stack([Xr, Yr, Zr], -1)[mask], rtol=0, atol=1e-12)
    # Screen-space (affine) interpolation is measurably different on this quad.
    affine = interpolate(attr, rasterize(pos, tri, (32, 32)), tri)[0][mask]
    assert (affine[:, 0] - Xr[mask]).abs().max() > 0.05


def cube(rot):
    """Unit cube centred at 0 (12 outward-wound triangles), rotated by rot (3x3)."""
    v = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=torch.float64)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    tri = []
    for a, b, c, d in quads:
        tri += [[a, b, c], [a, c, d]]
    tri = torch.tensor(tri)
    v = v @ rot.T
    normals = torch.linalg.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    centre_dir = v[tri].mean(1)  # outward = pointing away from the centre
    normals = normals * torch.sign((normals * centre_dir).sum(1, keepdim=True))
    return v, tri, normals


def rotation(ax, ay):
    ca, sa, cb, sb = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    rx = torch.tensor([[1, 0, 0], [0, ca, -sa], [0, sa, ca]], dtype=torch.float64)
    ry = torch.tensor([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]], dtype=torch.float64)
    return ry @ rx


def test_cube_axis_aligned_shows_the_front_face_exactly():
    v, tri, normals = cube(torch.eye(3, dtype=torch.float64))
    s, c = 40.0, 32.0  # orthographic: x = 40 X + 32, y = 40 Y + 32, z = Z (view along +Z)
    pos = torch.cat([v[:, :2] * s + c, v[:, 2:]], 1)
    rast = rasterize(pos, tri, (64, 64))
    mask = rast[0, ..., 3] > 0
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[12:52, 12:52] = True
    assert torch.equal(mask, expected)
    ids = torch.unique(rast[0, ..., 3][mask]).long() - 1
    assert torch.all(normals[ids, 2] < 0)  # only the face towards the camera (-Z)
    assert torch.all(rast[0, ..., 2][mask] == -0.5)


@pytest.mark.parametrize("angles", [(0.5, 0.7), (-0.3, 2.2), (1.1, -0.4)])
def test_cube_rotated_only_front_faces_and_projected_area(angles):
    rot = rotation(*angles)
    v, tri, normals = cube(rot)
    s, c, res = 150.0, 128.0, 256
    pos = torch.cat([v[:, :2] * s + c, v[:, 2:]], 1)
    rast = rasterize(pos, tri, (res, res))
    mask = rast[0, ..., 3] > 0
    ids = torch.unique(rast[0, ..., 3][mask]).long() - 1
    assert torch.all(normals[ids, 2] < 0)  # back faces never win the depth test
    assert ids.numel() == 6  # three faces, two triangles each, for these views
    # Orthographic projected area of a unit cube along the view axis e_z: |r_z| summed over the
    # three face normals = sum_k |R[2, k]|, in pixel units s^2.
    area = float(rot[2].abs().sum()) * s * s
    assert abs(int(mask.sum()) - area) / area < 0.01
    # Depth: the visible surface is the nearest one along each pixel ray.
    torch.testing.assert_close(rast[0, ..., 2][mask], reference_rasterize(pos, tri, res, res)[..., 2][mask])


@pytest.mark.parametrize("perspective", [False, True])
def test_matches_brute_force_reference_on_random_triangles(perspective):
    g = torch.Generator().manual_seed(1)
    for trial in range(8):
        h, w = 23, 31
        pos = torch.rand(30, 3, generator=g, dtype=torch.float64) * torch.tensor([w + 10.0, h + 10.0, 1.0])
        pos = pos - torch.tensor([5.0, 5.0, -1.0], dtype=torch.float64)
        tri = torch.randint(0, 30, (40, 3), generator=g)
        got = rasterize(pos, tri, (h, w), perspective=perspective)[0]
        want = reference_rasterize(pos, tri, h, w, perspective)
        assert torch.equal(got[..., 3] > 0, want[..., 3] > 0), trial
        # Where two triangles meet (shared random vertices) their depths tie up to rounding, and
        # either may win; everywhere else the same triangle wins with the same values.
        same = got[..., 3] == want[..., 3]
        torch.testing.assert_close(got[~same][:, 2], want[~same][:, 2], rtol=0, atol=1e-12)
        assert int((~same).sum()) <= 5, trial
        torch.testing.assert_close(got[same], want[same], rtol=0, atol=1e-9)


def test_chunking_does_not_change_the_result():
    pos, tri = grid_mesh(12, 9, -3.3, 2.1, 70.2, 50.7, jitter=0.4, seed=2)
    pos[:, 2] = torch.rand(pos.shape[0], dtype=torch.float64) + 1.0
    a = rasterize(pos, tri, (48, 64))
    for chunk in (5, 17, 500):
        assert torch.equal(rasterize(pos, tri, (48, 64), chunk_pairs=chunk), a)


def test_degenerate_outside_and_invalid_triangles_are_skipped():
    pos = torch.tensor(
        [
            [1.0, 1.0, 1.0], [5.0, 5.0, 1.0], [3.0, 3.0, 1.0],  # collinear: zero area
            [-9.0, 1.0, 1.0], [-5.0, 1.0, 1.0], [-7.0, 6.0, 1.0],  # left of the image
            [1.0, 10.0, 1.0], [7.0, 10.0, 1.0], [4.0, 20.0, 1.0],  # below the image
            [1.0, 1.0, float("nan")], [7.0, 1.0, 1.0], [1.0, 7.0, 1.0],  # non-finite
            [1.0, 1.0, -1.0], [7.0, 1.0, 1.0], [1.0, 7.0, 1.0],  # behind the camera (perspective)
        ],
        dtype=torch.float64,
    )
    tri = torch.arange(15).view(5, 3)
    rast = rasterize(pos[:12], tri[:4], (8, 8))
    assert torch.all(rast == 0)
    assert torch.all(rasterize(pos, tri, (8, 8), perspective=True) == 0)
    # ...but the last one is drawn without perspective.
    assert (rasterize(pos, tri, (8, 8))[..., 3] == 5).any()
    # No triangles at all.
    assert torch.all(rasterize(pos, tri[:0], (8, 8)) == 0)


def test_partially_outside_triangle_is_clipped_per_pixel():
    pos = torch.tensor([[-10.0, -10.0, 0.0], [30.0, -10.0, 0.0], [-10.0, 30.0, 0.0]], dtype=torch.float64)
    rast = rasterize(pos, torch.tensor([[0, 1, 2]]), (8, 8))
    assert torch.all(rast[0, ..., 3] == 1)  # x + y <= 20 for the whole 8x8 image
    xy = interpolate(pos[:, :2], rast, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(xy[0], pixel_centres(8, 8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_equals_per_item(dtype):
    g = torch.Generator().manual_seed(3)
    pos, tri = grid_mesh(8, 6, 1.3, 2.2, 28.9, 20.1, jitter=0.3, seed=3)
    batch = torch.stack([pos, pos * torch.tensor([0.7, 1.1, 1.0], dtype=torch.float64) + 2.0, pos.flip(0)]).to(dtype)
    batch[..., 2] = torch.rand(batch.shape[:2], generator=g, dtype=torch.float64).to(dtype) + 1
    rast = rasterize(batch, tri, (24, 32))
    attr = torch.rand(3, pos.shape[0], 5, generator=g, dtype=torch.float64).to(dtype)
    att = interpolate(attr, rast, tri)
    for b in range(3):
        rb = rasterize(batch[b], tri, (24, 32))
        assert torch.equal(rast[b : b + 1], rb)
        torch.testing.assert_close(att[b : b + 1], interpolate(attr[b], rb, tri))
    # A (V, C) attribute broadcasts over the batch.
    torch.testing.assert_close(interpolate(attr[0], rast, tri), interpolate(attr[:1].expand(3, -1, -1), rast, tri))


def test_int32_indices_and_float32_dtype():
    pos, tri = quad(torch.float32)
    a = rasterize(pos, tri.int(), (8, 8))
    assert a.dtype == torch.float32
    assert torch.equal(a, rasterize(pos, tri, (8, 8)))
    assert interpolate(pos.double(), a, tri.int()).dtype == torch.float64


def test_rasterize_is_constant_for_autograd():
    pos, tri = quad()
    pos.requires_grad_(True)
    rast = rasterize(pos, tri, (8, 8))
    assert not rast.requires_grad


# ------------------------------------------------------------------------------------------------
# texture, render_cached, sample_image
# ------------------------------------------------------------------------------------------------


def textured_quad(dtype=torch.float64, channels=3, seed=0):
    pos, tri = quad(dtype)
    uv = torch.tensor(QUAD_UV, dtype=dtype)
    tex = torch.rand(1, channels, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    return pos, tri, uv, tex


@pytest.mark.parametrize("dtype", DTYPES)
def test_textured_quad_reproduces_aligned_texture(dtype):
    # Quad on pixels [2, 6) x [1, 5), uv (0,0)..(1,1), a 4x4 texture: texel centres fall on pixel
    # centres, so the render is the texture itself.
    pos, tri, uv, tex = textured_quad(dtype)
    rast = rasterize(pos, tri, (8, 8))
    uvp = interpolate(uv, rast, tri)
    img = texture(tex, uvp, mask=rast[..., 3] > 0)
    assert img.shape == (1, 3, 8, 8) and img.dtype == dtype
    tol = dict(rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(img[:, :, 1:5, 2:6], tex, **tol)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:5, 2:6] = False
    assert torch.all(img[0][:, outside] == 0)
    cache = prepare(rast, tri, uv)
    assert isinstance(cache, RasterCache) and cache.index.shape == (1, 16)
    torch.testing.assert_close(render_cached(tex, cache), img, rtol=0, atol=0)
    # Unbatched texture and a background colour.
    bg = torch.tensor([0.25, 0.5, 0.75], dtype=dtype).view(3, 1, 1)
    withbg = render_cached(tex[0], cache, background=bg)
    torch.testing.assert_close(withbg[:, :, 1:5, 2:6], tex, **tol)
    assert torch.all(withbg[0][:, outside] == bg.view(3, 1))


def test_texture_hand_computed_bilinear():
    tex = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]], dtype=torch.float64)  # (1, 2, 2)
    uv = torch.tensor([[[[0.5, 0.5], [0.25, 0.25], [0.5, 0.25], [0.0, 1.0], [-3.0, 0.75]]]], dtype=torch.float64)
    out = texture(tex, uv)
    # centre: mean 1.5; texel (0,0) centre: 0; between texels (0,0) and (0,1): 0.5; bottom-left
    # corner clamps to texel (1,0): 2; far left clamps to column 0 at row 1's centre: 2.
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([1.5, 0.0, 0.5, 2.0, 2.0], dtype=torch.float64))


def test_texture_mask_forms_and_batch_broadcast():
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64)
    uv = torch.rand(3, 4, 7, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 4, 7, generator=g) > 0.5
    full = texture(tex, uv)
    a = texture(tex, uv, mask)
    torch.testing.assert_close(a, full * mask[:, None])
    torch.testing.assert_close(texture(tex, uv, mask[:, None].double()), a)
    for b in range(3):
        torch.testing.assert_close(texture(tex[0], uv[b : b + 1]), full[b : b + 1])
    texb = torch.rand(3, 2, 5, 6, generator=g, dtype=torch.float64)
    fb = texture(texb, uv)
    for b in range(3):
        torch.testing.assert_close(fb[b : b + 1], texture(texb[b], uv[b : b + 1]))


def test_render_cached_equals_texture_path_batched():
    g = torch.Generator().manual_seed(4)
    pos, tri = grid_mesh(8, 6, 1.3, 2.2, 28.9, 20.1, jitter=0.3, seed=4)
    uv = (pos[:, :2] - pos[:, :2].amin(0)) / (pos[:, :2].amax(0) - pos[:, :2].amin(0))
    # Different coverage per item -> the cache is padded.
    batch = torch.stack([pos, pos * torch.tensor([0.5, 0.7, 1.0], dtype=torch.float64) + 3.0]).float()
    rast = rasterize(batch, tri, (24, 32))
    uvf = uv.float()
    cache = prepare(rast, tri, uvf)
    assert cache.padded and cache.index.shape[0] == 2
    mask = rast[..., 3] > 0
    for tex in (torch.rand(1, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)):
        want = texture(tex, interpolate(uvf, rast, tri), mask=mask)
        got = render_cached(tex, cache)
        assert got.shape == (2, 3, 24, 32) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # background image
    bgimg = torch.rand(2, 3, 24, 32, generator=g)
    got = render_cached(tex, cache, background=bgimg)
    torch.testing.assert_close(got, torch.where(mask[:, None], want, bgimg))


def test_visible_pixels():
    from facerefiner.render import visible_pixels

    pos, tri = grid_mesh(8, 6, 1.3, 2.2, 28.9, 20.1, jitter=0.3, seed=4)
    uv = ((pos[:, :2] - pos[:, :2].amin(0)) / (pos[:, :2].amax(0) - pos[:, :2].amin(0))).float()
    rast = rasterize(pos.float(), tri, (24, 32))
    cache = prepare(rast, tri, uv)
    covered = (rast[..., 3] > 0)[:, None]
    assert torch.equal(visible_pixels(torch.ones(16, 16, dtype=torch.bool), cache), covered)
    assert not visible_pixels(torch.zeros(16, 16, dtype=torch.bool), cache).any()
    half = torch.zeros(16, 16, dtype=torch.bool)
    half[:, :8] = True  # texels with u < 0.5: bilinear lookups are fully inside up to u = 7.5 / 16
    got = visible_pixels(half, cache)
    u = interpolate(uv, rast, tri)[..., 0][:, None]
    assert got.shape == covered.shape and got.dtype == torch.bool
    assert not torch.any(got & (u > 7.5 / 16 + 1e-6))  # a lookup touching texel 8 is not fully visible
    inside = covered & (u <= 7.0 / 16)  # lookups between texels 6 and 7 (or clamped at 0)
    assert torch.equal(got & inside, inside)
    assert got.any() and (covered & ~got).any()


def test_render_cached_with_nothing_covered():
    pos = torch.tensor([[20.0, 1.0, 0.0], [26.0, 1.0, 0.0], [26.0, 5.0, 0.0]])
    tri = torch.tensor([[0, 1, 2]])
    for nb in (1, 2):
        rast = rasterize(pos.expand(nb, -1, -1), tri, (8, 8))
        cache = prepare(rast, tri, torch.rand(3, 2))
        assert cache.index.shape == (nb, 0)
        img = render_cached(torch.rand(3, 4, 4), cache, background=torch.ones(3, 1, 1))
        assert img.shape == (nb, 3, 8, 8) and torch.all(img == 1)


def _tiny_case():
    g = torch.Generator().manual_seed(7)
    pos = torch.tensor([[0.3, 0.2, 1.0], [5.7, 0.9, 1.0], [4.9, 5.8, 1.0], [0.1, 4.6, 1.0]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.05, 0.1], [0.9, 0.0], [1.0, 0.95], [0.0, 0.8]], dtype=torch.float64)
    rast = rasterize(pos, tri, (6, 6))
    tex = torch.rand(1, 2, 3, 4, generator=g, dtype=torch.float64)
    return rast, tri, uv, tex


def test_gradcheck_texture_and_render_cached():
    rast, tri, uv, tex = _tiny_case()
    uvp = interpolate(uv, rast, tri)
    mask = rast[..., 3] > 0
    tex.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: texture(t, uvp, mask), (tex,))
    cache = prepare(rast, tri, uv)
    assert torch.autograd.gradcheck(lambda t: render_cached(t, cache), (tex,))
    bg = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, b: render_cached(t, cache, background=b), (tex, bg))
    attr = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, rast, tri), (attr,))
    img = torch.rand(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
    xy = torch.rand(1, 9, 2, dtype=torch.float64) * torch.tensor([7.0, 5.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda i: sample_image(i, xy), (img,))


def test_render_gradient_matches_finite_differences():
    rast, tri, uv, tex = _tiny_case()
    cache = prepare(rast, tri, uv)
    weights = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def loss(t):
        return (render_cached(t, cache) * weights).sum()

    t = tex.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(t), t)
    eps = 1e-6
    fd = torch.zeros_like(tex)
    for k in range(tex.numel()):
        d = torch.zeros_like(tex).view(-1)
        d[k] = eps
        d = d.view_as(tex)
        fd.view(-1)[k] = (loss(tex + d) - loss(tex - d)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    assert grad.abs().sum() > 0


def test_sample_image_pixel_convention():
    img = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)  # value = 4 i + j
    xy = torch.tensor([[[0.5, 0.5], [3.5, 2.5], [1.0, 0.5], [2.5, 1.0], [2.0, 2.0]]], dtype=torch.float64)
    out = sample_image(img, xy)
    assert out.shape == (1, 1, 5)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 11.0, 0.5, 4.0, 7.5], dtype=torch.float64))
    # Sampling at all pixel centres reproduces the image, (B, Hs, Ws, 2) form.
    img2 = torch.rand(2, 3, 3, 4, dtype=torch.float64)
    grid = pixel_centres(3, 4).expand(2, -1, -1, -1)
    torch.testing.assert_close(sample_image(img2, grid), img2)
    assert sample_image(img2.float(), grid).dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# typed errors
# ------------------------------------------------------------------------------------------------


def test_errors_name_expected_and_actual_shapes():
    pos, tri = quad()
    with pytest.raises(ShapeError, match=r"pos: expected shape \['V', '3'\] or \['B', 'V', '3'\], got \[4, 2\]"):
        rasterize(pos[:, :2], tri, (8, 8))
    with pytest.raises(ShapeError, match=r"tri: expected shape \['F', '3'\], got \[2, 4\]"):
        rasterize(pos, torch.zeros(2, 4, dtype=torch.int64), (8, 8))
    with pytest.raises(ShapeError, match="tri: expected dtype int64 or int32"):
        rasterize(pos, tri.float(), (8, 8))
    with pytest.raises(ShapeError, match=r"tri: vertex indices must lie in \[0, 4\)"):
        rasterize(pos, tri + 2, (8, 8))
    with pytest.raises(ShapeError, match="pos: expected a floating-point tensor"):
        rasterize(pos.long(), tri, (8, 8))
    with pytest.raises(ShapeError, match="resolution"):
        rasterize(pos, tri, (8, 0))
    rast = rasterize(pos, tri, (8, 8))
    with pytest.raises(ShapeError, match=r"rast: expected shape \['B', 'H', 'W', '4'\], got \[8, 8, 4\]"):
        interpolate(pos, rast[0], tri)
    with pytest.raises(ShapeError, match=r"attr: expected shape \[1, 'V', 'C'\] or \['V', 'C'\], got \[2, 4, 3\]"):
        interpolate(pos.expand(2, -1, -1), rast, tri)
    with pytest.raises(ShapeError, match=r"attr: .*got \[4\]"):
        interpolate(pos[:, 0], rast, tri)
    uv = torch.rand(1, 8, 8, 2)
    with pytest.raises(ShapeError, match=r"uv: expected shape \['B', 'H', 'W', '2'\], got \[1, 8, 8, 3\]"):
        texture(torch.rand(3, 4, 4), torch.rand(1, 8, 8, 3))
    with pytest.raises(ShapeError, match=r"tex: expected shape .*got \[4, 4\]"):
        texture(torch.rand(4, 4), uv)
    with pytest.raises(ShapeError, match=r"tex: expected shape \[1, 'C', 'Ht', 'Wt'\] or \['C', 'Ht', 'Wt'\], got \[2, 3, 4, 4\]"):
        texture(torch.rand(2, 3, 4, 4), uv)
    with pytest.raises(ShapeError, match=r"mask: expected shape \['1', '8', '8'\] or \['1', '1', '8', '8'\], got \[1, 7, 8\]"):
        texture(torch.rand(3, 4, 4), uv, mask=torch.ones(1, 7, 8, dtype=torch.bool))
    with pytest.raises(ShapeError, match=r"xy: expected shape \['1', 'N', '2'\] or \['1', 'Hs', 'Ws', '2'\], got \[2, 5, 2\]"):
        sample_image(torch.rand(1, 3, 4, 4), torch.rand(2, 5, 2))
    with pytest.raises(ShapeError, match=r"uv_per_vertex: expected shape \['B', 'V', '2'\], got \[1, 4, 3\]"):
        prepare(rast, tri, torch.rand(4, 3))
    cache = prepare(rast, tri, torch.rand(4, 2))
    with pytest.raises(ShapeError, match=r"background: expected a shape broadcastable to \[1, 3, 8, 8\], got \[2, 8, 8\]"):
        render_cached(torch.rand(3, 4, 4), cache, background=torch.rand(2, 8, 8))
