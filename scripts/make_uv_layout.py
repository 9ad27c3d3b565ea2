#!/usr/bin/env python
"""Generate the shipped UV layout ``src/facerefiner/assets/uv_layout.npz``.

Usage::

    python scripts/make_uv_layout.py [--obj ../shared/data/mediapipe/canonical_face_model.obj] [--out PATH]

Input: MediaPipe's ``canonical_face_model.obj`` (read from a path, never copied into the repository).
Only its vertex positions are used; its UVs and triangles are not. The triangles are our own
(:func:`facerefiner.topology.closed_triangles`: MediaPipe's tessellation edges turned into triangles,
eyes and mouth closed with strips).

Licence / attribution: the ``canonical`` array stored in the npz (the symmetrised canonical face
shape) is derived from MediaPipe's ``canonical_face_model.obj``, Copyright Google LLC, licensed under
the Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0); the same note is stored in the
npz metadata. The UV coordinates are computed by this script.

Method (see :func:`compute_layout`):

1. Canonical shape ``V`` (cm, y up, face toward +z), symmetrised: ``(V + R V[mirror]) / 2`` with R
   flipping x; the left-right pairing ``mirror`` is the nearest vertex to each reflected vertex.
2. Start: Tutte embedding (uniform weights) of the closed mesh with the face oval on a circle
   (arc-length spacing) - bijective by Tutte's theorem - averaged with its mirror image.
3. Free-boundary optimisation of, per triangle with Jacobian J (UV w.r.t. the 3D triangle) and
   weighted by 3D area, ``|J|^2 (1 + 1/det J^2) + lambda (det J + 1/det J)``: the symmetric
   Dirichlet energy (penalises stretch and compression, i.e. angle and scale distortion) plus an
   area term that evens out the texel density. Only one vertex of each mirror pair and the y of the
   midline vertices are variables, so the result is symmetric by construction. L-BFGS with a step
   limit that never lets a triangle flip (the energy is infinite at a flip).
4. The symmetric layout is scaled (separately in u and v) into the unit square with a margin of
   :data:`MARGIN_TEXELS` texels at 512, forehead at the top, subject's right side on the left, and
   quantised to multiples of 2**-20 so that ``u[mirror] == 1 - u`` holds exactly in float64 and
   float32. Validity (positive areas, no overlap, exact symmetry) is checked before writing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OBJ = REPO.parent / "shared" / "data" / "mediapipe" / "canonical_face_model.obj"
DEFAULT_OUT = REPO / "src" / "facerefiner" / "assets" / "uv_layout.npz"

#: Weight of the area term (lambda above); 10 keeps the 5th..95th percentile of the area ratio
#: within about 0.86..1.06 at a moderate angle distortion.
AREA_WEIGHT = 10.0
#: Empty border around the layout, in texels of a 512 x 512 texture.
MARGIN_TEXELS = 4
#: Quantisation step of the final coordinates (exact in float32 for values in [0, 1]).
QUANT = 2 ** 20

SOURCE_NOTE = ("canonical: derived (symmetrised) from MediaPipe's canonical_face_model.obj, Copyright "
               "Google LLC, Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0). uv, faces, "
               "mirror: computed by facerefiner's scripts/make_uv_layout.py from MediaPipe's face mesh "
               "topology (mediapipe FACEMESH_TESSELATION) and that shape.")


# --------------------------------------------------------------------------------------------
# input


def read_obj_vertices(path: Path) -> np.ndarray:
    """(468, 3) vertex positions of an obj (``v`` lines in order)."""
    v = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s = line.split()
            if s and s[0] == "v":
                v.append([float(x) for x in s[1:4]])
    v = np.array(v, dtype=np.float64)
    if v.shape != (468, 3):
        raise SystemExit(f"{path}: expected 468 vertices, got {len(v)}")
    return v


def symmetrize(vertices: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """``(V + R V[mirror]) / 2`` with R flipping x; midline vertices get x = 0 exactly."""
    r = np.array([-1.0, 1.0, 1.0])
    out = (vertices + vertices[mirror] * r) / 2.0
    out[mirror == np.arange(len(mirror)), 0] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# parametrisation


def reference_frames(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle: inverse of the 2x2 edge matrix [e1 e2] in an orthonormal frame of its plane,
    and its 3D area."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    e1, e2 = b - a, c - a
    n = np.cross(e1, e2)
    area = 0.5 * np.linalg.norm(n, axis=1)
    x = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    y = np.cross(n / np.linalg.norm(n, axis=1, keepdims=True), x)
    dm = np.empty((len(faces), 2, 2))
    dm[:, 0, 0] = np.sum(e1 * x, 1)
    dm[:, 0, 1] = np.sum(e2 * x, 1)
    dm[:, 1, 0] = np.sum(e1 * y, 1)
    dm[:, 1, 1] = np.sum(e2 * y, 1)
    return np.linalg.inv(dm), area


def tutte(faces: np.ndarray, boundary: np.ndarray, boundary_pos: np.ndarray, n: int) -> np.ndarray:
    """Uniform-weight Tutte embedding with the boundary vertices fixed."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    from facerefiner.topology import edges_of

    e = edges_of(faces)
    w = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    w = (w + w.T).tocsr()
    lap = (sp.diags(np.asarray(w.sum(1)).ravel()) - w).tocsr()
    inner = np.setdiff1d(np.arange(n), boundary)
    u = np.zeros((n, 2))
    u[boundary] = boundary_pos
    rhs = -(lap[inner][:, boundary] @ boundary_pos)
    u[inner] = sla.splu(lap[inner][:, inner].tocsc()).solve(rhs)
    return u


def uv_cross(u: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """2 x signed area in a v-up plane (positive = counter-clockwise)."""
    a, b, c = u[faces[:, 0]], u[faces[:, 1]], u[faces[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])


class Energy:
    """Area-weighted symmetric Dirichlet + area term, with analytic gradient, over the symmetric
    variables (midline y, and x, y of one vertex of each mirror pair)."""

    def __init__(self, faces, dminv, area3, mirror, vertices, lam):
        self.f, self.dminv, self.lam = faces, dminv, lam
        self.w = area3 / area3.sum()
        idx = np.arange(len(mirror))
        self.mid = np.flatnonzero(mirror == idx)
        self.rep = np.flatnonzero((mirror != idx) & (vertices[:, 0] < 0))  # subject's right side
        self.img = mirror[self.rep]
        self.n = len(mirror)

    def to_vars(self, u: np.ndarray) -> np.ndarray:
        return np.concatenate([u[self.mid, 1], u[self.rep].ravel()])

    def to_uv(self, z: np.ndarray) -> np.ndarray:
        u = np.zeros((self.n, 2))
        k = len(self.mid)
        u[self.mid, 1] = z[:k]
        p = z[k:].reshape(-1, 2)
        u[self.rep] = p
        u[self.img, 0] = -p[:, 0]
        u[self.img, 1] = p[:, 1]
        return u

    def grad_to_vars(self, g: np.ndarray) -> np.ndarray:
        gp = g[self.rep] + g[self.img] * np.array([-1.0, 1.0])
        return np.concatenate([g[self.mid, 1], gp.ravel()])

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        u = self.to_uv(z)
        f = self.f
        a, b, c = u[f[:, 0]], u[f[:, 1]], u[f[:, 2]]
        ds = np.stack([b - a, c - a], axis=2)  # (F, 2, 2), columns = edges
        j = ds @ self.dminv
        det = j[:, 0, 0] * j[:, 1, 1] - j[:, 0, 1] * j[:, 1, 0]
        if np.any(det <= 0):
            return np.inf, np.zeros_like(z)
        fro = np.sum(j * j, axis=(1, 2))
        lam = self.lam
        e = float(np.sum(self.w * (fro * (1 + det ** -2) + lam * (det + 1 / det))))
        cof = np.stack([np.stack([j[:, 1, 1], -j[:, 1, 0]], 1), np.stack([-j[:, 0, 1], j[:, 0, 0]], 1)], 1)
        gj = (2 * j * (1 + det ** -2)[:, None, None]
              + ((-2 * fro * det ** -3) + lam * (1 - det ** -2))[:, None, None] * cof) * self.w[:, None, None]
        gds = gj @ np.transpose(self.dminv, (0, 2, 1))
        g = np.zeros_like(u)
        np.add.at(g, f[:, 1], gds[:, :, 0])
        np.add.at(g, f[:, 2], gds[:, :, 1])
        np.add.at(g, f[:, 0], -gds[:, :, 0] - gds[:, :, 1])
        return e, self.grad_to_vars(g)


def max_flip_free_step(u: np.ndarray, d: np.ndarray, faces: np.ndarray) -> float:
    """Largest t > 0 such that no triangle of ``u + s d`` degenerates for 0 <= s < t."""
    a, b, c = u[faces[:, 0]], u[faces[:, 1]], u[faces[:, 2]]
    da, db, dc = d[faces[:, 0]], d[faces[:, 1]], d[faces[:, 2]]
    e1, e2, d1, d2 = b - a, c - a, db - da, dc - da
    cc = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    bb = e1[:, 0] * d2[:, 1] + d1[:, 0] * e2[:, 1] - e1[:, 1] * d2[:, 0] - d1[:, 1] * e2[:, 0]
    aa = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    t = np.full(len(faces), np.inf)
    with np.errstate(all="ignore"):
        lin = np.abs(aa) <= 1e-14 * np.abs(bb)
        tl = -cc / bb
        t = np.where(lin & (tl > 0), tl, t)
        disc = bb * bb - 4 * aa * cc
        sq = np.sqrt(np.maximum(disc, 0.0))
        for r in ((-bb - sq) / (2 * aa), (-bb + sq) / (2 * aa)):
            t = np.where(~lin & (disc >= 0) & (r > 0), np.minimum(t, r), t)
    return float(t.min())


def lbfgs_flip_free(energy: Energy, z0: np.ndarray, faces: np.ndarray, max_iter: int = 5000,
                    memory: int = 10, rtol: float = 1e-11) -> tuple[np.ndarray, int]:
    """L-BFGS whose steps are capped at 90% of the first flip, with Armijo backtracking."""
    z = z0.copy()
    f, g = energy(z)
    if not np.isfinite(f):
        raise RuntimeError("the starting layout has flipped triangles")
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    small = 0
    it = 0
    for it in range(1, max_iter + 1):
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist)):
            rho = 1.0 / np.dot(y, s)
            al = rho * np.dot(s, q)
            q -= al * y
            alphas.append((rho, al))
        if s_hist:
            q *= np.dot(s_hist[-1], y_hist[-1]) / np.dot(y_hist[-1], y_hist[-1])
        for (s, y), (rho, al) in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (al - rho * np.dot(y, q))
        d = -q
        if np.dot(d, g) >= 0:  # not a descent direction: restart
            d, s_hist, y_hist = -g, [], []
        # to_uv is linear in z, so a direction in z maps to a UV displacement by the same map
        step = min(1.0, 0.9 * max_flip_free_step(energy.to_uv(z), energy.to_uv(d), faces))
        slope = float(np.dot(d, g))
        while True:
            zn = z + step * d
            fn, gn = energy(zn)
            if np.isfinite(fn) and fn <= f + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-20:
                return z, it
        s, y = zn - z, gn - g
        if np.dot(s, y) > 1e-300:
            s_hist.append(s)
            y_hist.append(y)
            s_hist, y_hist = s_hist[-memory:], y_hist[-memory:]
        small = small + 1 if f - fn <= rtol * abs(f) else 0
        z, f, g = zn, fn, gn
        if small >= 20:
            break
    return z, it


# --------------------------------------------------------------------------------------------
# layout


def fit_to_square(u: np.ndarray, energy: Energy, margin: float) -> np.ndarray:
    """Scale the symmetric layout (x right, y up, midline at x = 0) into [margin, 1 - margin]^2 in
    image convention (v down) and quantise: u = (2**19 + k) / 2**20 with k -> -k for mirror pairs."""
    half = 0.5 - margin
    su = half / np.abs(u[:, 0]).max()
    y0, y1 = u[:, 1].min(), u[:, 1].max()
    sv = 2 * half / (y1 - y0)
    out = np.empty_like(u)
    k = np.rint(u[energy.rep, 0] * su * QUANT)
    out[energy.rep, 0] = (QUANT / 2 + k) / QUANT
    out[energy.img, 0] = (QUANT / 2 - k) / QUANT
    out[energy.mid, 0] = 0.5
    v = np.rint((margin + (y1 - u[:, 1]) * sv) * QUANT) / QUANT
    out[:, 1] = v
    out[energy.img, 1] = v[energy.rep]
    return out


def layout_stats(uv: np.ndarray, faces: np.ndarray, shape: np.ndarray, n_tess: int) -> dict:
    """Statistics of a layout (image convention uv) against the 3D shape."""
    from facerefiner.layout import area_ratios, signed_areas
    from facerefiner.topology import NOSE_TIP, eye_chains, mouth_chains

    r = area_ratios(uv, faces, shape)
    areas = signed_areas(uv, faces)
    # angle distortion: ratio of the singular values of the Jacobian
    dminv, _ = reference_frames(shape, faces)
    p = uv * np.array([1.0, -1.0])
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    sv = np.linalg.svd(np.stack([b - a, c - a], axis=2) @ dminv, compute_uv=False)
    k = sv[:, 0] / sv[:, 1]
    holes = faces[n_tess:]

    def hole_group(verts):
        s = set(np.asarray(verts).ravel().tolist())
        return np.array([n_tess + i for i, t in enumerate(holes.tolist()) if set(t) <= s])

    groups = {
        "nose_tip_ring": np.flatnonzero((faces == NOSE_TIP).any(1)),
        "right_eye_hole": hole_group(np.concatenate(eye_chains("right"))),
        "left_eye_hole": hole_group(np.concatenate(eye_chains("left"))),
        "mouth_hole": hole_group(np.concatenate(mouth_chains())),
    }

    def q(x):
        return float(f"{x:.4g}")

    # angles in UV
    e = [b - a, c - b, a - c]
    ang = []
    for i in range(3):
        x, y = -e[i - 1], e[i]
        ang.append(np.degrees(np.arccos(np.clip(np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1), -1, 1))))
    ang = np.stack(ang, 1)
    out = {
        "fill_share": q(areas.sum()),
        "area_ratio": {"min": q(r.min()), "p5": q(np.percentile(r, 5)), "median": q(np.median(r)),
                       "p95": q(np.percentile(r, 95)), "max": q(r.max()), "std_log": q(np.log(r).std())},
        "angle_distortion_sv_ratio": {"median": q(np.median(k)), "p95": q(np.percentile(k, 95)), "max": q(k.max())},
        "min_uv_angle_deg": q(ang.min()),
        "min_uv_area_texels_at_512": q(areas.min() * 512 ** 2),
        "bbox": [q(x) for x in (uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max())],
    }
    for name, idx in groups.items():
        out[name] = {"triangles": int(len(idx)), "min": q(r[idx].min()), "median": q(np.median(r[idx])),
                     "max": q(r[idx].max())}
    return out


def compute_layout(obj_path: str | Path = DEFAULT_OBJ, area_weight: float = AREA_WEIGHT,
                   margin_texels: float = MARGIN_TEXELS) -> dict:
    """Compute the layout; returns the npz arrays (``meta`` as a JSON string)."""
    from facerefiner.layout import overlap_free, signed_areas
    from facerefiner.topology import (closed_triangles, face_oval, left_eye_loop, inner_lip_loop,
                                      mirror_automorphism_defects, mirror_from_shape, right_eye_loop,
                                      tessellation_triangles)

    raw = read_obj_vertices(Path(obj_path))
    mirror = mirror_from_shape(raw)
    shape = symmetrize(raw, mirror)
    faces = closed_triangles()
    n_tess = len(tessellation_triangles())
    oval = face_oval()
    n = len(shape)

    # 1. Tutte start, face oval on a circle by arc length, starting at the forehead top (+y) and
    #    running counter-clockwise (toward the subject's right, -x) like the oval itself.
    p = shape[oval]
    seg = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    ang = np.pi / 2 + 2 * np.pi * s
    radius = np.sqrt(reference_frames(shape, faces)[1].sum() / np.pi)
    u0 = tutte(faces, oval, radius * np.stack([np.cos(ang), np.sin(ang)], 1), n)
    u0 = (u0 + u0[mirror] * np.array([-1.0, 1.0])) / 2
    if np.any(uv_cross(u0, faces) <= 0):
        raise RuntimeError("symmetrised Tutte start has flipped triangles")

    # 2. symmetric free-boundary optimisation
    dminv, area3 = reference_frames(shape, faces)
    energy = Energy(faces, dminv, area3, mirror, shape, area_weight)
    z, iters = lbfgs_flip_free(energy, energy.to_vars(u0), faces)
    u = energy.to_uv(z)

    # 3. unit square, image convention, exact symmetry
    margin = margin_texels / 512.0
    uv = fit_to_square(u, energy, margin)
    uv_start = fit_to_square(u0, energy, margin)

    # checks
    if not np.all(signed_areas(uv, faces) > 0):
        raise RuntimeError("a triangle is flipped in the final layout")
    if not overlap_free(uv, faces):
        raise RuntimeError("the final layout overlaps itself")
    if not (np.array_equal(uv[mirror, 0], 1 - uv[:, 0]) and np.array_equal(uv[mirror, 1], uv[:, 1])):
        raise RuntimeError("the final layout is not exactly symmetric")
    uv32 = uv.astype(np.float32)
    if not np.array_equal(uv32[mirror, 0], np.float32(1) - uv32[:, 0]):
        raise RuntimeError("the final layout is not exactly symmetric in float32")

    defects = mirror_automorphism_defects(mirror, faces)
    stats = layout_stats(uv, faces, shape, n_tess)
    wu, wv = np.ptp(u[:, 0]), np.ptp(u[:, 1])
    stats["anisotropic_scale_u_over_v"] = float(f"{(1 / wu) / (1 / wv):.4g}")
    meta = {
        "name": "facerefiner-symmetric",
        "method": ("Tutte start (circle boundary), then free-boundary L-BFGS on the closed mesh of "
                   f"area-weighted symmetric Dirichlet + {area_weight:g} * (det J + 1/det J) with flip-free "
                   "steps, in symmetric variables; anisotropic fit into the unit square, quantised to 2^-20"),
        "area_weight": area_weight,
        "margin_texels_at_512": margin_texels,
        "iterations": int(iters),
        "uv_convention": "image: u right, v down, (0,0) top-left; OBJ vt = (u, 1-v)",
        "orientation": ("faces counter-clockwise seen from the front (outward normals); positive signed "
                        "area in (u, 1-v); counter-clockwise on the displayed texture"),
        "num_tessellation_triangles": n_tess,
        "num_hole_triangles": int(len(faces) - n_tess),
        "mirror_defect_triangles": int(len(defects)),
        "stats": stats,
        "tutte_start_stats": layout_stats(uv_start, faces, shape, n_tess),
        "source": SOURCE_NOTE,
        "license": "Apache-2.0 (derived canonical shape, see source)",
    }
    return {
        "uv": uv,
        "faces": faces.astype(np.int64),
        "mirror": mirror.astype(np.int64),
        "canonical": shape,
        "face_oval": oval.astype(np.int64),
        "left_eye": left_eye_loop().astype(np.int64),
        "right_eye": right_eye_loop().astype(np.int64),
        "inner_lips": inner_lip_loop().astype(np.int64),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--obj", type=Path, default=DEFAULT_OBJ, help="MediaPipe canonical_face_model.obj")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz")
    args = ap.parse_args(argv)
    if not args.obj.exists():
        print(f"{args.obj}: not found (download canonical_face_model.obj from MediaPipe)", file=sys.stderr)
        return 1
    arrays = compute_layout(args.obj)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    meta = json.loads(str(arrays["meta"]))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print(json.dumps(meta["stats"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
