"""Topology of MediaPipe's 468-landmark face mesh: triangles, closed holes, named loops, mirror pairing.

MediaPipe ships its face mesh only as an *edge list* (``FACEMESH_TESSELATION``). This module turns
it back into triangles and closes the three holes the tessellation leaves open (the two eye
openings and the inner mouth), without adding vertices.

Conventions
-----------
* Vertex indices are MediaPipe's landmark indices 0..467 (the 10 iris landmarks 468..477 of
  ``refine_landmarks=True`` are not part of the mesh).
* Model frame: MediaPipe's canonical face, centimetres, **y up, the face looking toward +z**, the
  subject's left at +x (``LEFT_*`` means the subject's left, as in MediaPipe's names; it is on the
  *right* of a frontal photo).
* Orientation: every triangle is **counter-clockwise when seen from the front** (from +z, y up), so
  that ``cross(b - a, c - a)`` points out of the face, toward the viewer. The orientation is
  propagated topologically across shared edges and fixed globally by one known configuration:
  on the face oval the boundary runs from the forehead top 10 toward the subject's right (109).
* Loops are ordered counter-clockwise as seen from the front (as in a frontal photo: for the
  oval, from the forehead top down the subject's right side, i.e. the left side of the photo).

Facts found (and tested) on MediaPipe 0.10.21
---------------------------------------------
* The edge list has 1322 edges and 854 3-cliques. Two 3-cliques are not faces: (49, 64, 129) and
  (279, 294, 358) are the outlines of the degree-3 vertices 102 and 331. Removing them leaves 852
  triangles whose boundary is four loops: the face oval (36 edges), the two eye openings (16 each,
  exactly ``FACEMESH_LEFT_EYE`` / ``FACEMESH_RIGHT_EYE``) and the inner lip ring (20, the inner
  half of ``FACEMESH_LIPS``).
* Closing the holes adds 14 + 14 + 18 = 46 triangles: 898 in all, a topological disk
  (V - E + F = 468 - 1365 + 898 = 1), the same count as ``canonical_face_model.obj``. That obj is
  triangulated differently though: 209 of the tessellation's edges are the other diagonal of the
  same quad there (the vertex positions and the hole loops are the same).
* The tessellation is *not* exactly mirror-symmetric: in six quads MediaPipe picked diagonals that
  are not the mirror images of each other (:data:`ASYMMETRIC_QUADS`). The left-right pairing maps
  the other 840 tessellation triangles (and all hole triangles) onto triangles; for those six quads
  it maps the two triangles onto the other diagonal of the mirrored quad.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict

import numpy as np

__all__ = [
    "NUM_VERTICES", "NOSE_TIP", "FOREHEAD_TOP", "CHIN",
    "RIGHT_EYE_OUTER", "RIGHT_EYE_INNER", "LEFT_EYE_OUTER", "LEFT_EYE_INNER",
    "MOUTH_RIGHT", "MOUTH_LEFT", "UPPER_LIP_INNER", "LOWER_LIP_INNER",
    "ASYMMETRIC_QUADS",
    "tessellation_edges", "tessellation_triangles", "hole_triangles", "closed_triangles",
    "face_oval", "left_eye_loop", "right_eye_loop", "inner_lip_loop", "named_loops",
    "eye_chains", "mouth_chains",
    "mirror_pairs", "mirror_from_shape", "mirror_automorphism_defects",
    "boundary_edges", "boundary_loops", "edges_of", "orient_consistently", "euler_characteristic",
]

#: Vertices of the face mesh (MediaPipe landmarks without the iris points).
NUM_VERTICES = 468

#: Nose tip: the most protruding (largest z) vertex of the canonical face. (MediaPipe's landmark 1,
#: often called the nose tip as well, is just below it on the columella.)
NOSE_TIP = 4
#: Top of the forehead on the midline (first vertex of :func:`face_oval`).
FOREHEAD_TOP = 10
#: Bottom of the chin on the midline.
CHIN = 152
#: Eye corners (subject's right eye is on the left of a frontal photo).
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
#: Corners of the inner lip loop (mouth opening): subject's right / left.
MOUTH_RIGHT, MOUTH_LEFT = 78, 308
#: Midline vertices of the inner lip loop (upper and lower lip).
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14

#: Quads in which MediaPipe's tessellation uses a diagonal that is not the mirror image of the
#: diagonal used in the mirrored quad: (quad vertices in cyclic order, diagonal used).
ASYMMETRIC_QUADS = (
    ((59, 166, 60, 75), (75, 166)),
    ((20, 79, 239, 238), (79, 238)),
    ((30, 247, 246, 161), (161, 247)),
    ((309, 250, 458, 459), (250, 459)),
    ((467, 260, 388, 466), (260, 466)),
    ((305, 290, 392, 289), (289, 290)),
)


def _mp_connections():
    from mediapipe.python.solutions import face_mesh_connections as c  # ~0.7 s import, done once

    return c


def _undirected(pairs) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in pairs}


@functools.lru_cache(maxsize=None)
def _connections() -> dict[str, frozenset]:
    c = _mp_connections()
    return {
        "tess": frozenset(_undirected(c.FACEMESH_TESSELATION)),
        "left_eye": frozenset(_undirected(c.FACEMESH_LEFT_EYE)),
        "right_eye": frozenset(_undirected(c.FACEMESH_RIGHT_EYE)),
        "lips": frozenset(_undirected(c.FACEMESH_LIPS)),
        "oval": frozenset(_undirected(c.FACEMESH_FACE_OVAL)),
    }


def tessellation_edges() -> np.ndarray:
    """(1322, 2) int64 undirected edges (i < j, sorted) of ``FACEMESH_TESSELATION``."""
    return np.array(sorted(_connections()["tess"]), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# generic mesh helpers


def edges_of(triangles: np.ndarray) -> np.ndarray:
    """(E, 2) sorted unique undirected edges of (F, 3) triangles."""
    t = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def boundary_edges(triangles: np.ndarray) -> np.ndarray:
    """(B, 2) directed boundary half-edges (edges used by exactly one triangle), in the direction
    they have in that triangle (with consistent orientation the mesh lies on their left)."""
    t = np.asarray(triangles, dtype=np.int64)
    he = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    key = np.sort(he, axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return he[cnt[inv.ravel()] == 1]


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of an oriented manifold triangle mesh, each an ordered vertex array that
    follows the boundary half-edges; sorted by decreasing length."""
    nxt: dict[int, int] = {}
    for a, b in boundary_edges(triangles).tolist():
        if a in nxt:
            raise ValueError(f"vertex {a} starts two boundary half-edges (non-manifold or inconsistently oriented)")
        nxt[a] = b
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        v = nxt.pop(start)
        while v != start:
            loop.append(v)
            v = nxt.pop(v)
        loops.append(np.array(loop, dtype=np.int64))
    return sorted(loops, key=lambda l: (-len(l), int(l.min())))


def euler_characteristic(triangles: np.ndarray) -> int:
    """V - E + F over the vertices used by ``triangles``."""
    t = np.asarray(triangles)
    return int(len(np.unique(t)) - len(edges_of(t)) + len(t))


def orient_consistently(triangles: np.ndarray) -> np.ndarray:
    """Reorder the vertices of each triangle so that every interior edge is used once in each
    direction (breadth-first propagation from the first triangle of each connected component).
    Raises ValueError for non-manifold or non-orientable input."""
    t = np.asarray(triangles, dtype=np.int64).copy()
    by_edge: dict[tuple[int, int], list[int]] = defaultdict(list)
    for f, tri in enumerate(t.tolist()):
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            by_edge[(min(a, b), max(a, b))].append(f)
    if any(len(fs) > 2 for fs in by_edge.values()):
        raise ValueError("non-manifold: an edge is shared by more than two triangles")
    done = np.zeros(len(t), dtype=bool)
    for seed in range(len(t)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            f = queue.pop()
            tri = t[f].tolist()
            for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
                for g in by_edge[(min(a, b), max(a, b))]:
                    if g == f:
                        continue
                    o = t[g].tolist()
                    same = any((o[k], o[(k + 1) % 3]) == (a, b) for k in range(3))
                    if done[g]:
                        if same:
                            raise ValueError("the triangle mesh is not orientable")
                        continue
                    if same:
                        t[g] = t[g][::-1]
                    done[g] = True
                    queue.append(g)
    return t


def _canonical_order(t: np.ndarray) -> np.ndarray:
    """Rotate each triangle so its smallest index comes first (keeps orientation); sort rows."""
    t = np.asarray(t, dtype=np.int64)
    k = np.argmin(t, axis=1)
    rows = np.stack([np.roll(r, -int(s)) for r, s in zip(t, k)]) if len(t) else t
    return rows[np.lexsort(rows.T[::-1])]


def _fix_global_orientation(t: np.ndarray) -> np.ndarray:
    """Flip all triangles unless the half-edge FOREHEAD_TOP -> 109 (toward the subject's right,
    along the face oval) occurs: that makes triangles counter-clockwise seen from the front."""
    he = {(int(a), int(b)) for tri in t for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))}
    if (FOREHEAD_TOP, 109) in he:
        return t
    if (109, FOREHEAD_TOP) in he:
        return t[:, ::-1].copy()
    raise ValueError("edge 10-109 of the face oval is missing from the triangles")


# --------------------------------------------------------------------------------------------
# triangles


@functools.lru_cache(maxsize=None)
def _tessellation() -> np.ndarray:
    edges = _connections()["tess"]
    nbr: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        nbr[a].add(b)
        nbr[b].add(a)
    cliques = sorted({tuple(sorted((a, b, x))) for a, b in edges for x in nbr[a] & nbr[b]})
    # A 3-clique is a face unless it is a separating 3-cycle (it encloses other vertices, e.g. the
    # outline of a degree-3 vertex). Every edge of a separating triangle is shared by its two real
    # faces as well, i.e. lies in more than two cliques; real faces have at least one edge that
    # lies in at most two cliques (checked below through manifoldness and Euler's formula).
    count: dict[tuple[int, int], int] = defaultdict(int)
    for t in cliques:
        for e in itertools.combinations(t, 2):
            count[e] += 1
    faces = [t for t in cliques if not all(count[e] > 2 for e in itertools.combinations(t, 2))]
    tri = np.array(faces, dtype=np.int64)
    tri = orient_consistently(tri)  # raises on non-manifold input
    if len(edges_of(tri)) != len(edges):
        raise RuntimeError("MediaPipe tessellation: some edges belong to no recovered triangle")
    return tri


def _loop_from_edges(edges, start: int, second: int) -> list[int]:
    nbr: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        nbr[a].append(b)
        nbr[b].append(a)
    if any(len(v) != 2 for v in nbr.values()) or second not in nbr[start]:
        raise RuntimeError("not a simple loop")
    loop, prev, v = [start], start, second
    while v != start:
        loop.append(v)
        prev, v = v, next(x for x in nbr[v] if x != prev)
    if len(loop) != len(nbr):
        raise RuntimeError("edge set has more than one loop")
    return loop


def _hole_loop_edges(name: str) -> frozenset:
    c = _connections()
    if name in ("left_eye", "right_eye"):
        return c[name]
    # inner lip ring: the lip edges that are boundary edges of the tessellation
    bd = _undirected(boundary_edges(_tessellation()).tolist())
    return frozenset(e for e in c["lips"] if e in bd)


def _chains(loop: list[int], corner_a: int, corner_b: int, upper_mark: int) -> tuple[list[int], list[int]]:
    """Split a loop at two corners into (upper, lower) chains, both running corner_a -> corner_b
    (corners included). ``upper_mark`` is a vertex of the upper chain."""
    i = loop.index(corner_a)
    rot = loop[i:] + loop[:i]
    j = rot.index(corner_b)
    one = rot[: j + 1]
    two = [corner_a] + rot[j:][::-1]
    return (one, two) if upper_mark in one else (two, one)


def _strip(upper: list[int], lower: list[int], pattern: str) -> list[tuple[int, int, int]]:
    """Triangulate the region between two chains that share their end points (corners) and have
    the same number of interior vertices. Quad k lies between rungs k and k+1 (rung k joins
    upper[k] and lower[k]); ``pattern`` picks its diagonal:

    * ``"forward"``: every diagonal joins upper[k] to lower[k+1] (parallel diagonals);
    * ``"fan_out"``: mirror-symmetric about the middle of the strip, every diagonal leaving the
      upper chain on the side nearer the middle.
    """
    n = len(upper)
    if len(lower) != n or upper[0] != lower[0] or upper[-1] != lower[-1] or n < 3:
        raise RuntimeError("chains must have equal length and share their corners")
    tris = [(upper[0], upper[1], lower[1])]  # first corner
    nq = n - 3  # quads between rungs 1..n-2
    for k in range(1, n - 2):
        u0, u1, l0, l1 = upper[k], upper[k + 1], lower[k], lower[k + 1]
        if pattern == "forward" or (pattern == "fan_out" and k - 1 >= nq / 2):
            tris += [(u0, u1, l1), (u0, l1, l0)]  # diagonal u0-l1
        else:
            tris += [(u0, u1, l0), (u1, l1, l0)]  # diagonal u1-l0
    tris.append((upper[-2], upper[-1], lower[-2]))  # last corner
    return tris


def eye_chains(side: str) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) eyelid chains of the ``"left"`` or ``"right"`` eye opening, each running
    from the outer corner to the inner corner (both corners included; 9 vertices each)."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    outer, inner, top = (LEFT_EYE_OUTER, LEFT_EYE_INNER, 386) if side == "left" else (RIGHT_EYE_OUTER, RIGHT_EYE_INNER, 159)
    edges = _hole_loop_edges(f"{side}_eye")
    first = next(b if a == outer else a for a, b in sorted(edges) if outer in (a, b))
    up, lo = _chains(_loop_from_edges(edges, outer, first), outer, inner, top)
    return np.array(up, dtype=np.int64), np.array(lo, dtype=np.int64)


def mouth_chains() -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) chains of the inner lip loop, each from the subject's right corner
    :data:`MOUTH_RIGHT` to the left corner :data:`MOUTH_LEFT` (corners included; 11 each)."""
    edges = _hole_loop_edges("lips")
    first = next(b if a == MOUTH_RIGHT else a for a, b in sorted(edges) if MOUTH_RIGHT in (a, b))
    loop = _loop_from_edges(edges, MOUTH_RIGHT, first)
    up, lo = _chains(loop, MOUTH_RIGHT, MOUTH_LEFT, UPPER_LIP_INNER)
    return np.array(up, dtype=np.int64), np.array(lo, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def _holes() -> np.ndarray:
    tris: list[tuple[int, int, int]] = []
    # Eyes: parallel diagonals from the outer toward the inner corner (the pattern of MediaPipe's
    # own canonical_face_model.obj; the eyelid vertices sit in vertical pairs there, so every quad
    # is a trapezoid and both diagonals are equally good). Mirror-consistent since both eyes are
    # walked from their outer corner.
    for side in ("right", "left"):
        up, lo = eye_chains(side)
        tris += _strip(up.tolist(), lo.tolist(), "forward")
    # Mouth: symmetric about the midline rung 13-14.
    up, lo = mouth_chains()
    tris += _strip(up.tolist(), lo.tolist(), "fan_out")
    return np.array(tris, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def _closed() -> tuple[np.ndarray, int]:
    tess = _tessellation()
    holes = _holes()
    both = orient_consistently(np.concatenate([tess, holes]))
    both = _fix_global_orientation(both)
    n = len(tess)
    tess_o, holes_o = _canonical_order(both[:n]), _canonical_order(both[n:])
    out = np.concatenate([tess_o, holes_o])
    out.setflags(write=False)
    return out, n


def tessellation_triangles() -> np.ndarray:
    """(852, 3) int64 triangles of MediaPipe's ``FACEMESH_TESSELATION`` (eyes and mouth open),
    counter-clockwise seen from the front. Rows sorted, smallest index first in each row."""
    tri, n = _closed()
    return tri[:n].copy()


def hole_triangles() -> np.ndarray:
    """(46, 3) int64 triangles closing the eye openings (14 each) and the mouth (18), made from
    the loop vertices only (strips between the upper and lower chains), same orientation."""
    tri, n = _closed()
    return tri[n:].copy()


def closed_triangles() -> np.ndarray:
    """(898, 3) int64: :func:`tessellation_triangles` followed by :func:`hole_triangles`. A
    topological disk whose only boundary is the face oval."""
    return _closed()[0].copy()


# --------------------------------------------------------------------------------------------
# named loops


def _ccw_loop(name: str, start: int) -> np.ndarray:
    """A loop, counter-clockwise seen from the front, starting at ``start``."""
    tess = tessellation_triangles()
    if name == "oval":
        edges = _connections()["oval"]
    else:
        edges = _hole_loop_edges(name)
    # Direction from the oriented tessellation: the boundary half-edges leave the mesh on their
    # left; that is counter-clockwise around the oval and clockwise around a hole.
    bd = {(int(a), int(b)) for a, b in boundary_edges(tess)}
    nxt = next(b for (a, b) in sorted(bd) if a == start and (min(a, b), max(a, b)) in edges)
    loop = _loop_from_edges(edges, start, nxt)
    if name != "oval":
        loop = [loop[0]] + loop[1:][::-1]
    return np.array(loop, dtype=np.int64)


def face_oval() -> np.ndarray:
    """(36,) the face oval = the outer boundary of the closed mesh, counter-clockwise seen from the
    front, starting at the forehead top 10 and going down the subject's right side."""
    return _ccw_loop("oval", FOREHEAD_TOP)


def left_eye_loop() -> np.ndarray:
    """(16,) the subject's left eye opening, counter-clockwise seen from the front, starting at its
    outer corner 263 (then up along the upper lid)."""
    return _ccw_loop("left_eye", LEFT_EYE_OUTER)


def right_eye_loop() -> np.ndarray:
    """(16,) the subject's right eye opening, counter-clockwise seen from the front, starting at its
    outer corner 33 (then down along the lower lid)."""
    return _ccw_loop("right_eye", RIGHT_EYE_OUTER)


def inner_lip_loop() -> np.ndarray:
    """(20,) the inner lip loop (mouth opening), counter-clockwise seen from the front, starting at
    the subject's right corner 78 (then along the lower lip)."""
    return _ccw_loop("lips", MOUTH_RIGHT)


def named_loops() -> dict[str, np.ndarray]:
    """``{"face_oval", "left_eye", "right_eye", "inner_lips"}`` -> ordered loops (see above)."""
    return {"face_oval": face_oval(), "left_eye": left_eye_loop(), "right_eye": right_eye_loop(),
            "inner_lips": inner_lip_loop()}


# --------------------------------------------------------------------------------------------
# mirror pairing


def mirror_pairs() -> np.ndarray:
    """(468,) int64 left-right vertex pairing (an involution; midline vertices map to themselves),
    as stored in the shipped UV layout asset (derived there from the canonical face)."""
    from .layout import _asset_arrays  # the asset is the single source at run time

    m = np.array(_asset_arrays()["mirror"], dtype=np.int64)
    return m


def mirror_from_shape(vertices: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Left-right pairing from a (468, 3) shape that is symmetric under x -> -x: each vertex is
    paired with the vertex nearest to its reflection. Raises ValueError if the result is not an
    involution or a reflected vertex has no partner within ``tol`` (relative to the shape size)."""
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, dtype=np.float64)
    if v.shape != (NUM_VERTICES, 3):
        raise ValueError(f"vertices: expected shape (468, 3), got {v.shape}")
    d, m = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    scale = float(np.ptp(v, axis=0).max())
    if d.max() > tol * scale:
        raise ValueError(f"shape is not left-right symmetric (worst mismatch {d.max():.3g})")
    m = m.astype(np.int64)
    if not np.array_equal(m[m], np.arange(len(v))):
        raise ValueError("nearest-reflection pairing is not an involution")
    return m


def mirror_automorphism_defects(mirror: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles (rows of ``triangles``) whose mirror image is not a triangle of ``triangles`` with
    reversed orientation. Empty for an exact orientation-reversing automorphism."""
    t = np.asarray(triangles, dtype=np.int64)
    m = np.asarray(mirror, dtype=np.int64)

    def key(r):
        r = list(r)
        k = r.index(min(r))
        return tuple(r[k:] + r[:k])

    oriented = {key(r) for r in t.tolist()}
    bad = [r for r in t.tolist() if key(m[r][::-1].tolist()) not in oriented]
    return np.array(bad, dtype=np.int64).reshape(-1, 3)
