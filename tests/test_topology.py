"""Topology of the MediaPipe face mesh: triangles from the edge list, closed holes, loops, mirror."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import MEDIAPIPE_OBJ, need
from facerefiner import topology as T
from facerefiner.layout import canonical_shape


def _und(pairs) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in pairs}


def _halfedges(tris) -> list[tuple[int, int]]:
    return [(t[i], t[(i + 1) % 3]) for t in np.asarray(tris).tolist() for i in range(3)]


def _key(t) -> tuple[int, ...]:
    t = list(t)
    k = t.index(min(t))
    return tuple(t[k:] + t[:k])


def _read_obj(path):
    v, f = [], []
    for line in path.read_text().splitlines():
        s = line.split()
        if s and s[0] == "v":
            v.append([float(x) for x in s[1:4]])
        elif s and s[0] == "f":
            f.append([int(x.split("/")[0]) - 1 for x in s[1:4]])
    return np.array(v), np.array(f, dtype=np.int64)


@pytest.fixture(scope="module")
def mp():
    from mediapipe.python.solutions import face_mesh_connections as c

    return c


@pytest.fixture(scope="module")
def obj():
    return _read_obj(need(MEDIAPIPE_OBJ))


def test_tessellation_triangles_match_edge_list(mp):
    t = T.tessellation_triangles()
    assert t.shape == (852, 3) and t.dtype == np.int64
    assert len({tuple(sorted(r)) for r in t.tolist()}) == 852
    # exactly the edges of FACEMESH_TESSELATION, no more, no fewer
    assert _und(map(tuple, T.edges_of(t).tolist())) == _und(mp.FACEMESH_TESSELATION)
    assert np.array_equal(T.tessellation_edges(), T.edges_of(t))
    # the two 3-cycles that are not faces (outlines of the degree-3 vertices 102 and 331)
    sorted_rows = {tuple(sorted(r)) for r in t.tolist()}
    assert (49, 64, 129) not in sorted_rows and (279, 294, 358) not in sorted_rows
    assert Counter(t.ravel().tolist())[102] == 3 and Counter(t.ravel().tolist())[331] == 3
    assert sorted(np.unique(t).tolist()) == list(range(468))


def test_tessellation_boundary_is_oval_eyes_and_inner_lips(mp):
    t = T.tessellation_triangles()
    assert T.euler_characteristic(t) == -2  # disk with three holes
    loops = T.boundary_loops(t)
    assert [len(l) for l in loops] == [36, 20, 16, 16]
    bd = _und(T.boundary_edges(t).tolist())
    assert len(bd) == 88
    assert _und(mp.FACEMESH_LEFT_EYE) <= bd and _und(mp.FACEMESH_RIGHT_EYE) <= bd
    assert _und(mp.FACEMESH_FACE_OVAL) <= bd
    inner = _und(mp.FACEMESH_LIPS) & bd
    assert len(inner) == 20  # the inner lip ring; the outer ring is interior
    assert bd == _und(mp.FACEMESH_LEFT_EYE) | _und(mp.FACEMESH_RIGHT_EYE) | _und(mp.FACEMESH_FACE_OVAL) | inner
    for name, loop in T.named_loops().items():
        edges = _und(zip(loop.tolist(), np.roll(loop, -1).tolist()))
        assert edges <= bd, name


def test_closed_mesh_is_an_oriented_disk():
    c = T.closed_triangles()
    h = T.hole_triangles()
    assert c.shape == (898, 3) and h.shape == (46, 3)
    assert np.array_equal(c[:852], T.tessellation_triangles()) and np.array_equal(c[852:], h)
    assert len({tuple(sorted(r)) for r in c.tolist()}) == 898
    assert T.euler_characteristic(c) == 1
    loops = T.boundary_loops(c)
    assert len(loops) == 1 and set(loops[0].tolist()) == set(T.face_oval().tolist())
    # consistent orientation: every half-edge once, interior edges once in each direction
    he = _halfedges(c)
    assert len(set(he)) == len(he)
    count = Counter((min(a, b), max(a, b)) for a, b in he)
    assert set(count.values()) == {1, 2}
    # the boundary runs along the oval in the same direction as face_oval()
    oval = T.face_oval().tolist()
    assert set(map(tuple, T.boundary_edges(c).tolist())) == set(zip(oval, oval[1:] + oval[:1]))


def test_hole_triangles_are_strips_of_the_loops():
    h = T.hole_triangles()
    groups = {
        "right_eye": set(T.right_eye_loop().tolist()),
        "left_eye": set(T.left_eye_loop().tolist()),
        "inner_lips": set(T.inner_lip_loop().tolist()),
    }
    sizes = {name: sum(set(t) <= s for t in h.tolist()) for name, s in groups.items()}
    assert sizes == {"right_eye": 14, "left_eye": 14, "inner_lips": 18}
    # each triangle has one vertex on each chain or is a corner triangle
    for side in ("left", "right"):
        up, lo = T.eye_chains(side)
        assert len(up) == len(lo) == 9 and up[0] == lo[0] and up[-1] == lo[-1]
    up, lo = T.mouth_chains()
    assert len(up) == len(lo) == 11 and up[0] == T.MOUTH_RIGHT and up[-1] == T.MOUTH_LEFT
    assert T.UPPER_LIP_INNER in up and T.LOWER_LIP_INNER in lo


def test_orientation_against_canonical_shape():
    v = canonical_shape()
    c = T.closed_triangles()
    n = np.cross(v[c[:, 1]] - v[c[:, 0]], v[c[:, 2]] - v[c[:, 0]])
    unit = n / np.linalg.norm(n, axis=1, keepdims=True)
    assert n.sum(0)[2] / np.linalg.norm(n, axis=1).sum() > 0.5  # mostly toward +z (the viewer)
    # the few not facing +z face down (inside of the upper lip, under the nose tip)
    assert np.all((unit[:, 2] > 0) | (unit[:, 1] < -0.5))
    assert (unit[:, 2] > 0).mean() > 0.97


def test_hole_triangles_are_well_shaped():
    v = canonical_shape()
    h = T.hole_triangles()
    p = v[h]
    ang = []
    for i in range(3):
        a, b = p[:, (i + 1) % 3] - p[:, i], p[:, (i + 2) % 3] - p[:, i]
        ang.append(np.degrees(np.arccos(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))))
    assert np.min(ang) > 20.0


def test_named_loops_geometry():
    v = canonical_shape()
    loops = T.named_loops()
    assert [len(loops[k]) for k in ("face_oval", "left_eye", "right_eye", "inner_lips")] == [36, 16, 16, 20]
    assert loops["face_oval"][0] == T.FOREHEAD_TOP and loops["face_oval"][1] == 109
    assert loops["left_eye"][0] == T.LEFT_EYE_OUTER and loops["right_eye"][0] == T.RIGHT_EYE_OUTER
    assert loops["inner_lips"][0] == T.MOUTH_RIGHT
    for name, loop in loops.items():  # counter-clockwise seen from the front (x right, y up)
        x, y = v[loop, 0], v[loop, 1]
        assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0, name
    # subject's left at +x, the upper eyelid above the lower one, nose tip in front
    assert v[T.LEFT_EYE_OUTER, 0] > 0 > v[T.RIGHT_EYE_OUTER, 0]
    for side in ("left", "right"):
        up, lo = T.eye_chains(side)
        assert np.all(v[up[1:-1], 1] > v[lo[1:-1], 1])
    up, lo = T.mouth_chains()
    assert np.all(v[up[1:-1], 1] > v[lo[1:-1], 1])
    assert int(np.argmax(v[:, 2])) == T.NOSE_TIP
    assert v[T.FOREHEAD_TOP, 1] == v[:, 1].max() or v[T.FOREHEAD_TOP, 1] > v[T.NOSE_TIP, 1]
    assert v[T.CHIN, 1] == v[:, 1].min()


def test_mirror_pairs_is_an_involution_and_automorphism():
    m = T.mirror_pairs()
    v = canonical_shape()
    assert m.shape == (468,) and m.dtype == np.int64
    assert np.array_equal(m[m], np.arange(468))
    mid = m == np.arange(468)
    assert np.all(v[mid, 0] == 0) and np.all(v[~mid, 0] != 0)
    assert np.array_equal(v[m] * [-1, 1, 1], v)
    assert (m[33], m[133], m[78], m[4], m[10], m[152]) == (263, 362, 308, 4, 10, 152)
    # maps triangles onto triangles (orientation reversed), except the six quads where MediaPipe's
    # diagonals are not mirror images of each other
    c = T.closed_triangles()
    defects = T.mirror_automorphism_defects(m, c)
    assert len(defects) == 12
    quads = [set(q) for q, _ in T.ASYMMETRIC_QUADS]
    for t in defects.tolist():
        assert any(set(t) <= q for q in quads)
        # its mirror image is a triangle of the other diagonal of a tessellation quad
        mq = next(set(m[list(q)].tolist()) for q in quads if set(t) <= q)
        assert mq in quads
    for q, diag in T.ASYMMETRIC_QUADS:
        assert tuple(sorted(m[list(diag)].tolist())) not in _und(map(tuple, T.edges_of(c).tolist()))
    assert len(T.mirror_automorphism_defects(m, T.hole_triangles())) == 0
    # edges map onto edges except the six asymmetric diagonals
    e = _und(map(tuple, T.edges_of(c).tolist()))
    me = _und((m[a], m[b]) for a, b in e)
    assert len(e - me) == 6
    # loops map onto each other (order reversed)
    le, re = T.left_eye_loop(), T.right_eye_loop()
    assert list(m[re]) == [le[0]] + list(le[1:][::-1])
    oval, lips = T.face_oval(), T.inner_lip_loop()
    assert list(m[oval]) == [oval[0]] + list(oval[1:][::-1])
    assert set(m[lips].tolist()) == set(lips.tolist()) and m[lips[0]] == T.MOUTH_LEFT


def test_mirror_from_canonical_obj(obj):
    v, f = obj
    m = T.mirror_from_shape(v)
    assert np.array_equal(m, T.mirror_pairs())
    assert len(T.mirror_automorphism_defects(m, f)) == 0  # MediaPipe's obj triangulation is symmetric
    with pytest.raises(ValueError):
        T.mirror_from_shape(v + np.linspace(0, 1, 468)[:, None] * [1, 0, 0])


def test_against_canonical_obj_triangles(obj):
    v, f = obj
    ours = T.closed_triangles()
    assert len(f) == len(ours) == 898
    assert T.euler_characteristic(f) == 1
    assert set(T.boundary_loops(f)[0].tolist()) == set(T.face_oval().tolist())
    eo, eu = _und(map(tuple, T.edges_of(f).tolist())), _und(map(tuple, T.edges_of(ours).tolist()))
    assert len(eo) == len(eu) == 1365
    # our hole triangles are exactly the obj's, with the same orientation
    obj_keys = {_key(t) for t in f.tolist()}
    assert all(_key(t) in obj_keys for t in T.hole_triangles().tolist())
    # shared triangles have the same orientation
    shared = [t for t in ours.tolist() if tuple(sorted(t)) in {tuple(sorted(s)) for s in f.tolist()}]
    assert len(shared) == 480 and all(_key(t) in obj_keys for t in shared)
    # every other difference is the other diagonal of the same quad (209 flips)
    by_edge: dict[tuple[int, int], list[int]] = {}
    for t in ours.tolist():
        for a, b in zip(t, t[1:] + t[:1]):
            by_edge.setdefault((min(a, b), max(a, b)), []).extend(x for x in t if x not in (a, b))
    diff = eu - eo
    assert len(diff) == 209
    for e in diff:
        opp = by_edge[e]
        assert len(opp) == 2 and (min(opp), max(opp)) in eo
