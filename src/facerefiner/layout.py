"""UV layouts for the 468-vertex MediaPipe face mesh.

Conventions
-----------
* ``uv`` is in **image convention**: ``u`` to the right, ``v`` down, ``(0, 0)`` the top-left corner
  of the texture image and ``(1, 1)`` the bottom-right corner (texel ``(i, j)`` of an ``S x S``
  texture covers ``[j, j + 1] / S x [i, i + 1] / S``). OBJ files use ``(u, 1 - v)``
  (:meth:`UVLayout.vt_obj`).
* Triangle orientation: ``faces`` are counter-clockwise seen from the front of the face (outward
  normals, see :mod:`facerefiner.topology`), and on the texture they are counter-clockwise **as
  the texture image is displayed** (it shows the face upright, like the photo). Numerically:
  :func:`signed_areas` computes the area in OBJ convention ``(u, 1 - v)`` (v up), where every
  triangle of a valid layout is positive; the plain cross product in image coordinates (v down)
  is negative.
* The shipped layout (:func:`default_layout`) is upright (forehead at the top, small ``v``), with the
  subject's right side on the left (small ``u``) like an unwrapped frontal photo, and exactly
  left-right symmetric: ``u[mirror] == 1 - u`` and ``v[mirror] == v`` bit for bit, in float64 and
  in float32 (all coordinates are multiples of 2**-20), midline vertices at ``u == 0.5``. Flipping
  the texture image horizontally therefore maps the texel of every vertex onto the texel of its
  mirror vertex.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "UVLayout", "default_layout", "canonical_shape", "load_layout", "layout_metadata",
    "signed_areas", "area_ratios", "overlap_free", "ASSET_PATH",
]

#: The shipped layout, written by ``scripts/make_uv_layout.py``.
ASSET_PATH = Path(__file__).resolve().parent / "assets" / "uv_layout.npz"

_NUM_VERTICES = 468


@dataclass(frozen=True, eq=False)
class UVLayout:
    """A UV layout of a head model's mesh (MediaPipe's 468-vertex face mask by default).

    Attributes:
        uv: (V, 2) float64 per-vertex texture coordinates, image convention (u right, v down).
        faces: (F, 3) int64 triangles, counter-clockwise seen from the front of the face.
        mirror: (V,) int64 left-right vertex pairing (involution), or None if unknown.
        symmetric: True when ``u[mirror] == 1 - u`` and ``v[mirror] == v`` exactly.
        closed_eyes: True when the faces also cover the eye openings and the mouth.
        name: a short label ("facerefiner-symmetric", "ict-facekit", or the file name of a loaded layout).
        features: ``{name: (n,) int64 vertex indices}`` of the regions where a face differs from
            skin (eyes, brows, lips, nose, and for a head the eyeballs, teeth, mouth interior);
            None: MediaPipe's sets for a 468-vertex layout (:func:`feature_vertices`), else none.
        weld: (V,) int64 index of the model vertex each layout vertex is a copy of (a vertex on a
            UV seam has one copy per chart); None when every vertex is its own. Normals are
            averaged over the copies of a vertex, so the shading has no seams.
        parts: (F,) int64 label of the surface each triangle belongs to (skin, each eyeball, teeth,
            mouth interior, ...), or None (one surface). A texel is seen in the photo only where
            the nearest surface at its pixel is its own part: an eyeball just behind the lids
            does not take the lids' colour, whatever the depth tolerance.
        face: (n,) int64 indices of the vertices of the face proper (brows to chin, cheek to cheek:
            what a face detector boxes) for a head that has more (ears, neck, scalp); None: every
            vertex is face (a face mask). See :meth:`face_points`.
        sampled: (F,) bool, the triangles whose texels may take the photo's colour (unwrap leaves
            the others out of V, and the synthesis fills them); None: every triangle.

    Instances compare and hash by identity, so they can be used as cache keys; treat the arrays as
    read-only (:func:`default_layout` returns one shared instance).
    """

    uv: np.ndarray
    faces: np.ndarray
    mirror: np.ndarray | None
    symmetric: bool
    closed_eyes: bool
    name: str
    features: dict | None = None
    weld: np.ndarray | None = None
    parts: np.ndarray | None = None
    face: np.ndarray | None = None
    sampled: np.ndarray | None = None

    def __post_init__(self) -> None:
        dtypes = {"uv": np.float64, "sampled": bool}
        for field in ("uv", "faces", "mirror", "weld", "parts", "face", "sampled"):
            a = getattr(self, field)
            if a is not None:
                # own copy (writable, so that torch.as_tensor does not warn); do not modify in place:
                # default_layout() is a shared cached instance
                object.__setattr__(self, field, np.array(a, dtype=dtypes.get(field, np.int64)))
        if self.uv.ndim != 2 or self.uv.shape[1] != 2:
            raise ValueError(f"uv: expected shape (V, 2), got {self.uv.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces: expected shape (F, 3), got {self.faces.shape}")
        if self.sampled is not None and self.sampled.shape != (len(self.faces),):
            raise ValueError(f"sampled: expected shape ({len(self.faces)},), got {self.sampled.shape}")

    @property
    def num_vertices(self) -> int:
        return int(self.uv.shape[0])

    def face_points(self, points: np.ndarray) -> np.ndarray:
        """The rows of ``points`` ((V, k), one per vertex of this layout) that belong to the face
        proper (:attr:`face`; all of them for a face mask), e.g. to box the face for a detector."""
        points = np.asarray(points)
        if points.shape[0] != self.num_vertices:
            raise ValueError(f"points: expected {self.num_vertices} rows (one per vertex), got {points.shape[0]}")
        return points if self.face is None else points[self.face]

    def uv_tensor(self, device="cpu", dtype=None):
        """(V, 2) torch tensor of ``uv`` (image convention); float32 unless ``dtype`` is given."""
        import torch

        return torch.as_tensor(self.uv, dtype=dtype or torch.float32, device=device).clone()

    def faces_tensor(self, device="cpu"):
        """(F, 3) int64 torch tensor of ``faces``."""
        import torch

        return torch.as_tensor(self.faces, dtype=torch.int64, device=device).clone()

    def vt_obj(self) -> np.ndarray:
        """(V, 2) float64 texture coordinates in OBJ convention ``(u, 1 - v)`` (v up)."""
        out = self.uv.copy()
        out[:, 1] = 1.0 - out[:, 1]
        return out


# --------------------------------------------------------------------------------------------
# geometry helpers (shared by the generator script and the tests)


def signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) signed UV areas in OBJ convention ``(u, 1 - v)``: positive for triangles that are
    counter-clockwise on the displayed texture (the orientation of a valid layout)."""
    uv = np.asarray(uv, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = uv[f[:, 0]], uv[f[:, 1]], uv[f[:, 2]]
    cross_image = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    return -0.5 * cross_image  # v -> 1 - v flips the sign


def area_ratios(uv: np.ndarray, faces: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(F,) per-triangle area distortion: the triangle's share of the total UV area divided by its
    share of the total 3D surface area (1 everywhere = perfectly even texel density)."""
    a = np.abs(signed_areas(uv, faces))
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a3 = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    return (a / a.sum()) / (a3 / a3.sum())


def _segments_cross(p: np.ndarray, q: np.ndarray) -> bool:
    """True if any two non-adjacent segments of the closed polygon ``p`` (N, 2) intersect
    (``q`` = ``p`` rolled by one)."""
    n = len(p)
    for i in range(n):
        a, b = p[i], q[i]
        j = np.arange(i + 2, n if i > 0 else n - 1)  # skip self and both neighbours
        if len(j) == 0:
            continue
        c, d = p[j], q[j]

        def orient(x, y, z):
            return (y[..., 0] - x[..., 0]) * (z[..., 1] - x[..., 1]) - (y[..., 1] - x[..., 1]) * (z[..., 0] - x[..., 0])

        o1, o2 = orient(a, b, c), orient(a, b, d)
        o3, o4 = orient(c, d, a), orient(c, d, b)
        if np.any((o1 * o2 <= 0) & (o3 * o4 <= 0)):
            return True
    return False


def overlap_free(uv: np.ndarray, faces: np.ndarray, rtol: float = 1e-9) -> bool:
    """True if the layout of a disk-topology mesh is a bijection onto its image: every triangle
    has positive :func:`signed_areas`, the boundary is a simple polygon (no self-intersection) and
    the triangles' areas add up to the area the boundary encloses (a locally injective map of a
    disk with a simple boundary curve is then globally injective)."""
    from .topology import boundary_loops

    uv = np.asarray(uv, dtype=np.float64)
    areas = signed_areas(uv, faces)
    if not np.all(areas > 0):
        return False
    loops = boundary_loops(faces)
    if len(loops) != 1:
        raise ValueError(f"overlap_free needs a disk (one boundary loop), got {len(loops)} loops")
    p = uv[loops[0]] * np.array([1.0, -1.0])  # OBJ-like orientation (v up)
    q = np.roll(p, -1, axis=0)
    enclosed = 0.5 * np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1])
    if _segments_cross(p, q):
        return False
    return bool(abs(enclosed - areas.sum()) <= rtol * abs(enclosed))


# --------------------------------------------------------------------------------------------
# the shipped layout


def overlap_share(uv: np.ndarray, faces: np.ndarray, size: int = 2048) -> float:
    """Share of the layout's UV area covered more than once: ``1 - covered / sum of areas``, with
    the covered area counted as the texels of a ``size`` x ``size`` raster (pixel centres inside a
    triangle). About 0 (within the raster's edge error, ~ perimeter / size) for a layout whose
    charts do not overlap, whatever its number of charts; works for layouts with many boundaries
    where :func:`overlap_free` needs a disk."""
    import torch

    from . import render as R

    uv = np.asarray(uv, dtype=np.float64)
    total = float(np.abs(signed_areas(uv, faces)).sum()) * size * size
    pos = torch.as_tensor(np.concatenate([uv * size, np.zeros((len(uv), 1))], 1), dtype=torch.float32)
    rast = R.rasterize(pos, torch.as_tensor(np.asarray(faces), dtype=torch.int64), (size, size))
    covered = float((rast[0, ..., 3] > 0).sum())
    return 1.0 - covered / total


@functools.lru_cache(maxsize=None)
def _asset_arrays() -> dict:
    if not ASSET_PATH.exists():
        raise FileNotFoundError(f"{ASSET_PATH} is missing (regenerate it with scripts/make_uv_layout.py)")
    with np.load(ASSET_PATH, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for a in out.values():
        a.setflags(write=False)
    return out


def layout_metadata() -> dict:
    """The shipped layout's metadata (method, statistics, source and licence note)."""
    return json.loads(str(_asset_arrays()["meta"]))


@functools.lru_cache(maxsize=None)
def default_layout() -> UVLayout:
    """The shipped symmetric layout (closed eyes and mouth), loaded once."""
    z = _asset_arrays()
    return UVLayout(uv=z["uv"], faces=z["faces"], mirror=z["mirror"], symmetric=True, closed_eyes=True,
                    name="facerefiner-symmetric")


def canonical_shape() -> np.ndarray:
    """(468, 3) float64 symmetrised MediaPipe canonical face in cm (y up, face toward +z)."""
    return np.array(_asset_arrays()["canonical"], dtype=np.float64)


def _is_symmetric(uv: np.ndarray, mirror: np.ndarray) -> bool:
    return bool(np.array_equal(uv[mirror, 0], 1.0 - uv[:, 0]) and np.array_equal(uv[mirror, 1], uv[:, 1]))


def load_layout(path: str | Path | None = None) -> UVLayout:
    """A UV layout: ``None`` for :func:`default_layout`, or an ``.obj`` file with ``vt`` and
    ``f v/vt`` entries for the same 468-vertex topology (MediaPipe's landmark order, e.g.
    MediaPipe's ``canonical_face_model.obj``).

    For an obj, the per-vertex UVs are converted from OBJ convention (v up) to image convention
    (v down); its triangles are kept (polygons are fan-triangulated), re-wound if needed so that
    they agree with the shipped mesh's orientation (counter-clockwise seen from the front);
    ``mirror`` is the shipped pairing, ``symmetric`` is checked exactly, and ``closed_eyes`` says
    whether the triangles also cover the eye openings.

    Raises:
        InputError: unreadable file, not an .obj, no ``vt`` / faces without ``vt``, a vertex count
            other than 468, indices out of range, a vertex without UV or with several different UVs.
    """
    if path is None:
        return default_layout()
    p = Path(path)
    if p.suffix.lower() != ".obj":
        raise InputError(f"{p}: unsupported UV layout file (expected a Wavefront .obj with vt)")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read the file ({type(e).__name__}: {e})") from None
    n_v, vts, faces, fvts = 0, [], [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.split()
        if not s or s[0].startswith("#"):
            continue
        try:
            if s[0] == "v":
                n_v += 1
            elif s[0] == "vt":
                vts.append((float(s[1]), float(s[2]) if len(s) > 2 else 0.0))
            elif s[0] == "f":
                if len(s) < 4:
                    raise ValueError("a face needs at least 3 vertices")
                vi, ti = [], []
                for tok in s[1:]:
                    parts = tok.split("/")
                    a = int(parts[0])
                    vi.append(a - 1 if a > 0 else n_v + a)
                    if len(parts) < 2 or parts[1] == "":
                        ti.append(None)
                    else:
                        t = int(parts[1])
                        ti.append(t - 1 if t > 0 else len(vts) + t)
                for k in range(1, len(vi) - 1):  # fan-triangulate polygons
                    faces.append((vi[0], vi[k], vi[k + 1]))
                    fvts.append((ti[0], ti[k], ti[k + 1]))
        except (ValueError, IndexError) as e:
            raise InputError(f"{p}: malformed line {lineno} ({e})") from None
    if n_v != _NUM_VERTICES:
        raise InputError(f"{p}: has {n_v} vertices, expected {_NUM_VERTICES} (MediaPipe face mesh topology)")
    if not vts:
        raise InputError(f"{p}: has no texture coordinates (vt)")
    if not faces:
        raise InputError(f"{p}: has no faces (f)")
    f = np.array(faces, dtype=np.int64)
    if f.min() < 0 or f.max() >= n_v:
        raise InputError(f"{p}: a face refers to a vertex that does not exist")
    uv = np.full((n_v, 2), np.nan)
    for tri, ttri in zip(faces, fvts):
        for v, t in zip(tri, ttri):
            if t is None:
                raise InputError(f"{p}: face vertex {v + 1} has no texture coordinate (expected f v/vt)")
            if not 0 <= t < len(vts):
                raise InputError(f"{p}: a face refers to texture coordinate {t + 1}, which does not exist")
            val = vts[t]
            if np.isnan(uv[v, 0]):
                uv[v] = val
            elif uv[v, 0] != val[0] or uv[v, 1] != val[1]:
                raise InputError(f"{p}: vertex {v + 1} has several different texture coordinates "
                                 "(UV seams are not supported: one vt per vertex)")
    missing = np.flatnonzero(np.isnan(uv[:, 0]))
    if len(missing):
        raise InputError(f"{p}: vertex {missing[0] + 1} is in no face, so it has no texture coordinate")
    uv[:, 1] = 1.0 - uv[:, 1]
    f = _orient_like_default(f)
    mirror = np.array(_asset_arrays()["mirror"], dtype=np.int64)
    return UVLayout(uv=uv, faces=f, mirror=mirror, symmetric=_is_symmetric(uv, mirror),
                    closed_eyes=_covers_eyes(f), name=p.name)


def _orient_like_default(faces: np.ndarray) -> np.ndarray:
    """Wind ``faces`` consistently and like the shipped faces (majority vote over shared edges).
    Left unchanged when it cannot be decided (non-manifold input, no shared edges)."""
    from .topology import orient_consistently

    try:
        f = orient_consistently(faces)
    except ValueError:
        f = np.asarray(faces, dtype=np.int64)
    ref = np.asarray(_asset_arrays()["faces"])
    ref_he = {(int(a), int(b)) for t in ref for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    same = opposite = 0
    for t in f.tolist():
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            same += (a, b) in ref_he
            opposite += (b, a) in ref_he
    return f[:, ::-1].copy() if opposite > same else f


def _covers_eyes(faces: np.ndarray) -> bool:
    """True if no edge of the eye loops is a boundary edge (or missing) in ``faces``."""
    z = _asset_arrays()
    counts: dict[tuple[int, int], int] = {}
    for t in np.asarray(faces).tolist():
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            k = (min(a, b), max(a, b))
            counts[k] = counts.get(k, 0) + 1
    for name in ("left_eye", "right_eye"):
        loop = z[name].tolist()
        for a, b in zip(loop, loop[1:] + loop[:1]):
            if counts.get((min(a, b), max(a, b)), 0) < 2:
                return False
    return True


#: Facial features of the 468-vertex topology, as MediaPipe's face-mesh connection sets name them
#: (``mediapipe.solutions.face_mesh_connections``): where a face differs from skin.
FEATURES = ("LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW", "LIPS", "NOSE")
#: Margin around each feature's outline, as a fraction of S (the lids and crease around an eye, the
#: brow's hairs past its outline, the lip line).
FEATURE_MARGIN = 1 / 32


@functools.lru_cache(maxsize=1)
def feature_vertices() -> dict[str, np.ndarray]:
    """The vertex indices of each facial feature (:data:`FEATURES`), from MediaPipe's connection
    sets (bundled in the pinned wheel)."""
    import mediapipe as mp

    C = mp.solutions.face_mesh_connections

    return {name: np.unique(np.array(sorted(getattr(C, f"FACEMESH_{name}")), dtype=np.int64))
            for name in FEATURES}


def layout_features(layout: UVLayout) -> dict[str, np.ndarray]:
    """The layout's regions that are not skin: ``layout.features``, or MediaPipe's sets
    (:func:`feature_vertices`) for a 468-vertex layout without them, else ``{}``."""
    if layout.features is not None:
        return dict(layout.features)
    return feature_vertices() if layout.num_vertices == _NUM_VERTICES else {}


def feature_masks(layout: UVLayout, size: int, margin: float = FEATURE_MARGIN) -> dict[str, np.ndarray]:
    """Texels of each region of :func:`layout_features` (eyes, brows, lips, nose, ...).

    Each feature is the convex hull of its vertices' UVs in each chart they lie in (a head's teeth
    or eyeballs are many charts: one hull over them all would cover the face between), grown by
    ``margin * size`` texels.

    Args:
        layout: any layout; one without features gives none.
        size: texture size S.

    Returns:
        ``{name: (S, S) bool}`` (read-only arrays, computed once per layout, size and margin).
    """
    return dict(_feature_masks(layout, int(size), float(margin)))


@functools.lru_cache(maxsize=32)
def _feature_masks(layout: UVLayout, size: int, margin: float) -> dict[str, np.ndarray]:
    import cv2
    import scipy.ndimage as ndi

    r = max(1, int(round(margin * size)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = {}
    chart = vertex_charts(layout)
    # several charts: a feature grows only inside its own charts, not into a neighbour's
    texel_chart = texel_charts(layout, size) if chart.max() > 0 else None
    for name, idx in layout_features(layout).items():
        idx = np.asarray(idx)
        if len(idx) < 3:
            continue
        m = np.zeros((size, size), np.uint8)
        for c in np.unique(chart[idx]):
            part = idx[chart[idx] == c]
            if len(part) < 3:
                continue
            xy = layout.uv[part] * size - 0.5
            hull = cv2.convexHull(np.round(xy * 16).astype(np.int32))
            cv2.fillConvexPoly(m, hull, 1, lineType=cv2.LINE_8, shift=4)
        out[name] = cv2.dilate(m, disc).astype(bool)
        if texel_chart is not None:
            # the chart test drops the texels no triangle's raster reaches (an eyeball's pole, where
            # many thin triangles meet): a texel the feature encloses is the feature's (the photo's
            # pixels still land there, and as "skin" amid an iris they made the eye an occluder)
            out[name] = ndi.binary_fill_holes(out[name] & np.isin(texel_chart, np.unique(chart[idx])))
        out[name].flags.writeable = False
    return out


@functools.lru_cache(maxsize=16)
def texel_charts(layout: UVLayout, size: int) -> np.ndarray:
    """(S, S) int32 the chart (:func:`vertex_charts`) of each texel whose centre a triangle covers,
    -1 elsewhere (row 0 at v = 0). Read-only; computed once per layout and size."""
    import cv2

    chart = vertex_charts(layout)
    out = np.full((size, size), -1, np.int32)
    pts = np.round((layout.uv[layout.faces] * size - 0.5) * 16).astype(np.int32)  # (F, 3, 2)
    for t, c in zip(pts, chart[layout.faces[:, 0]]):
        cv2.fillConvexPoly(out, t, int(c), lineType=cv2.LINE_8, shift=4)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def vertex_charts(layout: UVLayout) -> np.ndarray:
    """(V,) int64 the chart of each vertex: the connected pieces of the layout's triangles in UV
    space (vertices joined by a triangle's edge; the copies of a seam vertex are in different
    charts). Computed once per layout."""
    import scipy.sparse as sp
    import scipy.sparse.csgraph as cg

    f = layout.faces
    r = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    c = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    n = layout.num_vertices
    _, lab = cg.connected_components(sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)), directed=False)
    return lab.astype(np.int64)


@functools.lru_cache(maxsize=32)
def face_region_mask(layout: UVLayout, size: int) -> np.ndarray:
    """(S, S) bool, the texels of the face proper: the convex hull of the UVs of
    :attr:`UVLayout.face` (forehead to chin; not a head's neck, ears or scalp), or every texel for
    a face mask (``face`` None). Read-only, computed once per layout and size."""
    import cv2

    if layout.face is None:
        m = np.ones((size, size), bool)
    else:
        m8 = np.zeros((size, size), np.uint8)
        hull = cv2.convexHull(np.round((layout.uv[layout.face] * size - 0.5) * 16).astype(np.int32))
        cv2.fillConvexPoly(m8, hull, 1, lineType=cv2.LINE_8, shift=4)
        m = m8.astype(bool)
    m.flags.writeable = False
    return m


def feature_mask(layout: UVLayout, size: int, margin: float = FEATURE_MARGIN) -> np.ndarray:
    """The union of :func:`feature_masks`: (S, S) bool, all False for a layout without features."""
    out = np.zeros((size, size), bool)
    for m in feature_masks(layout, size, margin).values():
        out |= m
    return out
