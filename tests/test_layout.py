"""The shipped UV layout (assets/uv_layout.npz) and loading layouts from .obj files."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import MEDIAPIPE_OBJ, REPO, need
from facerefiner import topology as T
from facerefiner.errors import InputError
from facerefiner.layout import (ASSET_PATH, UVLayout, area_ratios, canonical_shape, default_layout,
                                layout_metadata, load_layout, overlap_free, signed_areas)

MARGIN = 4 / 512


@pytest.fixture(scope="module")
def lay() -> UVLayout:
    return default_layout()


def _generator():
    spec = importlib.util.spec_from_file_location("make_uv_layout", REPO / "scripts" / "make_uv_layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raster_counts(uv: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """How many triangles strictly contain each texel centre (half-open ties do not count)."""
    count = np.zeros((size, size), dtype=np.int32)
    p = uv * size
    for a, b, c in p[faces]:
        lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(int)
        hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int)
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0]) + 0.5, np.arange(lo[1], hi[1]) + 0.5)
        q = np.stack([xs.ravel(), ys.ravel()], 1)
        d = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
        w1 = ((q[:, 0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (q[:, 1] - a[1])) / d
        w2 = ((b[0] - a[0]) * (q[:, 1] - a[1]) - (q[:, 0] - a[0]) * (b[1] - a[1])) / d
        inside = (w1 > 1e-9) & (w2 > 1e-9) & (1 - w1 - w2 > 1e-9)
        j, i = q[inside, 0].astype(int), q[inside, 1].astype(int)
        np.add.at(count, (i, j), 1)
    return count


def test_shipped_layout_basics(lay):
    assert ASSET_PATH.stat().st_size < 100_000
    assert lay.uv.shape == (468, 2) and lay.uv.dtype == np.float64
    assert lay.faces.shape == (898, 3) and lay.faces.dtype == np.int64
    assert lay.mirror.shape == (468,) and lay.mirror.dtype == np.int64
    assert lay.symmetric and lay.closed_eyes and lay.name == "facerefiner-symmetric"
    assert np.array_equal(lay.faces, T.closed_triangles())
    assert np.array_equal(lay.mirror, T.mirror_pairs())
    assert load_layout(None) is lay and default_layout() is lay
    assert canonical_shape().shape == (468, 3)
    # frozen, hashable by identity (used as a cache key elsewhere)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.name = "x"
    assert {lay: 1}[lay] == 1


def test_tensors_and_obj_convention(lay):
    t = lay.uv_tensor()
    assert t.dtype == torch.float32 and t.shape == (468, 2)
    assert lay.uv_tensor(dtype=torch.float64).dtype == torch.float64
    assert lay.faces_tensor().dtype == torch.int64 and lay.faces_tensor().shape == (898, 3)
    vt = lay.vt_obj()
    assert np.array_equal(vt[:, 0], lay.uv[:, 0]) and np.array_equal(vt[:, 1], 1 - lay.uv[:, 1])
    assert np.array_equal(1 - vt[:, 1], lay.uv[:, 1])  # exact round trip


def test_positive_areas_and_no_overlap(lay):
    a = signed_areas(lay.uv, lay.faces)
    assert np.all(a > 0)
    assert a.min() * 512 ** 2 > 4.0  # no sliver below 4 texels at 512
    # image-convention cross product is negative (documented convention)
    u = lay.uv
    f = lay.faces
    cross = (u[f[:, 1], 0] - u[f[:, 0], 0]) * (u[f[:, 2], 1] - u[f[:, 0], 1]) - \
            (u[f[:, 2], 0] - u[f[:, 0], 0]) * (u[f[:, 1], 1] - u[f[:, 0], 1])
    assert np.all(cross < 0)
    assert overlap_free(lay.uv, lay.faces)
    # independent check: rasterise and count
    count = _raster_counts(lay.uv, lay.faces, 512)
    assert count.max() == 1
    assert abs(count.sum() / 512 ** 2 - a.sum()) < 0.01


def test_overlap_detection_works(lay):
    uv = lay.uv.copy()
    i = T.NOSE_TIP
    uv[i] = uv[T.FOREHEAD_TOP] + [0.0, 0.05]  # drag the nose tip up to the forehead: folds
    assert not overlap_free(uv, lay.faces)


def test_exact_symmetry(lay):
    u, m = lay.uv, lay.mirror
    assert np.array_equal(u[m, 0], 1.0 - u[:, 0])
    assert np.array_equal(u[m, 1], u[:, 1])
    mid = m == np.arange(468)
    assert np.all(u[mid, 0] == 0.5) and mid.sum() > 20
    u32 = u.astype(np.float32)
    assert np.array_equal(u32[m, 0], np.float32(1) - u32[:, 0])
    assert np.array_equal(u32[m, 1], u32[:, 1])
    assert np.array_equal(u32.astype(np.float64), u)  # float32 holds the values exactly
    t = lay.uv_tensor()
    assert torch.equal(t[torch.as_tensor(m), 0], 1 - t[:, 0])
    # pixel positions mirror exactly at power-of-two texture sizes (x -> S - x)
    for s in (256, 512, 1024, 4096):
        assert np.array_equal(u[m, 0] * s, s - u[:, 0] * s)
    assert np.all(u * 2 ** 20 == np.round(u * 2 ** 20))  # multiples of 2**-20


def test_mirror_maps_faces_to_faces(lay):
    defects = T.mirror_automorphism_defects(lay.mirror, lay.faces)
    assert len(defects) == 12  # six quads with MediaPipe's asymmetric diagonals (see topology)
    # the mirrored triangulation is valid in this layout too (those quads are convex in UV)
    mirrored = lay.mirror[lay.faces][:, ::-1]
    assert np.all(signed_areas(lay.uv, mirrored) > 0)


def test_fill_margin_and_orientation(lay):
    u = lay.uv
    a = signed_areas(u, lay.faces)
    assert a.sum() > 0.7
    assert u.min() >= MARGIN - 2 ** -20 and u.max() <= 1 - MARGIN + 2 ** -20
    assert abs(u[:, 0].min() - MARGIN) < 1e-5 and abs(u[:, 1].max() - (1 - MARGIN)) < 1e-5
    # upright: forehead on top, chin at the bottom; subject's right on the left
    assert u[T.FOREHEAD_TOP, 1] < u[T.RIGHT_EYE_OUTER, 1] < u[T.NOSE_TIP, 1] < u[T.MOUTH_RIGHT, 1] < u[T.CHIN, 1]
    assert u[T.CHIN, 1] == u[:, 1].max()
    assert u[T.RIGHT_EYE_OUTER, 0] < u[T.RIGHT_EYE_INNER, 0] < 0.5 < u[T.LEFT_EYE_INNER, 0] < u[T.LEFT_EYE_OUTER, 0]
    assert u[T.MOUTH_RIGHT, 0] < 0.5 < u[T.MOUTH_LEFT, 0]
    # consistent with 3D: u grows with the canonical x, v with -y
    v = canonical_shape()
    assert np.corrcoef(u[:, 0], v[:, 0])[0, 1] > 0.95 and np.corrcoef(u[:, 1], -v[:, 1])[0, 1] > 0.95


def test_distortion_within_bounds(lay):
    r = area_ratios(lay.uv, lay.faces, canonical_shape())
    assert 0.55 < r.min() and r.max() < 1.4
    assert np.percentile(r, 5) > 0.8 and np.percentile(r, 95) < 1.15
    assert np.log(r).std() < 0.1
    f = lay.faces
    assert r[(f == T.NOSE_TIP).any(1)].min() > 0.7  # nose tip not crushed
    for side in ("left", "right"):
        s = set(np.concatenate(T.eye_chains(side)).tolist())
        idx = [852 + i for i, t in enumerate(f[852:].tolist()) if set(t) <= s]
        assert len(idx) == 14 and r[idx].min() > 0.8
    s = set(np.concatenate(T.mouth_chains()).tolist())
    idx = [852 + i for i, t in enumerate(f[852:].tolist()) if set(t) <= s]
    assert len(idx) == 18 and r[idx].min() > 0.6


def test_metadata(lay):
    meta = layout_metadata()
    assert "Apache License 2.0" in meta["source"] and "canonical_face_model.obj" in meta["source"]
    assert meta["num_tessellation_triangles"] == 852 and meta["num_hole_triangles"] == 46
    assert meta["stats"]["fill_share"] == pytest.approx(signed_areas(lay.uv, lay.faces).sum(), abs=1e-3)
    for k in ("min", "p5", "median", "p95", "max", "std_log"):
        assert k in meta["stats"]["area_ratio"]
    z = np.load(ASSET_PATH, allow_pickle=False)
    for name, loop in T.named_loops().items():
        assert np.array_equal(z[name], loop)


def test_shipped_npz_equals_regenerated(lay):
    obj = need(MEDIAPIPE_OBJ)
    arrays = _generator().compute_layout(obj)
    z = np.load(ASSET_PATH, allow_pickle=False)
    assert sorted(arrays) == sorted(z.files)
    for k in ("faces", "mirror", "face_oval", "left_eye", "right_eye", "inner_lips"):
        assert np.array_equal(arrays[k], z[k]), k
    assert np.allclose(arrays["uv"], z["uv"], rtol=0, atol=1e-5)
    assert np.allclose(arrays["canonical"], z["canonical"], rtol=0, atol=1e-12)
    new, old = json.loads(str(arrays["meta"])), json.loads(str(z["meta"]))
    assert new["method"] == old["method"]
    assert new["stats"]["area_ratio"]["std_log"] == pytest.approx(old["stats"]["area_ratio"]["std_log"], rel=1e-2)


def test_canonical_is_symmetrised_obj():
    obj = need(MEDIAPIPE_OBJ)
    gen = _generator()
    raw = gen.read_obj_vertices(obj)
    m = T.mirror_from_shape(raw)
    assert np.allclose(canonical_shape(), gen.symmetrize(raw, m), atol=1e-12)
    assert np.allclose(canonical_shape(), raw, atol=1e-6)  # MediaPipe's canonical face is symmetric already


def test_valid_for_mediapipe_obj_triangulation(lay):
    """The layout also works with the triangles of canonical_face_model.obj (other diagonals)."""
    lo = load_layout(need(MEDIAPIPE_OBJ))
    assert np.all(signed_areas(lay.uv, lo.faces) > 0)
    assert overlap_free(lay.uv, lo.faces)


def test_load_mediapipe_obj_layout():
    path = need(MEDIAPIPE_OBJ)
    lo = load_layout(path)
    assert lo.uv.shape == (468, 2) and lo.faces.shape == (898, 3)
    assert lo.name == "canonical_face_model.obj"
    assert not lo.symmetric  # MediaPipe's UVs are only approximately symmetric
    assert lo.closed_eyes  # MediaPipe's obj does close the eyes and the mouth
    assert np.array_equal(lo.mirror, default_layout().mirror)
    # same orientation convention: positive areas, faces wound like ours
    assert np.all(signed_areas(lo.uv, lo.faces) > 0)
    ours = {(t[i], t[(i + 1) % 3]) for t in T.closed_triangles().tolist() for i in range(3)}
    theirs = [(t[i], t[(i + 1) % 3]) for t in lo.faces.tolist() for i in range(3)]
    assert sum(e in ours for e in theirs) > 0.8 * len(theirs)
    # image convention: forehead up (small v), subject's right on the left
    assert lo.uv[T.FOREHEAD_TOP, 1] < lo.uv[T.CHIN, 1]
    assert lo.uv[T.RIGHT_EYE_OUTER, 0] < lo.uv[T.LEFT_EYE_OUTER, 0]
    # per-vertex UVs: vt of each face corner converted with v -> 1 - v
    vts, first = [], {}
    for line in path.read_text().splitlines():
        s = line.split()
        if s and s[0] == "vt":
            vts.append((float(s[1]), float(s[2])))
        elif s and s[0] == "f":
            for tok in s[1:]:
                vi, ti = (int(x) - 1 for x in tok.split("/")[:2])
                first.setdefault(vi, vts[ti])
    for vi, (a, b) in first.items():
        assert lo.uv[vi, 0] == a and lo.uv[vi, 1] == 1 - b


def _write_obj(path, uv_obj, faces, n_vertices=468, with_vt=True):
    lines = [f"v {i * 0.01:.3f} 0 0" for i in range(n_vertices)]
    if with_vt:
        lines += [f"vt {a!r} {b!r}" for a, b in uv_obj]
        lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in faces]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_roundtrip_of_shipped_layout(tmp_path, lay):
    p = _write_obj(tmp_path / "ours.obj", lay.vt_obj(), lay.faces)
    lo = load_layout(p)
    assert np.array_equal(lo.uv, lay.uv) and np.array_equal(lo.faces, lay.faces)
    assert lo.symmetric and lo.closed_eyes
    # reversed winding in the file is re-wound to the convention; open eyes are detected
    p2 = _write_obj(tmp_path / "rev.obj", lay.vt_obj(), lay.faces[:852, ::-1])
    lo2 = load_layout(p2)
    assert np.array_equal(lo2.faces, lay.faces[:852]) and not lo2.closed_eyes


def _one_line(e: pytest.ExceptionInfo, path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_load_layout_errors(tmp_path, lay):
    vt = lay.vt_obj()
    f = lay.faces
    cases = {}
    cases["missing"] = (tmp_path / "nope.obj", "cannot read")
    p = tmp_path / "layout.png"
    p.write_bytes(b"\x89PNG")
    cases["suffix"] = (p, "unsupported")
    cases["count"] = (_write_obj(tmp_path / "count.obj", vt, f[f.max(1) < 400], n_vertices=400), "400 vertices")
    cases["novt"] = (_write_obj(tmp_path / "novt.obj", vt, f, with_vt=False), "no texture coordinates")
    p = _write_obj(tmp_path / "facenovt.obj", vt, f)
    p.write_text(p.read_text() + "f 1 2 3\n")
    cases["face_without_vt"] = (p, "no texture coordinate")
    p = _write_obj(tmp_path / "seam.obj", vt, f)
    a, b, c = f[0]
    p.write_text(p.read_text() + f"vt 0.5 0.5\nf {a + 1}/{len(vt) + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}\n")
    cases["seam"] = (p, "several different texture coordinates")
    p = tmp_path / "binary.obj"
    p.write_bytes(b"\xff\xfe\x00garbage\x81")
    cases["binary"] = (p, "cannot read")
    p = _write_obj(tmp_path / "malformed.obj", vt, f)
    p.write_text(p.read_text() + "vt zero one\n")
    cases["malformed"] = (p, "malformed line")
    p = _write_obj(tmp_path / "unused.obj", vt, f[~(f == 5).any(1)])
    cases["unused_vertex"] = (p, "vertex 6")
    p = _write_obj(tmp_path / "badindex.obj", vt, f)
    p.write_text(p.read_text() + "f 1/1 2/2 999/3\n")
    cases["bad_index"] = (p, "does not exist")
    for name, (path, reason) in cases.items():
        with pytest.raises(InputError) as e:
            load_layout(path)
        assert reason in _one_line(e, path), (name, str(e.value))
