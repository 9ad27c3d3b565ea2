"""Reconstruct: a 3D face mesh and its camera from one photo, with MediaPipe's face mesh.

MediaPipe's legacy ``solutions.face_mesh`` (bundled in the ``mediapipe`` wheel, so it runs offline)
gives 478 landmarks per face (468 mesh vertices + 10 iris points) with x, y normalised by the image
width and height and a relative depth z on the scale of x. In photo pixels that is an orthographic
view: (x W, y H, z W) is a camera-frame point with x right, y down, z away from the camera.

We fit MediaPipe's canonical face (our symmetrised copy, in cm, y-up) to those points with a
similarity transform (Umeyama): camera = s R model + t. That gives the head pose and a camera
(orthographic, s pixels per cm) under which the reconstructed vertices, expressed back in the model
frame, project exactly onto the landmarks in the original photo.

Large photos are searched on a downscaled copy; each face found is then re-measured on a crop of
the full-resolution photo so that small faces in big photos keep their precision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .camera import Camera
from .errors import NoFaceError

log = logging.getLogger(__name__)

#: Number of mesh vertices (MediaPipe's face mesh topology).
NUM_VERTICES = 468
#: Nominal distance (cm) of the model origin from the orthographic camera; only shifts depth.
CAMERA_DISTANCE_CM = 100.0
#: Long side (px) of the copy that the face search runs on.
DETECT_MAX_SIDE = 1280
#: Long side (px) of the per-face crop used to re-measure landmarks of a downscaled photo.
REFINE_CROP_SIDE = 768

# Model (y-up, face looking toward +z) to OpenCV camera (y down, z forward), frontal view.
_R0 = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class FaceGeometry:
    """A reconstructed face: mesh vertices, camera and landmarks, all for one photo.

    Attributes:
        vertices: (V, 3) float64 mesh vertices in the model frame: y up, right-handed, the face
            looking toward +z, centimetres. V and the topology and UVs come from the head model's
            :class:`~facerefiner.layout.UVLayout` (468 for MediaPipe's face mask).
        camera: projects ``vertices`` onto the photo (see :mod:`facerefiner.camera`).
        landmarks: (478, 3) float64 MediaPipe landmarks in photo pixels: x right, y down (the
            top-left corner of the photo is (0, 0)), z depth in pixels (larger = farther).
        box: (x0, y0, x1, y1) bounding box of the landmarks in photo pixels.
        yaw, pitch, roll: head pose in degrees. yaw > 0: the face turns toward the image's right
            (the subject's left); pitch > 0: the face looks down; roll > 0: the head tilts
            clockwise... as seen in the photo. Composed as R_head = Ry(yaw) Rx(pitch) Rz(roll).
        scale: pixels per centimetre of the orthographic camera.
    """

    vertices: np.ndarray
    camera: Camera
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    yaw: float
    pitch: float
    roll: float
    scale: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def face_size(self) -> float:
        """Larger side of :attr:`box` in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def projected(self) -> np.ndarray:
        """(V, 3) vertices projected into the photo: pixel x, pixel y, depth (cm)."""
        return self.camera.project(self.vertices)

    def pose(self) -> dict[str, float]:
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity transform with dst ~= s R src + t (Umeyama 1991).

    Args:
        src, dst: (N, 3) float64 corresponding points.

    Returns:
        (s, R, t): scale, (3, 3) rotation with det +1, (3,) translation.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var_s)
    t = mu_d - s * R @ mu_s
    return s, R, t


def euler_yxz(R_head: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees with R_head = Ry(yaw) Rx(pitch) Rz(roll)."""
    yaw = np.degrees(np.arctan2(R_head[0, 2], R_head[2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(-R_head[1, 2], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(R_head[1, 0], R_head[1, 1]))
    return float(yaw), float(pitch), float(roll)


def geometry_from_landmarks(landmarks: np.ndarray, image_size: tuple[int, int],
                            canonical: np.ndarray | None = None) -> FaceGeometry:
    """Build a :class:`FaceGeometry` from MediaPipe landmarks in photo pixels.

    Args:
        landmarks: (478, 3) or (468, 3) float: x, y in pixels of the photo, z depth in pixels.
        image_size: (W, H) of the photo.
        canonical: (468, 3) canonical shape in cm (default: the shipped symmetrised one).
    """
    from .layout import canonical_shape

    lm = np.asarray(landmarks, dtype=np.float64)
    pts = lm[:NUM_VERTICES]
    can = canonical_shape() if canonical is None else np.asarray(canonical, dtype=np.float64)
    s, R, t = umeyama(can, pts)
    # Express the reconstructed points in the model frame (undo the similarity).
    return geometry_from_pose((pts - t) @ R / s, s, R, t, lm, image_size)


def geometry_from_pose(vertices: np.ndarray, s: float, R: np.ndarray, t: np.ndarray, landmarks: np.ndarray,
                       image_size: tuple[int, int], info: dict[str, Any] | None = None) -> FaceGeometry:
    """A :class:`FaceGeometry` from model-frame vertices and the similarity that maps the model
    frame onto the landmarks' frame (``landmark ~= s R X + t``; x, y in photo pixels).

    Args:
        vertices: (V, 3) model-frame vertices (cm, y up, face toward +z) of the head model's mesh.
        s, R, t: scale (pixels per cm), (3, 3) rotation, (3,) translation.
        landmarks: (478, 3) or (468, 3) the detector's landmarks (pixels); the box comes from them.
        image_size: (W, H) of the photo.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    pts = lm[:NUM_VERTICES]
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = R
    world_to_camera[:3, 3] = [0.0, 0.0, CAMERA_DISTANCE_CM]
    K = np.array([[s, 0.0, t[0]], [0.0, s, t[1]], [0.0, 0.0, 1.0]])
    cam = Camera(image_size=(int(image_size[0]), int(image_size[1])), world_to_camera=world_to_camera, K=K)
    yaw, pitch, roll = euler_yxz(_R0.T @ R)
    x0, y0 = pts[:, :2].min(0)
    x1, y1 = pts[:, :2].max(0)
    return FaceGeometry(vertices=np.asarray(vertices, dtype=np.float64), camera=cam, landmarks=lm,
                        box=(float(x0), float(y0), float(x1), float(y1)),
                        yaw=yaw, pitch=pitch, roll=roll, scale=float(s), info=dict(info or {}))


@contextlib.contextmanager
def native_logs_quiet() -> Iterator[None]:
    """Keep what MediaPipe's C++ side writes to the process's stderr (TensorFlow Lite's "Created
    TensorFlow Lite XNNPACK delegate", absl's ``W0000 ... inference_feedback_manager`` lines) out of
    the console, unless this package logs at INFO or finer (``facerefiner -v``).

    Those lines are written straight to file descriptor 2 by native threads, past Python's
    ``sys.stderr`` and ``logging``, when a graph is built and on its first run. File descriptor 2
    is pointed at a temporary file for the duration and restored after; what was caught is passed
    on to this module's logger at DEBUG level. Not for concurrent use from several threads (the
    detector's calls are serialised by its lock)."""
    if log.isEnabledFor(logging.INFO):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                log.debug("mediapipe: %s", line)


class FaceMeshDetector:
    """MediaPipe's face mesh, loaded once and reused (it is not thread-safe; calls are serialised).

    Args:
        max_faces: most faces reported per photo.
        min_confidence: MediaPipe's face detection confidence threshold.
    """

    def __init__(self, max_faces: int = 8, min_confidence: float = 0.5) -> None:
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self._multi = None
        self._single = None
        self._ran: set[int] = set()  # graphs that have found a face once (until then they log natively)
        self._lock = threading.Lock()

    def _mesh(self, n: int):
        with native_logs_quiet():
            import mediapipe as mp  # heavy import, deferred

            return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=n, refine_landmarks=True,
                                                   min_detection_confidence=self.min_confidence)

    def _run(self, rgb: np.ndarray, single: bool) -> list[np.ndarray]:
        """Landmarks (478, 3) in pixels of ``rgb`` for each face found."""
        if single:
            if self._single is None:
                self._single = self._mesh(1)
            mesh = self._single
        else:
            if self._multi is None:
                self._multi = self._mesh(self.max_faces)
            mesh = self._multi
        h, w = rgb.shape[:2]
        if id(mesh) in self._ran:
            res = mesh.process(np.ascontiguousarray(rgb))
        else:  # quiet until the graph has found a face once (its landmark stage warns on that run)
            with native_logs_quiet():
                res = mesh.process(np.ascontiguousarray(rgb))
            if res.multi_face_landmarks:
                self._ran.add(id(mesh))
        out = []
        for face in res.multi_face_landmarks or []:
            a = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float64)
            out.append(a)
        return out

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Find faces in a photo.

        Args:
            rgb: (H, W, 3) uint8 RGB photo.

        Returns:
            A list of (478, 3) float64 landmark arrays in pixels of ``rgb`` (x, y, z; see
            :class:`FaceGeometry`), largest face first.
        """
        import cv2

        h, w = rgb.shape[:2]
        f = min(1.0, DETECT_MAX_SIDE / max(h, w))
        with self._lock:
            small = rgb if f >= 1.0 else cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))),
                                                   interpolation=cv2.INTER_AREA)
            fy = h / small.shape[0]
            fx = w / small.shape[1]
            faces = [a * np.array([fx, fy, fx]) for a in self._run(small, single=False)]
            if f < 1.0:
                faces = [self._refine(rgb, a) for a in faces]
        faces.sort(key=lambda a: -np.ptp(a[:, 0]) * np.ptp(a[:, 1]))
        return faces

    def _refine(self, rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """Re-measure one face on a full-resolution crop around it (falls back to ``lm``)."""
        import cv2

        h, w = rgb.shape[:2]
        cx, cy = (lm[:, 0].min() + lm[:, 0].max()) / 2, (lm[:, 1].min() + lm[:, 1].max()) / 2
        side = 2.0 * max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]))
        x0, y0 = int(max(0, np.floor(cx - side / 2))), int(max(0, np.floor(cy - side / 2)))
        x1, y1 = int(min(w, np.ceil(cx + side / 2))), int(min(h, np.ceil(cy + side / 2)))
        crop = rgb[y0:y1, x0:x1]
        g = min(1.0, REFINE_CROP_SIDE / max(crop.shape[:2]))
        if g < 1.0:
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * g)), max(1, round(crop.shape[0] * g))),
                              interpolation=cv2.INTER_AREA)
        found = self._run(crop, single=True)
        if not found:
            return lm
        sx, sy = (x1 - x0) / crop.shape[1], (y1 - y0) / crop.shape[0]
        a = found[0] * np.array([sx, sy, sx]) + np.array([x0, y0, 0.0])
        # Keep it only if it is the same face (centre within a fifth of the face size).
        if np.hypot(*(a[:, :2].mean(0) - lm[:, :2].mean(0))) > 0.2 * side / 2:
            return lm
        return a

    def close(self) -> None:
        for m in (self._multi, self._single):
            if m is not None:
                m.close()
        self._multi = self._single = None
        self._ran.clear()


_DEFAULT: FaceMeshDetector | None = None


def default_detector() -> FaceMeshDetector:
    """The process-wide detector (created on first use, then reused)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = FaceMeshDetector()
    return _DEFAULT


def reconstruct_all(image: np.ndarray, *, min_face: float = 64.0, detector: FaceMeshDetector | None = None,
                    source: str = "photo", head: Any = None) -> list[FaceGeometry]:
    """Reconstruct every face in a photo, largest first.

    Args:
        image: (H, W, 3) uint8 RGB photo (see :func:`facerefiner.io.load_image`).
        min_face: faces whose landmark box is smaller than this many pixels on its larger side are
            ignored.
        source: the photo's name, used in error messages.
        head: the head model (:mod:`facerefiner.heads`) whose ``fit`` turns landmarks into a
            geometry; default MediaPipe's face mask.

    Raises:
        NoFaceError: no face (of at least ``min_face`` pixels) in the photo.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image: expected an (H, W, 3) uint8 RGB array, got {img.shape} {img.dtype}")
    det = detector or default_detector()
    h, w = img.shape[:2]
    faces = det.detect(img)
    fit = geometry_from_landmarks if head is None else head.fit
    boxes = [geometry_from_landmarks(a, (w, h)) for a in faces]
    big = [fit(a, (w, h)) if head is not None else g for a, g in zip(faces, boxes) if g.face_size >= min_face]
    geos = boxes
    if not big:
        if geos:
            raise NoFaceError(f"{source}: face too small ({geos[0].face_size:.0f} px across; at least "
                              f"{min_face:.0f} px needed, see --min-face)")
        raise NoFaceError(f"{source}: no face found")
    return big


def reconstruct(image: np.ndarray, *, min_face: float = 64.0, detector: FaceMeshDetector | None = None,
                source: str = "photo", head: Any = None) -> FaceGeometry:
    """Reconstruct the largest face in a photo (see :func:`reconstruct_all`)."""
    return reconstruct_all(image, min_face=min_face, detector=detector, source=source, head=head)[0]
