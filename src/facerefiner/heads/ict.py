"""The ICT-FaceKit Light head (USC ICT, MIT licence), fitted to MediaPipe's landmarks.

The asset ``assets/ict_head.npz`` is built once by ``scripts/make_ict_asset.py`` (its docstring
says how): 24,591 vertices (face, ears, neck, back of the head and scalp, mouth and eye sockets,
gums and tongue, teeth, eyeballs), 100 identity and 53 expression modes (float16, cm), one atlas
with every chart in its own square, and the correspondence of MediaPipe's 468 face-mesh vertices
(a triangle and barycentrics each) and its two iris centres (ICT's iris front vertices).

The fit (:meth:`ICTHead.fit`): ``landmark_n ~= s R X_n(w) + t`` for the 470 corresponding points,
``X(w) = neutral + identity @ w_id + expression @ w_ex``, by :func:`facerefiner.fit.fit_morphable`:
identity weights with the N(0, 1) prior (ridge :data:`REG_IDENTITY`, the landmarks' noise variance
in cm^2), expression weights in [0, 1] (ridge :data:`REG_EXPRESSION`). MediaPipe's z (depth in
pixels) is used as given. The camera is the same orthographic OpenCV camera as the face mask's.
ICT's eyeballs are rigid (its ``eyeLook*`` blendshapes move the lids only), so after the fit each
eyeball is turned about its centre until its iris lies on the photo's iris landmark
(:func:`aim_eyeball`): a person looking to the side gets eyes looking to the side, and the iris
chart samples the photo's iris instead of its sclera.

Hair is not modelled: the scalp is skin (the synthesis fills it with the person's skin).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import HeadModel

#: The atlas's name (priors record it): "-2" since the eye caps were widened (:data:`EYE_CAP_POWER`).
LAYOUT_NAME = "ict-facekit-2"
ASSET_PATH = Path(__file__).resolve().parents[1] / "assets" / "ict_head.npz"
LICENCE_PATH = Path(__file__).resolve().parents[1] / "assets" / "ICT-FaceKit-LICENSE.txt"

#: Ridge of the identity weights (cm^2; the landmarks' noise variance over the N(0, 1) prior).
REG_IDENTITY = 0.05
#: Ridge of the expression weights (cm^2), which are also bounded to [0, 1].
REG_EXPRESSION = 0.02
#: Weight of each iris centre relative to a face-mesh landmark in the shape fit: 0, since an iris
#: moves with the gaze, which none of the model's modes has (its ``eyeLook*`` shapes move the lids):
#: weighted 4, a look to the side bent the identity modes to follow it (a synthetic eye turned 20
#: degrees came back 7 degrees of it as shape). The irises are met by turning the eyeballs after
#: the fit instead (:meth:`ICTHead.aim_eyes`).
IRIS_WEIGHT = 0.0
#: Gauss-Newton steps of the fit (it converges in 4 to 6).
FIT_ITERATIONS = 10
#: Weight of MediaPipe's depth (z) residuals relative to x and y (its depth is regressed, less sure
#: than the image coordinates). Median 2D landmark error over the 19 dev photos, of the outer-eye
#: distance: 1.54 % at 1.0, 1.47 % at 0.25, 1.42 % at 0.1, 1.38 % at 0.05 (/tmp fit sweep, dev CPU).
DEPTH_WEIGHT = 0.1
#: MediaPipe's face-oval landmarks (the face mask's outline, forehead to chin).
MP_FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
#: Weight of each face-oval landmark relative to the others. Weighted 1, the fitted face stood out
#: past the photo's outline (its oval points 1.05 % of the outer-eye distance outward, median over
#: the 19 dev photos; 2.2 to 2.7 % at the top of deca_ex_img0392's and deca_ex_image02673's
#: forehead): the render put skin over the photo's hairline and background. At 4: 0.38 % outward,
#: the oval's median error 2.23 -> 1.26 %, all landmarks' 1.42 -> 1.43 % (8: 0.22 %, 1.48 %).
OVAL_WEIGHT = 4.0
#: ICT's mouth and eye socket vertices (inclusive), the interior of the M_BackHead material.
SOCKETS = (11248, 14061)
#: MediaPipe's inner-lip landmarks facing each other (upper, lower), from the middle outward.
MP_LIP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402), (80, 88), (310, 318))
#: Weight of each inner-lip pair's gap (:func:`facerefiner.fit.fit_morphable`'s ``pairs``)
#: relative to a landmark. The model's lips are thinner than most photos': fitted to the
#: landmarks alone it opened the jaw to make them taller, and a closed mouth showed a strip of
#: teeth (ffhq_00128: 0.26 cm between the lips, 13 px, where the photo's inner lips meet).
LIP_PAIR_WEIGHT = 20.0
#: MediaPipe's iris-centre landmark indices (one per eye; which eye is decided per photo).
MP_IRIS = (468, 473)
#: MediaPipe's outer eye corners: 33 (subject's right), 263 (subject's left).
MP_EYE_OUTER = (33, 263)
#: An eyeball turns at most this many degrees to meet the photo's iris (a landmark far off the
#: eye is an error of the detector's, not a gaze).
MAX_EYE_TURN = 35.0
#: The sclera charts' UV radius is remapped r -> R (r / R) ** EYE_CAP_POWER about the front pole
#: (:func:`widen_cap`). ICT draws each eyeball's front as a disk whose radius grows with the angle
#: from the front, so the cap a photo shows (within 40 degrees) had 14 % of the chart: 20 x 20
#: texels at S = 512 for an eye 60 pixels wide in a 1024-pixel photo. At 0.4 it has 46 %.
EYE_CAP_POWER = 0.4


def widen_cap(uv: np.ndarray, centre: np.ndarray, power: float) -> np.ndarray:
    """Remap a disk-shaped chart's uv radially about ``centre``: ``r -> R (r / R) ** power`` with R
    the largest radius, so the middle of the chart gets more texels (``power`` < 1) and the rim
    fewer. Monotonic in r, so the chart's triangles keep their orientation and do not overlap.

    Args:
        uv: (N, 2) float64 the chart's vertices' uv.
        centre: (2,) the fixed point.
        power: in (0, 1] (1: unchanged).

    Returns:
        (N, 2) float64, inside the same disk of radius R about ``centre``.
    """
    if not 0.0 < power <= 1.0:
        raise ValueError(f"power: expected in (0, 1], got {power}")
    d = np.asarray(uv, np.float64) - centre
    r = np.linalg.norm(d, axis=1)
    R = r.max()
    if R <= 0:
        return np.array(uv, np.float64)
    scale = np.where(r > 0, (np.maximum(r, 1e-300) / R) ** power * R / np.maximum(r, 1e-300), 1.0)
    return centre + d * scale[:, None]


def aim_eyeball(points: np.ndarray, centre: np.ndarray, tip: np.ndarray, target_xy: np.ndarray, s: float,
                R: np.ndarray, t: np.ndarray, max_deg: float = MAX_EYE_TURN) -> tuple[np.ndarray, float]:
    """Turn a rigid ball of points about its centre so that its tip projects onto a target.

    The observation frame is the landmarks' (``obs = s R p + t``; x, y in pixels, z away from the
    camera, as MediaPipe's). The target is the ray through ``target_xy`` along the camera's axis;
    the tip goes to where that ray enters the ball's sphere (radius ``|tip - centre|``) on the
    camera's side, or, when the ray misses the sphere, to the sphere's silhouette nearest to it;
    the turn is the shortest rotation taking the tip there, capped at ``max_deg``.

    Args:
        points: (n, 3) float model-frame points of the ball (its vertices).
        centre, tip: (3,) model-frame centre and the point to aim (the iris's front vertex).
        target_xy: (2,) the target in the observation frame (pixels).
        s, R, t: the similarity from the model frame to the observation frame.

    Returns:
        ``(turned, degrees)``: (n, 3) float64 points, and the angle turned.
    """
    p = np.asarray(points, np.float64)
    c, q = np.asarray(centre, np.float64), np.asarray(tip, np.float64)
    r = float(np.linalg.norm(q - c))
    if r < 1e-9:
        return p.copy(), 0.0
    # the ray in the model frame: origin o (obs z = 0), direction d = R^T e_z (away from the camera)
    d = R.T @ np.array([0.0, 0.0, 1.0])
    o = R.T @ (np.array([target_xy[0], target_xy[1], 0.0]) - t) / s
    oc = o - c
    b = float(oc @ d)
    disc = b * b - (float(oc @ oc) - r * r)
    if disc >= 0:
        x = o + (-b - np.sqrt(disc)) * d                 # the entry on the camera's side (smaller obs z)
    else:
        near = o - b * d                                 # the ray's point nearest the centre
        x = c + r * (near - c) / max(float(np.linalg.norm(near - c)), 1e-12)
    u, v = (q - c) / r, (x - c) / r
    axis = np.cross(u, v)
    sin, cos = float(np.linalg.norm(axis)), float(np.clip(u @ v, -1.0, 1.0))
    angle = float(np.arctan2(sin, cos))
    if sin < 1e-12 or angle < 1e-9:
        return p.copy(), 0.0
    angle = min(angle, np.radians(max_deg))
    k = axis / sin
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    return c + (p - c) @ rot.T, float(np.degrees(angle))


@functools.lru_cache(maxsize=8)
def _footprint(head: "ICTHead", size: int) -> np.ndarray:
    import cv2

    from . import get_head

    tri = get_head("mediapipe").layout().faces
    uv = np.einsum("nk,nkc->nc", head._corr_weights, head.uv[head.faces[head._corr_triangle]])
    pts = np.round((uv[tri] * size - 0.5) * 16).astype(np.int32)
    m8 = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m8, list(pts), 1, lineType=cv2.LINE_8, shift=4)
    m = m8.astype(bool)
    m.flags.writeable = False
    return m


@functools.lru_cache(maxsize=1)
def _asset() -> dict:
    if not ASSET_PATH.exists():
        raise InputError(f"{ASSET_PATH}: the ICT head asset is missing (rebuild it with scripts/make_ict_asset.py)")
    with np.load(ASSET_PATH, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class ICTHead(HeadModel):
    name = "ict"
    description = "ICT-FaceKit Light: a whole head (ears, neck, scalp, eyes, teeth) with 53 ARKit blendshapes"
    sheet_yaws = (-90.0, -45.0, 0.0, 45.0, 90.0, 180.0)
    #: The face chart holds about 0.4 of the face mask's visible texels at the same S (ffhq_00128,
    #: deca_exp_2, ffhq_00145), so texture.png is written at 2 S: the face chart's re-rendered
    #: PSNR went 40.1 -> 44.8, 47.1 -> 49.9, 34.2 -> 39.1 dB for 0.4 to 0.5 s per face.
    export_scale = 2

    def __init__(self) -> None:
        a = _asset()
        self.meta = json.loads(str(a["meta"]))
        self.neutral = a["neutral"].astype(np.float64)
        self.modes = np.concatenate([a["identity_modes"], a["expression_modes"]]).astype(np.float32)  # (K, V, 3)
        self.n_identity = int(a["identity_modes"].shape[0])
        self.expression_names = [str(n) for n in a["expression_names"]]
        self.split_index = a["split_index"].astype(np.int64)
        self.faces = a["faces"].astype(np.int64)
        self.face_material = a["face_material"].astype(np.int64)
        self.materials = [str(m) for m in a["materials"]]
        self.uv = self._widen_eye_caps(a["uv"].astype(np.float64))
        self.mirror = a["mirror"].astype(np.int64)
        names = [str(n) for n in a["feature_names"]]
        off = a["feature_offsets"]
        self.features = {n: a["feature_vertices"][off[i]:off[i + 1]].astype(np.int64) for i, n in enumerate(names)}
        tri_orig = self.split_index[self.faces]  # triangles over the model's vertices
        ct, cb = a["corr_triangle"].astype(np.int64), a["corr_bary"].astype(np.float64)
        #: the face proper (the layout's ``face``): the corners of the triangles that MediaPipe's
        #: face mesh corresponds to, so the face is boxed as the face mask's is
        self.face_vertices = np.unique(self.faces[ct])
        self._corr_triangle, self._corr_weights = ct, cb
        corner = tri_orig[ct]  # (468, 3)
        iris = a["iris_vertex"].astype(np.int64)  # (right, left)
        self.iris_vertex = iris
        # each eyeball's model vertices (its sclera's and iris's triangles), in iris_vertex's order
        balls = []
        for side in ("Left", "Right"):
            mats = [self.materials.index(f"M_Sclera{side}"), self.materials.index(f"M_Iris{side}")]
            balls.append(np.unique(tri_orig[np.isin(self.face_material, mats)]))
        self.eyeballs = [next(b for b in balls if v in b) for v in iris]
        # the corresponding points as weights over the model's vertices: (470, V) sparse rows
        self._corr_vertices = np.concatenate([corner, np.repeat(iris[:, None], 3, 1)])
        self._corr_bary = np.concatenate([cb, np.tile([1.0, 0.0, 0.0], (2, 1))])
        self.X0 = np.einsum("nj,njc->nc", self._corr_bary, self.neutral[self._corr_vertices])
        B = self.modes[:, self._corr_vertices].astype(np.float64)  # (K, N, 3, 3)
        self.B = np.einsum("nj,knjc->nck", self._corr_bary, B)  # (N, 3, K)
        K = self.modes.shape[0]
        self.reg = np.r_[np.full(self.n_identity, REG_IDENTITY), np.full(K - self.n_identity, REG_EXPRESSION)]
        self.lower = np.r_[np.full(self.n_identity, -np.inf), np.zeros(K - self.n_identity)]
        self.upper = np.r_[np.full(self.n_identity, np.inf), np.ones(K - self.n_identity)]

    def _widen_eye_caps(self, uv: np.ndarray) -> np.ndarray:
        """``uv`` with each sclera's front chart (the one holding the vertex furthest forward)
        remapped by :func:`widen_cap` (EYE_CAP_POWER) about the middle of its disk."""
        from ..layout import UVLayout, vertex_charts

        uv = uv.copy()
        charts = vertex_charts(UVLayout(uv=uv, faces=self.faces, mirror=None, symmetric=False,
                                          closed_eyes=True, name="ict-raw"))
        model = self.split_index
        for side in ("Left", "Right"):
            lv = np.unique(self.faces[self.face_material == self.materials.index(f"M_Sclera{side}")])
            P = self.neutral[model[lv]]
            centre = 0.5 * (P.min(0) + P.max(0))
            # ICT faces +z
            q = (P - centre) / np.linalg.norm(P - centre, axis=1, keepdims=True)
            pole = lv[np.argmax(q[:, 2])]
            front = np.nonzero(charts == charts[pole])[0]
            mid = 0.5 * (uv[front].min(0) + uv[front].max(0))
            uv[front] = widen_cap(uv[front], mid, EYE_CAP_POWER)
        return uv

    # -- the interface ------------------------------------------------------------------------

    @functools.lru_cache(maxsize=1)
    def layout(self, uv_layout: str | Path | None = None):
        from ..layout import UVLayout

        if uv_layout is not None:
            raise InputError(f"{uv_layout}: --uv-layout is for the mediapipe head; the ict head has its own atlas")
        return UVLayout(uv=self.uv, faces=self.faces, mirror=self.mirror, symmetric=False, closed_eyes=True,
                        name=LAYOUT_NAME, features=self.features, weld=self.split_index, parts=self.parts(),
                        face=self.face_vertices, sampled=self.sampled())

    def parts(self) -> np.ndarray:
        """(F,) surface label per triangle: the face and back of the head are one skin (0); the
        mouth and eye sockets, gums and tongue, teeth, and each sclera and iris are their own."""
        parts = self.face_material.copy() + 10
        skin = np.isin(self.face_material, [self.materials.index("M_Face"), self.materials.index("M_BackHead")])
        orig = self.split_index[self.faces].min(1)
        parts[skin] = 0
        parts[skin & (orig >= SOCKETS[0]) & (orig <= SOCKETS[1])] = 1
        return parts

    def sampled(self) -> np.ndarray:
        """(F,) bool, the triangles that take the photo's colour: all but the back of the head's
        skin (the M_BackHead chart, its mouth and eye sockets apart). A photo shows that chart only
        at the top of the head, at a grazing angle, where it shows hair (not modelled: the scalp is
        skin) into a few texels of a chart drawn for the back. Measured on ffhq_00128, deca_exp_2
        and ffhq_00145 (default preset, S = 512): its seen texels re-rendered at 22.6 / 27.7 /
        34.4 dB PSNR against the face chart's 40.1 / 47.1 / 34.2 dB, 59 / 94 / 1 % of the visible
        squared error. The synthesis gives it the person's skin instead."""
        parts = self.parts()
        back = self.face_material == self.materials.index("M_BackHead")
        return ~(back & (parts == 0))

    def targets(self, landmarks: np.ndarray) -> np.ndarray:
        """(470, 3) the landmarks that correspond to the model's points: the 468 face-mesh
        landmarks, then the iris centres of the subject's right and left eye."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] != 3:
            raise ValueError(f"landmarks: expected (478, 3) or (468, 3) MediaPipe landmarks, got {lm.shape}")
        if lm.shape[0] >= 478:
            a, b = lm[MP_IRIS[0]], lm[MP_IRIS[1]]
            right_first = np.linalg.norm(a - lm[MP_EYE_OUTER[0]]) < np.linalg.norm(a - lm[MP_EYE_OUTER[1]])
            iris = np.stack([a, b] if right_first else [b, a])
        else:  # no iris landmarks: the eye centres (the points' weight is set to 0 by fit)
            iris = np.full((2, 3), np.nan)
        return np.concatenate([lm[:468], iris])

    def fit_weights(self, landmarks: np.ndarray):
        """The :class:`~facerefiner.fit.MorphableFit` of the model to ``landmarks``."""
        from ..fit import fit_morphable

        Y = self.targets(landmarks)
        a = np.r_[np.ones(468), np.full(2, IRIS_WEIGHT)]
        a[list(MP_FACE_OVAL)] = OVAL_WEIGHT
        if not np.isfinite(Y[468:]).all():
            a[468:] = 0.0
            Y = Y.copy()
            Y[468:] = 0.0
        return fit_morphable(self.X0, self.B, Y, reg=self.reg, lower=self.lower, upper=self.upper,
                             weights=a, axis_weights=np.array([1.0, 1.0, DEPTH_WEIGHT]),
                             pairs=np.array(MP_LIP_PAIRS), pair_weights=np.full(len(MP_LIP_PAIRS), LIP_PAIR_WEIGHT),
                             iterations=FIT_ITERATIONS)

    def shape(self, weights: np.ndarray) -> np.ndarray:
        """(V_model, 3) float64 model vertices for the weights (identity then expression)."""
        w = np.asarray(weights, dtype=np.float32)
        return self.neutral + np.tensordot(w, self.modes, axes=1).astype(np.float64)

    def fit(self, landmarks: np.ndarray, image_size: tuple[int, int]):
        from ..reconstruct import geometry_from_pose

        f = self.fit_weights(landmarks)
        model = self.shape(f.weights)
        turns = self.aim_eyes(model, f, landmarks)
        verts = model[self.split_index]
        lm = np.asarray(landmarks, dtype=np.float64)
        iod = float(np.linalg.norm(lm[MP_EYE_OUTER[0], :2] - lm[MP_EYE_OUTER[1], :2])) or 1.0
        err = np.linalg.norm(f.residual[:468, :2], axis=1)
        info = {"head": self.name, "weights": f.weights,
                "fit": {"median_px": float(np.median(err)), "median_iod": float(np.median(err) / iod),
                        "p95_px": float(np.percentile(err, 95)), "iterations": f.iterations,
                        "eye_turn_deg": [round(a, 2) for a in turns]}}
        return geometry_from_pose(verts, f.scale, f.rotation, f.translation, lm, image_size, info)

    def aim_eyes(self, model: np.ndarray, f, landmarks: np.ndarray) -> list[float]:
        """Turn each eyeball of ``model`` ((V_model, 3), changed in place) so its iris lies on the
        photo's iris landmark (:func:`aim_eyeball`; ``f`` the fit's pose). Returns the angles turned
        (degrees; right eye first), none without iris landmarks."""
        Y = self.targets(landmarks)[468:]
        if not np.isfinite(Y).all():
            return []
        turns = []
        for ball, iris, y in zip(self.eyeballs, self.iris_vertex, Y):
            pts = model[ball]
            centre = 0.5 * (pts.min(0) + pts.max(0))
            model[ball], deg = aim_eyeball(pts, centre, model[iris], y[:2], f.scale, f.rotation, f.translation)
            turns.append(deg)
        return turns

    def landmark_points(self, vertices: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices, dtype=np.float64)
        model = np.zeros((len(self.neutral), 3))
        model[self.split_index] = v
        return np.einsum("nj,njc->nc", self._corr_bary[:468], model[self._corr_vertices[:468]])

    def face_texels(self, size: int) -> np.ndarray:
        """(size, size) bool, read-only: the face mask's footprint in this atlas, MediaPipe's
        face-mesh triangles drawn at the uv of the points that correspond to its 468 vertices.
        (The hull of :attr:`face_vertices`, the corners of the triangles those points lie in,
        reaches a triangle further: over deca_ex_image02673's temples and jaw, where the photo
        shows hair and background.)"""
        return _footprint(self, int(size))

    def part_colours(self) -> dict:
        """Teeth off-white, gums and tongue pink, the sockets dark red; each sclera the median of
        its seen texels (else a warm white), each iris the darkest fifth of its eye's seen sclera
        chart (the iris shows through the cornea there), else a brown."""
        m = self.materials.index
        c = {1: (0.30, 0.12, 0.12), m("M_Teeth") + 10: (0.86, 0.83, 0.74), m("M_GumsTongue") + 10: (0.72, 0.38, 0.38)}
        for side in ("Left", "Right"):
            sclera = m(f"M_Sclera{side}") + 10
            c[sclera] = ("seen", (0.86, 0.82, 0.78))
            c[m(f"M_Iris{side}") + 10] = ("dark", sclera, (0.35, 0.25, 0.18))
        return c

    def morph_targets(self, geometry) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        w = np.asarray(geometry.info.get("weights"), dtype=np.float32)
        if w.shape != (self.modes.shape[0],):
            return None
        ex = self.modes[self.n_identity:][:, self.split_index]  # (53, V, 3)
        return list(self.expression_names), ex, w[self.n_identity:].copy()

    def report(self, geometry) -> dict[str, Any]:
        w = np.asarray(geometry.info.get("weights", np.zeros(self.modes.shape[0])), dtype=np.float64)
        return {"head": self.name,
                "fit": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in geometry.info.get("fit", {}).items()},
                "identity_weights": [round(float(x), 4) for x in w[:self.n_identity]],
                "expression_weights": {n: round(float(x), 4) for n, x in zip(self.expression_names, w[self.n_identity:])}}
