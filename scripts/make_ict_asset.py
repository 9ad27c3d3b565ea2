#!/usr/bin/env python
"""Build the shipped ICT-FaceKit head asset ``src/facerefiner/assets/ict_head.npz``.

Usage::

    python scripts/make_ict_asset.py [--npz ../shared/data/ict-facekit/ict_facekit_light.npz] [--out PATH]

Input: ICT-FaceKit Light as one npz (USC ICT, MIT licence; see ``../shared/data/ict-facekit/``).
Output: one compressed npz (about 20 MB) that :mod:`facerefiner.heads.ict` reads, with the licence
notice stored in its metadata and beside it in ``assets/ICT-FaceKit-LICENSE.txt``.

What it does:

1. Keeps the polygons of the materials that are textured (:data:`ATLAS`): face with ears and neck,
   back of the head (with the mouth and eye sockets), gums and tongue, teeth, scleras and irises.
   The lacrimal fluid, eye blend, eye occlusion and eyelash shells are left out: they are
   transparent overlays in ICT's own renders and would paint skin over the eyes here. Quads are
   split into two triangles. The vertices those polygons use are kept and renumbered.
2. The atlas: ICT's per-material UV maps each fill [0, 1]^2 (so they overlap); each is scaled into
   its own square of one texture (:data:`ATLAS`: face 0.75 of the side, the rest 0.25 or 0.125),
   with a gutter of :data:`GUTTER` of its square on every side. A vertex on a UV seam becomes one
   vertex per chart corner (``split_index`` maps them back), as the per-vertex layouts of
   :class:`facerefiner.layout.UVLayout` need.
3. The left/right pairing: ICT is exactly symmetric in x, so each kept vertex is paired with the
   vertex at its reflection; each split vertex with the copy of its partner whose UV is nearest to
   its own UV reflected in its chart (the left eye's charts pair with the right eye's).
4. The correspondence to MediaPipe's face mesh: the 468 canonical vertices (the package's
   symmetrised canonical shape) are aligned to ICT's neutral by 20 landmark pairs (eye corners,
   brows, nose, mouth, chin: MediaPipe index against ICT's 68-landmark index), then ICT's
   identity and expression weights are fitted to the canonical face with closest points on ICT's
   face surface, alternating (:func:`facerefiner.fit.fit_morphable`, 6 rounds). Each MediaPipe
   vertex gets the triangle and barycentric coordinates of its closest point on the fitted face;
   the 20 pairs keep their ICT vertex. The irises (MediaPipe's landmarks 468 and 473) map to the
   front vertex of ICT's iris meshes.
5. Semantic regions (``feature_*``): MediaPipe's eye, brow, lip and nose sets carried over by the
   correspondence, and the charts that are not skin (eyeballs, mouth interior, eye sockets).

Licence: ICT-FaceKit is MIT-licensed (Copyright (c) 2020 USC Institute for Creative
Technologies); the notice travels with the asset. MediaPipe's canonical shape (Apache 2.0) is
only used to build the correspondence; it is not stored here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facerefiner.fit import fit_morphable, weighted_similarity  # noqa: E402
from facerefiner.layout import canonical_shape, feature_vertices, overlap_share, signed_areas  # noqa: E402

DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "ict-facekit" / "ict_facekit_light.npz"
DEFAULT_OUT = ROOT / "src" / "facerefiner" / "assets" / "ict_head.npz"

#: Material -> (u0, v0, side) of its square in the atlas, image convention (v down), in units of
#: the texture's side. Subject's right on the left, as in the face chart.
ATLAS = {
    "M_Face": (0.0, 0.0, 0.75),
    "M_BackHead": (0.75, 0.0, 0.25),
    "M_GumsTongue": (0.75, 0.25, 0.25),
    "M_Teeth": (0.75, 0.5, 0.25),
    "M_ScleraRight": (0.75, 0.75, 0.125),
    "M_ScleraLeft": (0.875, 0.75, 0.125),
    "M_IrisRight": (0.75, 0.875, 0.125),
    "M_IrisLeft": (0.875, 0.875, 0.125),
}
#: Where the triangles of a material whose UVs are mirrored go (ICT's teeth share one map for the
#: left and right halves, its eyeballs fold their back over the front): the same scale, u flipped.
ATLAS_FLIPPED = {
    "M_Teeth": (0.0, 0.75, 0.25),
    "M_ScleraRight": (0.25, 0.75, 0.125),
    "M_ScleraLeft": (0.375, 0.75, 0.125),
    "M_IrisRight": (0.25, 0.875, 0.125),
    "M_IrisLeft": (0.375, 0.875, 0.125),
}
#: Margin inside each square, as a fraction of the square (keeps bilinear lookups off the neighbour).
GUTTER = 0.02
#: MediaPipe face-mesh index -> ICT 68-landmark index for the initial alignment.
LANDMARK_PAIRS = [(33, 36), (133, 39), (362, 42), (263, 45), (4, 30), (61, 48), (291, 54), (152, 8),
                  (0, 51), (17, 57), (2, 33), (168, 27), (70, 17), (105, 19), (107, 21), (336, 22),
                  (334, 24), (300, 26), (159, 37), (386, 44)]
#: Ridge of the correspondence fit (cm^2): identity, expression.
REG_IDENTITY, REG_EXPRESSION = 0.05, 0.02


def triangulate(polys: np.ndarray) -> np.ndarray:
    """(P, 4) polygons (-1 as the 4th index of a triangle) -> (T, 3) triangles, each quad as two;
    returns also the polygon of each triangle."""
    quad = polys[:, 3] >= 0
    t = np.concatenate([polys[:, :3], polys[quad][:, [0, 2, 3]]])
    src = np.concatenate([np.arange(len(polys)), np.nonzero(quad)[0]])
    return t, src


def closest_on_surface(points: np.ndarray, verts: np.ndarray, tris: np.ndarray, k: int = 12):
    """Closest point of each point on the triangles: (triangle index, barycentrics, distance)."""
    import trimesh
    from scipy.spatial import cKDTree

    used = np.unique(tris)
    tree = cKDTree(verts[used])
    _, nn = tree.query(points, k=k)
    inc = [[] for _ in range(len(verts))]
    for i, t in enumerate(tris):
        for v in t:
            inc[v].append(i)
    best_t = np.zeros(len(points), np.int64)
    best_d = np.full(len(points), np.inf)
    best_p = np.zeros((len(points), 3))
    for q in range(len(points)):
        cand = np.unique(np.concatenate([inc[used[j]] for j in nn[q]]))
        cp = trimesh.triangles.closest_point(verts[tris[cand]], np.repeat(points[q][None], len(cand), 0))
        d = np.linalg.norm(cp - points[q], axis=1)
        j = int(d.argmin())
        best_t[q], best_d[q], best_p[q] = cand[j], d[j], cp[j]
    bary = trimesh.triangles.points_to_barycentric(verts[tris[best_t]], best_p)
    return best_t, np.clip(bary, 0, 1) / np.clip(bary, 0, 1).sum(1, keepdims=True), best_d


def build(npz: Path) -> tuple[dict, dict]:
    z = np.load(npz)
    mats = [str(m) for m in z["materials"]]
    keep_m = np.array([mats.index(m) for m in ATLAS])
    sel = np.isin(z["face_material"], keep_m)
    polys, polys_uv, pmat = z["faces"][sel], z["faces_uv"][sel], z["face_material"][sel]
    tri, src = triangulate(polys)
    tri_uv, _ = triangulate(polys_uv)
    tmat = pmat[src]
    kept = np.unique(tri)
    remap = -np.ones(len(z["neutral"]), np.int64)
    remap[kept] = np.arange(len(kept))
    tri = remap[tri]
    neutral = z["neutral"][kept].astype(np.float64)

    # atlas UVs per (vertex, uv index, material); flip charts whose UVs are mirrored
    vt = z["vt"].astype(np.float64)
    corner_uv = np.zeros(tri.shape + (2,))
    tchart = tmat.astype(np.int64) * 2  # chart id: material * 2 (+ 1 for its mirrored triangles)
    for m in keep_m:
        rows = np.nonzero(tmat == m)[0]
        uvm = vt[tri_uv[rows]]
        uvm[..., 0] -= np.floor(uvm[..., 0].min())
        uvm[..., 1] = 1.0 - uvm[..., 1]  # image convention
        a = uvm
        area = (a[:, 1, 0] - a[:, 0, 0]) * (a[:, 2, 1] - a[:, 0, 1]) - (a[:, 2, 0] - a[:, 0, 0]) * (a[:, 1, 1] - a[:, 0, 1])
        # negative in image convention = counter-clockwise on the displayed texture (the valid sense)
        flip = area > 0
        if flip.any() and mats[m] not in ATLAS_FLIPPED:
            raise SystemExit(f"{mats[m]}: {int(flip.sum())} mirrored UV triangles and no ATLAS_FLIPPED square")
        for f_, table in ((False, ATLAS), (True, ATLAS_FLIPPED)):
            r = flip == f_
            if not r.any():
                continue
            q = uvm[r]
            if f_:
                q[..., 0] = 1.0 - q[..., 0]
            u0, v0, side = table[mats[m]]
            corner_uv[rows[r]] = np.array([u0, v0]) + side * (GUTTER + (1 - 2 * GUTTER) * q)
            tchart[rows[r]] += int(f_)
    key = np.stack([tri.reshape(-1), tri_uv.reshape(-1), np.repeat(tchart, 3)], 1)
    ukey, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    faces = inv.reshape(-1, 3)
    split_index = ukey[:, 0]
    split_chart = ukey[:, 2]
    split_mat = split_chart // 2
    uv = np.zeros((len(ukey), 2))
    uv[inv] = corner_uv.reshape(-1, 2)
    bad_area = int((signed_areas(uv, faces) <= 0).sum())

    # left/right pairing
    from scipy.spatial import cKDTree

    d, mv = cKDTree(neutral).query(neutral * np.array([-1.0, 1.0, 1.0]))
    if d.max() > 0.05:
        raise SystemExit(f"ICT neutral is not symmetric (worst {d.max():.3g} cm)")
    swap = {mats.index(a): mats.index(b) for a, b in [("M_ScleraLeft", "M_ScleraRight"), ("M_IrisLeft", "M_IrisRight")]}
    swap.update({b: a for a, b in list(swap.items())})
    copies: dict[int, list[int]] = {}
    for k, o in enumerate(split_index):
        copies.setdefault(int(o), []).append(k)

    def chart_local(k: int) -> np.ndarray:
        u0, v0, side = (ATLAS_FLIPPED if split_chart[k] % 2 else ATLAS)[mats[split_mat[k]]]
        return (uv[k] - [u0, v0]) / side

    mirror = np.zeros(len(ukey), np.int64)
    for k, o in enumerate(split_index):
        want_m = swap.get(int(split_mat[k]), int(split_mat[k]))
        lu = chart_local(k) * [-1, 1] + [1, 0]
        want_c = 2 * want_m + int(split_chart[k] % 2)
        cand = ([c for c in copies[int(mv[o])] if split_chart[c] == want_c]
                or [c for c in copies[int(mv[o])] if split_mat[c] == want_m] or copies[int(mv[o])])
        mirror[k] = min(cand, key=lambda c: float(np.abs(chart_local(c) - lu).sum()))
    not_inv = int((mirror[mirror] != np.arange(len(mirror))).sum())

    # correspondence with MediaPipe's canonical face
    ident = z["identity_modes"][:, kept].astype(np.float64)
    expr = z["expression_modes"][:, kept].astype(np.float64)
    lm68 = remap[z["landmarks68"]]
    mp_idx = np.array([p[0] for p in LANDMARK_PAIRS])
    ict_idx = lm68[[p[1] for p in LANDMARK_PAIRS]]
    can = canonical_shape()
    s, R, t = weighted_similarity(can[mp_idx], neutral[ict_idx])
    can_ict = s * can @ R.T + t  # MediaPipe's canonical in ICT's frame
    face_tris = np.nonzero(tmat == mats.index("M_Face"))[0]
    narrow = face_tris[(kept[tri[face_tris]] <= 6705).all(1)]
    basis_all = np.concatenate([ident, expr]).transpose(1, 2, 0)  # (V, 3, K)
    K_id, K_ex = len(ident), len(expr)
    reg = np.r_[np.full(K_id, REG_IDENTITY), np.full(K_ex, REG_EXPRESSION)]
    lo = np.r_[np.full(K_id, -np.inf), np.zeros(K_ex)]
    hi = np.r_[np.full(K_id, np.inf), np.ones(K_ex)]
    w = np.zeros(K_id + K_ex)
    fixed = dict(zip(mp_idx.tolist(), ict_idx.tolist()))
    for _ in range(6):
        cur = neutral + basis_all @ w
        ti, bary, dist = closest_on_surface(can_ict, cur, tri[narrow])
        ti = narrow[ti]
        Bp = np.einsum("nj,njck->nck", bary, basis_all[tri[ti]])
        X0 = np.einsum("nj,njc->nc", bary, neutral[tri[ti]])
        for m_i, v_i in fixed.items():
            Bp[m_i], X0[m_i] = basis_all[v_i], neutral[v_i]
        fitres = fit_morphable(X0, Bp, can, reg=reg, lower=lo, upper=hi, iterations=10)
        w = fitres.weights
        cur = neutral + basis_all @ w
        s, R, t = fitres.scale, fitres.rotation, fitres.translation
        can_ict = (can - t) @ R / s  # the canonical face in the fitted head's frame
    cur = neutral + basis_all @ w
    ti, bary, dist = closest_on_surface(can_ict, cur, tri[narrow])
    ti = narrow[ti]
    # the fixed pairs: the triangle of that vertex with the vertex's barycentric 1
    for m_i, v_i in fixed.items():
        cand = np.nonzero((tri[narrow] == v_i).any(1))[0]
        ti[m_i] = narrow[cand[0]]
        bary[m_i] = (tri[ti[m_i]] == v_i).astype(float)
    iris = []
    for name in ("M_IrisRight", "M_IrisLeft"):
        vs = np.unique(tri[tmat == mats.index(name)])
        iris.append(int(vs[np.argmax(neutral[vs, 2])]))

    # semantic regions, as split-vertex indices
    face_mat = mats.index("M_Face")
    face_copy = {}
    for k in range(len(ukey)):
        if split_mat[k] == face_mat:
            face_copy.setdefault(int(split_index[k]), k)
    features = {}
    for name, idx in feature_vertices().items():
        vv = tri[ti[idx], np.argmax(bary[idx], 1)]
        features[name] = np.array(sorted({face_copy[int(v)] for v in vv if int(v) in face_copy}), np.int64)
    orig = kept[split_index]
    features["EYEBALLS"] = np.nonzero(np.isin(split_mat, [mats.index(m) for m in ATLAS if "Sclera" in m or "Iris" in m]))[0]
    features["TEETH_GUMS"] = np.nonzero(np.isin(split_mat, [mats.index("M_Teeth"), mats.index("M_GumsTongue")]))[0]
    features["MOUTH_SOCKET"] = np.nonzero((orig >= 11248) & (orig <= 13293))[0]
    sock = (orig >= 13294) & (orig <= 14061)
    features["EYE_SOCKET_RIGHT"] = np.nonzero(sock & (neutral[split_index, 0] < 0))[0]
    features["EYE_SOCKET_LEFT"] = np.nonzero(sock & (neutral[split_index, 0] > 0))[0]

    licence = (npz.parent / "LICENSE").read_text() if (npz.parent / "LICENSE").exists() else ""
    stats = {
        "vertices_kept": int(len(kept)), "split_vertices": int(len(ukey)), "triangles": int(len(faces)),
        "uv_nonpositive_triangles": bad_area, "mirror_not_involution": not_inv,
        "correspondence_distance_cm": {"median": float(np.median(dist)), "p95": float(np.percentile(dist, 95)),
                                       "max": float(dist.max())},
        "overlap_share": float(overlap_share(uv, faces)),
    }
    meta = {
        "source": "ICT-FaceKit Light (USC ICT), repository ICT-VGL/ICT-FaceKit, commit " + str(z["source_commit"]),
        "licence": "MIT", "licence_text": licence,
        "atlas": {k: list(v) for k, v in ATLAS.items()}, "atlas_flipped": {k: list(v) for k, v in ATLAS_FLIPPED.items()}, "gutter": GUTTER,
        "landmark_pairs": LANDMARK_PAIRS, "reg": [REG_IDENTITY, REG_EXPRESSION], "stats": stats,
        "method": "scripts/make_ict_asset.py",
    }
    names = list(features)
    arrays = {
        "neutral": neutral.astype(np.float32),
        "identity_modes": ident.astype(np.float16),
        "expression_modes": expr.astype(np.float16),
        "expression_names": np.array([str(n) for n in z["expression_names"]]),
        "split_index": split_index.astype(np.int32),
        "uv": uv,
        "faces": faces.astype(np.int32),
        "face_material": tmat.astype(np.int16),
        "materials": np.array(mats),
        "mirror": mirror.astype(np.int32),
        "corr_triangle": ti.astype(np.int32),
        "corr_bary": bary.astype(np.float32),
        "iris_vertex": np.array(iris, np.int32),
        "landmarks68": lm68.astype(np.int32),
        "rigid_verts": remap[z["rigid_verts"]][remap[z["rigid_verts"]] >= 0].astype(np.int32),
        "feature_names": np.array(names),
        "feature_offsets": np.cumsum([0] + [len(features[n]) for n in names]).astype(np.int64),
        "feature_vertices": np.concatenate([features[n] for n in names]).astype(np.int32),
        "meta": np.array(json.dumps(meta)),
    }
    return arrays, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    arrays, stats = build(a.npz)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(a.out)
    lic = a.npz.parent / "LICENSE"
    if lic.exists():
        (a.out.parent / "ICT-FaceKit-LICENSE.txt").write_text(lic.read_text())
    print(json.dumps(stats, indent=1))
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
