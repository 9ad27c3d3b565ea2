"""Quality metrics of a face texture, and of an output folder of ``facerefiner unwrap|refine``.

Each metric is a small function on arrays / tensors; :func:`evaluate_folder` computes them all for
one output folder and merges them into its ``report.json`` under ``"metrics"``.

* **Visible fidelity** (:func:`visible_fidelity`, on :func:`psnr` and :func:`ssim`): the texture
  rendered at the input camera against the photo, on the face's crop of the photo (long side at most
  2 S px for an S x S texture: the scale the texture resolves and the rendering loss works at), inside the rendered face mask eroded by "region size / 20" (as the
  refinement's rendering loss does) and where the pixel sees only visible texels (V rendered >= 0.999).
* **Identity** (:func:`identity_distances`, optional extra ``pip install "facerefiner[eval]"``):
  distance between dlib's ResNet face descriptors of the photo and of (a) the render composited
  over the photo at the input pose, (b) renders turned to +-30 degrees of yaw on a plain grey
  background. dlib's 5-point shape predictor is given the projected mesh's 2D bounding box (no
  dlib detector). Lower is better; below :data:`SAME_PERSON` (0.6) dlib calls it the same person.
* **Completion** (:func:`probe_mask`, :func:`cheek_mask`, :func:`completion_probe`,
  :func:`completion_score`): hide part of the face with a photo mask drawn from MediaPipe's
  landmarks (usable as ``--mask``; :data:`PROBE_KINDS`: one cheek, a hair fringe over the brows and
  one eye, both cheeks, a hand over the mouth and chin, sunglasses), and score a texture made with
  that mask on the texels the mask hid, against the unmasked unwrap's sampled texture: PSNR, SSIM
  and the detail ratio (:func:`detail_ratio`: the texture's band-pass luma contrast over the
  truth's, 1 = as much fine detail as the photo; PSNR alone rewards a blur, the detail ratio alone
  rewards noise, so a good completion needs both).
* **Seam** (:func:`seam_ratio`): mean luma gradient magnitude across the boundary of V divided by
  the mean inside the face away from it; 1.0 = no seam.
* **Cost** (:func:`cost`): the wall time (sum of ``timings_s``) and peak RSS when recorded.

Geometry of a folder: read back from ``mesh.obj`` (vertices, and the UV layout for a non-default
one) and ``camera.json`` rather than re-running MediaPipe on the photo: it is exactly the geometry the
texture was made with (MediaPipe is not bit-reproducible across machines and versions), needs no
detector and takes milliseconds. The photo itself (``report["input"]``) is still needed for the
fidelity, identity and completion metrics.

Images: numpy arrays are channel-last (H, W, C) or (H, W), uint8 (scaled by 1/255) or float in
[0, 1]; torch tensors are channel-first (C, H, W) as elsewhere in this package. Non-finite values
(an infinite PSNR of identical images) are written to ``report.json`` as ``null``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .camera import Camera
from .errors import FaceRefinerError, InputError
from .layout import UVLayout, default_layout, load_layout
from .reconstruct import FaceGeometry, euler_yxz
from .folder import FaceReport, read_report, report_or_none, write_report
from .io import load_png_float
from .io import to_uint8 as _u8
from .unwrap import sample_side

log = logging.getLogger(__name__)

__all__ = [
    "psnr", "ssim", "ssim_map", "bounding_box", "visible_fidelity", "IdentityModel", "identity_model",
    "identity_available", "identity_distances", "face_texels",
    "EvalExtraMissing", "cheek_mask", "probe_mask", "PROBE_KINDS", "CompletionProbe", "completion_probe",
    "completion_score", "detail_ratio", "dog_luma",
    "seam_ratio", "chroma_drift", "cost", "OutputFolder", "load_output", "geometry_from_folder", "evaluate_folder",
    "write_report_metrics", "SAME_PERSON", "EVAL_INSTALL_HINT",
]

#: Version of the ``metrics`` block in ``report.json``.
METRICS_VERSION = 1
#: Long side (px) of the photo crop the fidelity and identity metrics work on.
FIDELITY_MAX_SIDE = 1024
#: Yaw angles (degrees, absolute head pose) of the turned renders of the identity metric.
IDENTITY_YAWS = (30.0, -30.0, 60.0, -60.0)
#: dlib's threshold: descriptor distances below it are the same person.
SAME_PERSON = 0.6
#: Width (texels) of the band on each side of V's boundary that :func:`seam_ratio` measures.
SEAM_WIDTH = 2
#: Grey level of the background of the turned renders.
TURNED_BACKGROUND = 0.5
#: Side (px) of the turned renders.
TURNED_SIZE = 384
#: Cheek vertices (MediaPipe indices) of the subject's right cheek: the canonical face's vertices
#: within 2.5 cm of the midpoint of 50 and 205. The left cheek is their mirror (280, 425, ...).
CHEEK_RIGHT = (36, 50, 101, 117, 118, 119, 187, 203, 205, 206, 207, 216)
#: A texture is "complete" when at least this fraction of its hidden layout texels is not black.
COMPLETE_FRACTION = 0.9
#: Kinds of completion probe mask (:func:`probe_mask`); ``"cheek"`` is :func:`cheek_mask`'s.
PROBE_KINDS = ("cheek", "fringe", "cheeks", "hand", "sunglasses")
#: Detail ratio (:func:`detail_ratio`): the difference-of-Gaussians sigmas and the erosion of the
#: hidden texels, in texels at a texture of :data:`DETAIL_SIZE_REF` (scaled with S / 512).
DETAIL_SIGMA = (1.0, 3.0)
DETAIL_ERODE = 3
DETAIL_SIZE_REF = 512

EVAL_INSTALL_HINT = 'pip install "facerefiner[eval]"'

_LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------------
# image helpers


def _image(x: Any) -> np.ndarray:
    """An image as a float64 numpy array in [0, 1]: (H, W, C) or (H, W) (see the module docstring)."""
    if isinstance(x, torch.Tensor):
        a = x.detach().cpu().to(torch.float64).numpy()
        if a.ndim == 3:
            a = a.transpose(1, 2, 0)
        return a
    a = np.asarray(x)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == bool:
        return a.astype(np.float64)
    return a.astype(np.float64, copy=False)


def _mask(m: Any, shape: tuple[int, int]) -> np.ndarray:
    a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    a = a.astype(bool)
    if a.shape != tuple(shape):
        raise ValueError(f"mask: expected shape {tuple(shape)}, got {a.shape}")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _image(a), _image(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) images, got {x.shape}")
    return x, y


def psnr(a: Any, b: Any, mask: Any = None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio (dB) of ``b`` against ``a`` (``skimage.metrics.peak_signal_noise_ratio``)
    over the pixels of ``mask`` (all pixels when None): ``inf`` for identical images, ``nan`` for
    an empty mask."""
    from skimage.metrics import peak_signal_noise_ratio

    x, y = _pair(a, b)
    if mask is not None:
        m = _mask(mask, x.shape[:2])
        if not m.any():
            return float("nan")
        x, y = x[m], y[m]
    if np.array_equal(x, y):
        return float("inf")
    return float(peak_signal_noise_ratio(x, y, data_range=data_range))


def ssim_map(a: Any, b: Any, data_range: float = 1.0) -> np.ndarray:
    """(H, W) structural similarity map (``skimage.metrics.structural_similarity``, Wang et al.'s
    settings: Gaussian window sigma 1.5, population covariance), averaged over colour channels."""
    from skimage.metrics import structural_similarity

    x, y = _pair(a, b)
    _, smap = structural_similarity(x, y, data_range=data_range, channel_axis=2 if x.ndim == 3 else None,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    return smap.mean(axis=2) if smap.ndim == 3 else smap


def ssim(a: Any, b: Any, mask: Any = None, data_range: float = 1.0) -> float:
    """Mean SSIM of ``b`` against ``a`` over the pixels of ``mask`` (all pixels when None).

    The SSIM map is computed on the whole images and then averaged inside the mask. Outside the
    mask ``b`` is replaced by ``a`` first, so that windows straddling the mask's edge compare only
    the pixels inside it (what lies outside, e.g. the background of a render, does not count).
    """
    x, y = _pair(a, b)
    if mask is None:
        return float(ssim_map(x, y, data_range).mean())
    m = _mask(mask, x.shape[:2])
    if not m.any():
        return float("nan")
    y = np.where(m[..., None] if y.ndim == 3 else m, y, x)
    return float(ssim_map(x, y, data_range)[m].mean())




def bounding_box(xy: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of (N, 2+) points, e.g. projected mesh vertices."""
    x0, y0 = np.asarray(xy)[:, :2].min(0)
    x1, y1 = np.asarray(xy)[:, :2].max(0)
    return float(x0), float(y0), float(x1), float(y1)


# --------------------------------------------------------------------------------------------
# 1. visible fidelity


@dataclass
class _Crop:
    """The face's crop of the photo with the mesh rasterised into it."""

    photo: np.ndarray          # (h, w, 3) uint8
    region: Any                # the crop's facerefiner.unwrap.Region of the photo
    camera: Camera             # projects the mesh into the crop
    cache: Any                 # RasterCache of the face in the crop
    covered: torch.Tensor      # (h, w) bool


def _face_crop(photo: np.ndarray, geometry: FaceGeometry, layout: UVLayout, max_side: int,
               to_mesh: bool = True) -> _Crop:
    from .render import coverage_mask, face_raster
    from .unwrap import face_region

    region = face_region(geometry, max_side=max_side, to_mesh=to_mesh)
    crop = np.array(region.crop(np.asarray(photo)), dtype=np.uint8, order="C")  # writable copy
    w, h = region.out_size
    cam = geometry.camera.crop(region.x0, region.y0, w, h, scale=region.scale)
    _, cache = face_raster(geometry.vertices, cam, layout)
    return _Crop(photo=crop, region=region, camera=cam, cache=cache, covered=coverage_mask(cache)[0])


def _render_rgba(texture: torch.Tensor, visibility: torch.Tensor | None, cache: Any,
                 premultiplied: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The texture (times V when ``premultiplied``) and V rendered through ``cache``: (3, h, w)
    RGB, (h, w) float V."""
    from .render import render_face

    tex = texture.detach().float()
    vis = torch.ones_like(tex[:1]) if visibility is None else visibility[None].to(tex.dtype)
    img, _ = render_face(torch.cat([tex * vis if premultiplied else tex, vis]), cache=cache)
    return img[:3].clamp(0, 1), img[3]


def visible_fidelity(photo: np.ndarray, texture: torch.Tensor, geometry: FaceGeometry,
                     layout: UVLayout | None = None, visibility: torch.Tensor | None = None, *,
                     max_side: int | None = None) -> dict[str, Any]:
    """PSNR and SSIM of the texture rendered at the input camera against the photo.

    Compared on the face's crop of the photo (long side at most ``max_side`` px; default 2 S for an
    S x S texture, the scale of the refinement's rendering loss: a finer comparison would measure
    the texture's resolution rather than its colours), inside the
    rendered face mask eroded by :func:`facerefiner.losses.render_mask_kernel` of the crop size
    (region size / 20, as the rendering loss of the refinement) and intersected with the pixels
    that see only visible texels (``visibility`` rendered >= 0.999).

    Args:
        photo: (H, W, 3) uint8 RGB.
        texture: (3, S, S) float in [0, 1].
        visibility: (S, S) bool V (None: every texel counts as visible).

    Returns:
        ``{"psnr", "ssim", "pixels", "crop_size", "erosion_px"}``.
    """
    from .losses import erode_mask, render_mask_kernel
    from .render import FULLY_VISIBLE

    layout = layout or default_layout()
    c = _face_crop(photo, geometry, layout, max_side or sample_side(int(texture.shape[-1])))
    h, w = c.covered.shape
    k = render_mask_kernel(max(h, w))
    img, vis = _render_rgba(texture, visibility, c.cache)
    m = erode_mask(c.covered[None, None], k)[0, 0] & (vis >= FULLY_VISIBLE)
    ref = c.photo
    out = img.permute(1, 2, 0).numpy().astype(np.float64)
    return {"psnr": psnr(ref, out, m), "ssim": ssim(ref, out, m), "pixels": int(m.sum()),
            "crop_size": [int(w), int(h)], "erosion_px": int(k)}


def relit_fidelity(out: "OutputFolder", texture_psnr: float | None = None) -> dict[str, Any]:
    """:func:`visible_fidelity` of the folder's ``albedo.png`` under its ``light.json`` (the photo
    re-rendered from the de-lit texture), beside the lit texture's (``minus_texture_db``: the
    relit PSNR minus texture.png's; how much of the photo the albedo and the light explain).
    ``texture_psnr``: texture.png's own :func:`visible_fidelity` PSNR when already computed.

    Returns:
        ``{"psnr", "ssim", "pixels", "minus_texture_db", ...}`` or ``{"skipped": reason}`` for a folder
        without an albedo (``--no-delight``, no light found, ``unwrap``).
    """
    from .light import relight
    from .unwrap import texel_normals

    if not ((out.folder / "albedo.png").exists() and (out.folder / "light.json").exists()):
        return {"skipped": NO_ALBEDO}
    alb, light = read_albedo(out.folder)
    S = out.texture.shape[-1]
    if alb.shape[-1] != S:
        alb = torch.nn.functional.interpolate(alb[None], size=(S, S), mode="area" if alb.shape[-1] > S else "bicubic")[0]
    normals = texel_normals(out.geometry, out.layout, S)
    relit = relight(alb.clamp(0, 1), normals, light)
    r = visible_fidelity(out.photo, relit, out.geometry, out.layout, out.visibility)
    if texture_psnr is None:
        texture_psnr = visible_fidelity(out.photo, out.texture, out.geometry, out.layout, out.visibility)["psnr"]
    return {**r, "minus_texture_db": r["psnr"] - texture_psnr}


# --------------------------------------------------------------------------------------------
# 2. identity (optional: dlib)


class EvalExtraMissing(FaceRefinerError):
    """The optional packages of the identity metric are not installed."""


def _model_files() -> tuple[str, str]:
    """(face recognition model, 5-point shape predictor) paths from ``face_recognition_models``."""
    try:
        import warnings

        with warnings.catch_warnings():  # its pkg_resources import warns about the deprecation
            warnings.simplefilter("ignore")
            import face_recognition_models as frm
        return frm.face_recognition_model_location(), frm.pose_predictor_five_point_model_location()
    except ImportError as e:
        # face_recognition_models imports pkg_resources (setuptools < 81); its files are still
        # where the package lies when only that import fails.
        import importlib.util

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise EvalExtraMissing(f"face_recognition_models is not installed ({EVAL_INSTALL_HINT})") from e
        base = Path(next(iter(spec.submodule_search_locations))) / "models"
        files = (base / "dlib_face_recognition_resnet_model_v1.dat", base / "shape_predictor_5_face_landmarks.dat")
        if not all(f.exists() for f in files):
            raise EvalExtraMissing(f"face_recognition_models has no model files in {base} "
                                   f"({EVAL_INSTALL_HINT})") from e
        return str(files[0]), str(files[1])


class IdentityModel:
    """dlib's ResNet face descriptor (128-D), aligned by its 5-point shape predictor on a given box.

    Raises:
        EvalExtraMissing: dlib or face_recognition_models is not installed.
    """

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as e:
            raise EvalExtraMissing(f"dlib is not installed ({EVAL_INSTALL_HINT})") from e
        rec, five = _model_files()
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(five)
        self.recognizer = dlib.face_recognition_model_v1(rec)
        self.name = Path(rec).stem

    def descriptor(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(128,) float64 descriptor of the face in ``rgb`` ((H, W, 3) uint8) inside ``box``
        (x0, y0, x1, y1 pixels, e.g. the projected mesh's bounding box)."""
        img = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        x0, y0, x1, y1 = (round(v) for v in box)
        shape = self.predictor(img, self._dlib.rectangle(x0, y0, x1, y1))
        return np.asarray(self.recognizer.compute_face_descriptor(img, shape), dtype=np.float64)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance of two descriptors (< :data:`SAME_PERSON`: the same person)."""
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


@functools.lru_cache(maxsize=1)
def identity_model() -> IdentityModel:
    """The process-wide :class:`IdentityModel` (loaded once; raises :class:`EvalExtraMissing`)."""
    return IdentityModel()


def identity_available() -> bool:
    """True when the identity metric's packages are importable."""
    try:
        identity_model()
        return True
    except EvalExtraMissing:
        return False


def _with_parts(skin: torch.Tensor, layout: UVLayout) -> torch.Tensor:
    """(S, S) bool ``skin`` and every texel of the layout's surfaces that are not skin, inside it."""
    from .complete import part_map

    labels = torch.from_numpy(part_map(layout, int(skin.shape[-1])))
    return (labels >= 0) & (skin | (labels > 0))


def face_texels(layout: UVLayout, size: int) -> torch.Tensor:
    """(size, size) bool: a head's face in its atlas, the region a face mask covers: the texels of
    :func:`facerefiner.layout.face_region_mask` (the hull of the face's vertices' uv: forehead to
    chin, cheek to cheek) and of every surface that is not skin (eyes, sockets, mouth); every texel
    of the layout for a face mask."""
    from .layout import face_region_mask
    from .unwrap import uv_raster

    if layout.face is None:
        return uv_raster(layout, size).valid.clone()
    return _with_parts(torch.from_numpy(np.array(face_region_mask(layout, size))), layout)


def identity_distances(photo: np.ndarray, texture: torch.Tensor, geometry: FaceGeometry,
                       layout: UVLayout | None = None, visibility: torch.Tensor | None = None, *,
                       yaws: tuple[float, ...] | None = IDENTITY_YAWS, model: IdentityModel | None = None,
                       max_side: int = FIDELITY_MAX_SIDE, landmarks: np.ndarray | None = None,
                       face: torch.Tensor | np.ndarray | None = None) -> dict[str, Any]:
    """Face-descriptor distances between the photo and renders of the texture.

    (a) ``render``: the texture rendered at the input camera composited over the photo (texels
    outside ``visibility`` transparent), on the face's crop of the photo; for a head (a layout with
    :attr:`~facerefiner.layout.UVLayout.face`) only its face is composited, as the face mask's
    is, so that both compare the face's texture with the photo's hair, ears and neck around it, and
    ``render_head`` is the whole head composited (its scalp is skin where the photo has hair); (b) ``turned``: the head
    turned to each yaw of ``yaws`` (absolute, degrees; about the model's vertical axis, so with
    pitch and roll the pose's yaw is close to, not exactly, the target: see ``turned_yaw_deg``),
    rendered on a plain grey background. Each face is aligned by dlib's 5-point predictor on a box
    that does not depend on the head model: the photo and (a) on ``geometry.box`` (the detector's
    landmark box: the same for every head fitted to the photo, so one head's distances compare
    with another's against the same reference), (b) on the box of ``landmarks`` in the turned view.
    The photo's crop is the landmark box's too (:func:`facerefiner.unwrap.face_region` with
    ``to_mesh=False``): a crop grown to a whole head's box had the face at a lower resolution than
    the face mask's (the descriptor moved by up to 0.08 with the crop alone).

    Args:
        landmarks: (468, 3) float model-frame points of the mesh that correspond to MediaPipe's
            468 landmarks (:meth:`facerefiner.heads.HeadModel.landmark_points`); None: the
            layout's face vertices (:meth:`~facerefiner.layout.UVLayout.face_points`).
        face: for a head, (S, S) bool skin texels of its face composited at the input pose
            (:meth:`facerefiner.heads.HeadModel.face_texels`: the face mask's footprint); None:
            :func:`face_texels`. Its surfaces that are not skin (eyes, mouth) are added.

    Raises:
        EvalExtraMissing: dlib or face_recognition_models is not installed.
    """
    from .views import turned_view

    layout = layout or default_layout()
    model = model or identity_model()
    c = _face_crop(photo, geometry, layout, max_side, to_mesh=False)  # the same crop for every head
    x0, y0, x1, y1 = geometry.box
    box = bounding_box(c.region.to_region(np.array([[x0, y0], [x1, y1]], dtype=np.float64)))
    marks = layout.face_points(geometry.vertices) if landmarks is None else np.asarray(landmarks, np.float64)
    ref = model.descriptor(c.photo, box)
    base = torch.from_numpy(c.photo).permute(2, 0, 1).float() / 255.0

    def over(vis_texels: torch.Tensor | None) -> float:
        img, vis = _render_rgba(texture, vis_texels, c.cache, premultiplied=True)
        a = torch.where(c.covered, vis, torch.zeros_like(vis))[None]
        comp = _u8(img + (1 - a) * base)  # premultiplied "over", as render.png
        return model.distance(ref, model.descriptor(comp, box))

    out: dict[str, Any] = {"model": model.name, "same_person_below": SAME_PERSON}
    if layout.face is None:
        face = None
    elif face is None:
        face = face_texels(layout, int(texture.shape[-1]))
    else:
        face = _with_parts(torch.as_tensor(np.asarray(face)), layout)
    if face is not None:
        # a head: its face over the photo, as the face mask's (the photo's hair, ears and neck
        # around it), and beside it the whole head (its scalp is skin where the photo has hair)
        vis = face if visibility is None else face & visibility.cpu()
        out["render"] = over(vis.to(texture.device))
        out["render_head"] = over(visibility)
    else:
        out["render"] = over(visibility)
    if yaws:
        turned, actual = {}, {}
        for yaw in yaws:
            im, xy, cam = turned_view(texture.detach().float(), geometry, layout, yaw - geometry.yaw,
                                      size=TURNED_SIZE, background=TURNED_BACKGROUND, margin=0.3, frame=layout.face)
            key = f"{yaw:+.0f}"
            turned[key] = model.distance(ref, model.descriptor(_u8(im), bounding_box(cam.project(marks)[:, :2])))
            actual[key] = round(_pose(cam)[0], 2)
        out["turned"] = turned
        out["turned_yaw_deg"] = actual
    return out


def _pose(camera: Camera) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of the head seen by ``camera`` (as :class:`FaceGeometry` defines them)."""
    return euler_yxz(np.diag([1.0, -1.0, -1.0]) @ np.asarray(camera.world_to_camera)[:3, :3])


# --------------------------------------------------------------------------------------------
# 3. completion


def _cheek_sides(layout: UVLayout) -> dict[str, np.ndarray]:
    right = np.array(CHEEK_RIGHT, dtype=np.int64)
    mirror = layout.mirror if layout.mirror is not None else default_layout().mirror
    return {"right": right, "left": np.asarray(mirror)[right]}


def cheek_mask(geometry: FaceGeometry, side: str = "auto", layout: UVLayout | None = None,
               grow: float = 1.0) -> tuple[np.ndarray, str]:
    """A photo mask hiding one cheek: the convex hull of the projected cheek vertices
    (:data:`CHEEK_RIGHT` or their mirror), optionally grown about its centre by ``grow``.

    Args:
        side: ``"right"`` or ``"left"`` (the subject's), or ``"auto"``: the cheek facing the camera
            more (the larger mean cosine between its vertex normals and the view direction).

    Returns:
        ``(mask, side)``: (H, W) bool of the photo (``camera.image_size``), True on the hidden
        cheek (write it as white pixels to use it as ``--mask``), and the side chosen.
    """
    import cv2

    from .unwrap import vertex_normals

    layout = layout or default_layout()
    sides = _cheek_sides(layout)
    cam = geometry.camera
    if side == "auto":
        n = vertex_normals(cam.to_camera(geometry.vertices), layout.faces, layout.weld)
        if cam.perspective:
            p = cam.to_camera(geometry.vertices)
            facing = -(n * p).sum(1) / np.linalg.norm(p, axis=1).clip(1e-9)
        else:
            facing = -n[:, 2]
        side = max(sides, key=lambda s: float(facing[sides[s]].mean()))
    if side not in sides:
        raise ValueError(f"side must be 'right', 'left' or 'auto', got {side!r}")
    xy = cam.project(geometry.vertices)[sides[side], :2]
    hull = cv2.convexHull(xy.astype(np.float32))[:, 0].astype(np.float64)
    hull = hull.mean(0) + (hull - hull.mean(0)) * float(grow)
    w, h = cam.image_size
    m = np.zeros((h, w), np.uint8)
    # pixel (j, i) has its centre at (j + 0.5, i + 0.5): shift by half a pixel, 4 bits of subpixel
    cv2.fillConvexPoly(m, np.round((hull - 0.5) * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool), side


# MediaPipe face-mesh landmark indices of the probe masks (:func:`probe_mask`); each "_R" list is
# on the subject's right, its "_L" partner the mirror (MediaPipe's topology is symmetric).
_EYE_R, _EYE_L = (33, 133, 159, 145), (263, 362, 386, 374)  # outer and inner corner, top, bottom lid
_BROW_R = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)  # upper edge outer to inner, lower edge outer to inner
_BROW_L = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
#: Under the cheekbone to the nasolabial fold and down to the mouth corner's height.
_CHEEK_R = (116, 117, 118, 119, 100, 142, 203, 206, 216, 212, 192, 213, 147, 123)
_CHEEK_L = (345, 346, 347, 348, 329, 371, 423, 426, 436, 432, 416, 433, 376, 352)
#: A lens: the brow's lower edge, the side of the nose, the top of the cheekbone and the outer orbit.
_LENS_R = (46, 53, 52, 65, 55, 193, 245, 128, 121, 120, 119, 118, 117, 111, 143, 124)
_LENS_L = (276, 283, 282, 295, 285, 417, 465, 357, 350, 349, 348, 347, 346, 340, 372, 353)
#: The forehead row about a third of the eye distance above the brows, subject's right to left.
_FOREHEAD_ROW = (71, 68, 104, 69, 108, 151, 337, 299, 333, 298, 301)
#: The fringe's edge down the covered side: inner eye corner, under the eye, outer orbit, temple.
_FRINGE_EYE_R = (168, 193, 245, 128, 121, 120, 119, 118, 117, 111, 143, 139)
_FRINGE_EYE_L = (168, 417, 465, 357, 350, 349, 348, 347, 346, 340, 372, 368)
#: Between the nose and the upper lip, beside the mouth, and the chin's contour.
_MOUTH_CHIN = (167, 164, 393, 92, 322, 186, 410, 212, 432, 202, 422, 210, 430, 169, 394, 150, 379, 149, 378,
               176, 400, 148, 377, 152)
_BRIDGE = (193, 168, 417)
#: The uncovered brow's lower edge is moved down by this fraction of the eye distance (its hair
#: reaches below the landmarks); the hand and the lenses are grown outward by theirs.
_FRINGE_BROW_MARGIN, _HAND_MARGIN, _LENS_MARGIN, _BRIDGE_WIDTH = 0.08, 0.04, 0.03, 0.09


def _eye_frame(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """(up, eye distance) of (N, 2+) landmarks: ``up`` the (2,) image unit vector from the eyes
    toward the forehead (perpendicular to the line from the right to the left eye's centre, the
    mean of its corners); the distance (pixels) is 3D when the landmarks have a z (pixels), so it
    does not shrink as the head turns."""
    diff = lm[list(_EYE_L[:2])].mean(0) - lm[list(_EYE_R[:2])].mean(0)
    u = diff[:2] / max(float(np.linalg.norm(diff[:2])), 1e-9)
    return np.array([u[1], -u[0]]), float(np.linalg.norm(diff[:3]))


def _grow(xy: np.ndarray, margin: float) -> np.ndarray:
    """(N, 2) points moved ``margin`` pixels away from their centroid."""
    d = xy - xy.mean(0)
    return xy + margin * d / np.linalg.norm(d, axis=1, keepdims=True).clip(1e-9)


def _facing_eye(lm: np.ndarray) -> str:
    """The subject's eye that faces the camera more: the wider between its corners in the photo."""
    w = {s: float(np.linalg.norm(lm[e[0], :2] - lm[e[1], :2])) for s, e in (("right", _EYE_R), ("left", _EYE_L))}
    return max(w, key=w.get)


def _probe(geometry: FaceGeometry, kind: str, side: str = "auto",
           layout: UVLayout | None = None) -> tuple[np.ndarray, str]:
    """:func:`probe_mask` and the side it chose (``"right"``/``"left"``; ``"both"`` for a symmetric kind)."""
    import cv2

    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind must be one of {', '.join(PROBE_KINDS)}, got {kind!r}")
    if side not in ("auto", "right", "left"):
        raise ValueError(f"side must be 'right', 'left' or 'auto', got {side!r}")
    if kind == "cheek":
        return cheek_mask(geometry, side, layout)
    lm = np.asarray(geometry.landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise ValueError(f"geometry.landmarks: expected (468+, 2+) MediaPipe landmarks, got {lm.shape}")
    xy = lm[:, :2]
    up, d = _eye_frame(lm)
    w, h = geometry.camera.image_size
    m = np.zeros((h, w), np.uint8)

    def fill(pts: np.ndarray, convex: bool = True) -> None:
        p = cv2.convexHull(pts.astype(np.float32))[:, 0].astype(np.float64) if convex else pts
        # pixel (j, i) has its centre at (j + 0.5, i + 0.5): shift by half a pixel, 4 bits of subpixel
        cv2.fillPoly(m, [np.round((p - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)

    out_side = "both"
    if kind == "fringe":
        out_side = _facing_eye(lm) if side == "auto" else side
        # the brows' lower edges outer to inner, and the covered side's edge from the nose bridge
        brow_r, brow_l = xy[list(_BROW_R[5:])], xy[list(_BROW_L[5:])]
        if out_side == "right":  # top row right -> left, down the left brow's tail, in along its
            # lower edge (lowered), then down the right eye's inner side, under it and up its temple
            poly = [xy[list(_FOREHEAD_ROW)], xy[[_BROW_L[0]]], brow_l - _FRINGE_BROW_MARGIN * d * up,
                    xy[list(_FRINGE_EYE_R)]]
        else:
            poly = [xy[list(_FOREHEAD_ROW[::-1])], xy[[_BROW_R[0]]], brow_r - _FRINGE_BROW_MARGIN * d * up,
                    xy[list(_FRINGE_EYE_L)]]
        fill(np.concatenate(poly), convex=False)
    elif kind == "cheeks":
        fill(xy[list(_CHEEK_R)])
        fill(xy[list(_CHEEK_L)])
    elif kind == "hand":
        fill(_grow(xy[list(_MOUTH_CHIN)], _HAND_MARGIN * d))
    elif kind == "sunglasses":
        fill(_grow(xy[list(_LENS_R)], _LENS_MARGIN * d))
        fill(_grow(xy[list(_LENS_L)], _LENS_MARGIN * d))
        bridge = np.round((xy[list(_BRIDGE)] - 0.5) * 16).astype(np.int32)
        cv2.polylines(m, [bridge], False, 1, thickness=max(1, round(_BRIDGE_WIDTH * d)), lineType=cv2.LINE_8,
                      shift=4)
    return m.astype(bool), out_side


def probe_mask(geometry: FaceGeometry, kind: str, side: str = "auto", layout: UVLayout | None = None) -> np.ndarray:
    """A photo mask of the completion probe, drawn from MediaPipe's landmarks (not the mesh or the
    UV layout), sized by the eye distance so that it scales with the face.

    Kinds (:data:`PROBE_KINDS`; "right"/"left" are the subject's):

    * ``"cheek"``: one cheek, :func:`cheek_mask` (the projected mesh's cheek vertices; the one
      facing the camera for ``side="auto"``).
    * ``"fringe"``: a hair fringe: a band from the forehead row about a third of the eye distance
      above the brows down across both brows (the uncovered one's lower edge lowered by 8 % of the
      eye distance) and over one eye to the top of its cheekbone; ``side="auto"`` covers the eye
      facing the camera more (the wider one in the photo).
    * ``"cheeks"``: both cheeks, from under the eyes (the lower lids stay visible) to the
      nasolabial folds and down to the mouth corners' height.
    * ``"hand"``: the mouth and chin, as a hand over them: between the nose and the upper lip,
      beyond the mouth corners, down past the chin's contour.
    * ``"sunglasses"``: two lenses (from each brow's lower edge to the top of the cheekbone, the
      side of the nose to the outer orbit) and a bridge over the nose.

    Args:
        geometry: ``landmarks`` (478 or 468, 2+) photo pixels; the 3D eye distance uses their z.
        kind: one of :data:`PROBE_KINDS`.
        side: which side a one-sided kind (``cheek``, ``fringe``) hides: ``"right"``, ``"left"``
            or ``"auto"``; ignored by the others.

    Returns:
        (H, W) bool mask of the photo (``camera.image_size``), True = hidden (write it as white
        pixels to use it as ``--mask``).

    Raises:
        ValueError: an unknown kind or side, or landmarks that are not MediaPipe's.
    """
    return _probe(geometry, kind, side, layout)[0]


@dataclass
class CompletionProbe:
    """What a completion score compares against.

    Attributes:
        mask: (H, W) bool photo mask (True = hidden), usable as ``--mask``.
        hidden: (S, S) bool texels visible in the unmasked unwrap but hidden by the mask.
        reference: (3, S, S) float32 the unmasked unwrap's sampled texture.
        visibility: (S, S) bool V of the unmasked unwrap.
        side: the side a one-sided kind hid (``"right"``/``"left"``), ``"both"`` for the other
            kinds, or ``"given"`` for a mask passed in.
        kind: the probe's kind (:data:`PROBE_KINDS`), or ``"given"`` for a mask passed in.
    """

    mask: np.ndarray
    hidden: torch.Tensor
    reference: torch.Tensor
    visibility: torch.Tensor
    side: str
    kind: str = "cheek"


def completion_probe(photo: np.ndarray, geometry: FaceGeometry, size: int = 512, layout: UVLayout | None = None,
                     *, mask: np.ndarray | None = None, side: str = "auto", kind: str = "cheek",
                     cos_threshold: float | None = None) -> CompletionProbe:
    """Unwrap the photo with and without a mask (default :func:`probe_mask` of ``kind``, today's
    one cheek) and keep the texels the mask hides.

    Args:
        photo: (H, W, 3) uint8 RGB.
        size: texture size S.
        mask: an (H, W) bool photo mask (then ``kind`` and ``side`` do not apply).
        side: the side of a one-sided kind (see :func:`probe_mask`).
        kind: one of :data:`PROBE_KINDS`.
    """
    from .unwrap import unwrap, uv_raster

    layout = layout or default_layout()
    if mask is None:
        mask, side = _probe(geometry, kind, side, layout)
    else:
        mask, side, kind = np.asarray(mask, dtype=bool), "given", "given"
    uvr = uv_raster(layout, size)
    full = unwrap(photo, geometry, size, layout=layout, uvr=uvr, cos_threshold=cos_threshold)
    masked = unwrap(photo, geometry, size, layout=layout, uvr=uvr, mask=mask, cos_threshold=cos_threshold)
    hidden = full.visibility & ~masked.visibility
    return CompletionProbe(mask=mask, hidden=hidden, reference=full.texture, visibility=full.visibility, side=side,
                           kind=kind)


def _luma(x: Any) -> np.ndarray:
    """(S, S) float64 Rec. 601 luma of a (3, S, S) tensor / (S, S, 3) array, or the (S, S) image itself."""
    img = _image(x)
    return np.ascontiguousarray(img @ _LUMA if img.ndim == 3 else img)


def dog_luma(texture: Any, sigma: tuple[float, float], valid: Any = None) -> np.ndarray:
    """Difference of Gaussians of the luma: G(sigma[0]) - G(sigma[1]) (texels; reflected at the
    border), a band-pass of the detail between the two scales.

    With ``valid``, each blur is a normalised convolution over the valid texels only,
    G(l w) / G(w) (w = valid), so that texels outside it (black outside V, outside the UV layout)
    do not leak into the texels near its edge; (0 where G(w) is zero).

    Args:
        texture: (3, S, S) tensor, (S, S, 3) or (S, S) array in [0, 1].
        valid: (S, S) bool, or None for every texel.

    Returns:
        (S, S) float64.
    """
    import cv2

    lum = _luma(texture)
    w = None if valid is None else _mask(valid, lum.shape).astype(np.float64)

    def blur(a: np.ndarray, s: float) -> np.ndarray:
        return cv2.GaussianBlur(a, (0, 0), sigmaX=float(s), sigmaY=float(s), borderType=cv2.BORDER_REFLECT)

    if w is None:
        return blur(lum, sigma[0]) - blur(lum, sigma[1])
    out = np.zeros_like(lum)
    for s, sign in ((sigma[0], 1.0), (sigma[1], -1.0)):
        num, den = blur(lum * w, s), blur(w, s)
        ok = den > 1e-6
        out[ok] += sign * num[ok] / den[ok]
    return out


def detail_ratio(texture: Any, reference: Any, hidden: Any, sigma: tuple[float, float] = DETAIL_SIGMA,
                 erode: float = DETAIL_ERODE, size_ref: int = DETAIL_SIZE_REF, valid: Any = None) -> float:
    """How much fine detail a texture has where the photo was hidden, against the truth.

    The standard deviation of :func:`dog_luma` (Rec. 601 luma; sigmas ``sigma`` texels) of
    ``texture`` over the ``hidden`` texels eroded by ``erode`` texels, divided by the same for
    ``reference``. Sigmas and erosion are given at a texture of ``size_ref`` texels and scale
    with S / ``size_ref`` (the same face detail at every S). The band-pass is computed on the
    whole texture (over ``valid`` only, when given) and then selected: the erosion keeps the
    selected texels away from the edge of the hidden region, where a DoG mixes in what lies beside it.

    1: as much band-pass contrast as the truth; 0: flat (a blur); above 1: more than the truth
    (noise, over-sharpening). A ratio near 1 alone does not make a good completion (noise of the
    right strength scores 1): read it with the PSNR.

    Args:
        texture: (3, S, S) tensor or (S, S, 3) array in [0, 1], made without the hidden texels.
        reference: the same shape, the truth (the unmasked unwrap's sampled texture).
        hidden: (S, S) bool texels that count.
        valid: (S, S) bool texels the band-pass may draw on (e.g. V of the unmasked unwrap, where
            the truth is the photo); None: every texel.

    Returns:
        The ratio (float; nan when no texel remains after the erosion or the truth is flat there).
    """
    import cv2

    t, r = _luma(texture), _luma(reference)
    if t.shape != r.shape:
        raise ValueError(f"texture {t.shape} and reference {r.shape} differ in shape")
    if len(sigma) != 2 or not 0 < sigma[0] < sigma[1]:
        raise ValueError(f"sigma must be two increasing positive numbers, got {sigma!r}")
    k = t.shape[0] / float(size_ref)
    s = (sigma[0] * k, sigma[1] * k)
    sel = _mask(hidden, t.shape).astype(np.uint8)
    rad = round(erode * k)
    if rad > 0:
        se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1))
        sel = cv2.erode(sel, se, borderValue=0)
    sel = sel.astype(bool)
    if not sel.any():
        return float("nan")
    dt, dr = dog_luma(t, s, valid)[sel].std(), dog_luma(r, s, valid)[sel].std()
    return float(dt / dr) if dr > 0 else float("nan")


def completion_score(texture: torch.Tensor, reference: torch.Tensor, hidden: torch.Tensor,
                     valid: torch.Tensor | None = None) -> dict[str, Any]:
    """PSNR, SSIM and detail ratio of ``texture`` against ``reference`` on the ``hidden`` texels.

    Args:
        texture: (3, S, S) float in [0, 1], made without seeing the hidden texels.
        reference: (3, S, S) the unmasked sampled texture (:attr:`CompletionProbe.reference`).
        hidden: (S, S) bool (:attr:`CompletionProbe.hidden`).
        valid: (S, S) bool texels the detail ratio's band-pass may draw on
            (:attr:`CompletionProbe.visibility`, where the reference is the photo); None: all.

    Returns:
        ``{"psnr", "ssim", "detail", "texels"}``; SSIM is the map on the whole texture averaged
        over the hidden texels (see :func:`ssim`); ``detail`` is :func:`detail_ratio`.
    """
    tex = texture.detach().float()
    if tex.shape[-2:] != hidden.shape:
        tex = torch.nn.functional.interpolate(tex[None], size=tuple(hidden.shape), mode="bilinear",
                                              align_corners=False, antialias=True)[0]
    return {"psnr": psnr(reference, tex, hidden), "ssim": ssim(reference, tex, hidden),
            "detail": detail_ratio(tex, reference, hidden, valid=valid), "texels": int(hidden.sum())}


def chroma_drift(texture: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, sigma: float,
                 q: float = 99.0) -> float:
    """How much low-frequency colour a texture gained or lost against a reference (blotches).

    The change of the (U, V) chroma (STROTSS's YUV, :func:`facerefiner.losses.rgb_to_yuv`) from
    ``reference`` to ``texture``, Gaussian-blurred with ``sigma`` texels, in absolute value; its
    ``q``-th percentile over the ``mask`` texels (both chroma channels pooled). 0: no colour
    change at that scale; a blotch of chroma offset c wider than a few sigma gives about c.

    Args:
        texture, reference: (3, S, S) float RGB in [0, 1].
        mask: (S, S) bool, the texels that count.
        sigma: blur in texels (> 0).
    """
    import cv2

    from .losses import rgb_to_yuv

    d = (rgb_to_yuv(texture.detach().float().permute(1, 2, 0).cpu())
         - rgb_to_yuv(reference.detach().float().permute(1, 2, 0).cpu()))[..., 1:].numpy()
    d = np.abs(cv2.GaussianBlur(np.ascontiguousarray(d), (0, 0), float(sigma)))
    sel = d[_mask(mask, d.shape[:2])]
    return float(np.percentile(sel, q)) if sel.size else float("nan")


# --------------------------------------------------------------------------------------------
# 4. seam


def seam_ratio(texture: Any, visibility: Any, valid: Any, width: int = SEAM_WIDTH) -> dict[str, Any]:
    """How visible the boundary of V is in a texture.

    The luma (Rec. 601) gradient magnitude (3x3 Sobel) averaged over the texels within ``width``
    texels of V's boundary, divided by its mean over the face's texels away from the boundary
    (farther than ``2 width + 1``). Both sets stay ``width + 2`` texels inside the layout, so the
    layout's own edge does not count. 1.0: no seam; a step at the boundary raises it.

    The interior holds the eyes, brows and lips, whose gradients are strong, while V's boundary
    mostly runs over the cheeks, so ``ratio`` tends to sit below 1 for seamless textures of real
    faces; ``local_ratio`` divides by the mean over the ring just beyond the band instead (farther
    than ``2 width + 1`` and within ``6 width + 3`` texels of the boundary), which compares the
    boundary with its own surroundings.

    Args:
        texture: (3, S, S) tensor or (S, S, 3) array in [0, 1].
        visibility: (S, S) bool V.
        valid: (S, S) bool texels covered by the UV layout (``uv_raster(layout, S).valid``).

    Returns:
        ``{"ratio", "local_ratio", "boundary", "interior", "boundary_texels", "interior_texels"}``
        (nan when a set is empty).
    """
    import cv2

    img = _image(texture)
    luma = img @ _LUMA if img.ndim == 3 else img
    gx = cv2.Sobel(luma, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(luma, cv2.CV_64F, 0, 1, ksize=3)
    g = np.hypot(gx, gy) / 8.0  # per-texel difference units
    v = _mask(visibility, luma.shape).astype(np.uint8)
    lay = _mask(valid, luma.shape).astype(np.uint8)

    def se(r: int) -> np.ndarray:
        return cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1))

    inner = cv2.erode(lay, se(width + 2), borderValue=0).astype(bool)
    band = (cv2.dilate(v, se(width)) > 0) & ~(cv2.erode(v, se(width), borderValue=1) > 0)
    near = (cv2.dilate(v, se(2 * width + 1)) > 0) & ~(cv2.erode(v, se(2 * width + 1), borderValue=1) > 0)
    wide = (cv2.dilate(v, se(6 * width + 3)) > 0) & ~(cv2.erode(v, se(6 * width + 3), borderValue=1) > 0)
    b, i, r = band & inner, inner & ~near, inner & wide & ~near

    def mean(sel: np.ndarray) -> float:
        return float(g[sel].mean()) if sel.any() else float("nan")

    gb, gi, gr = mean(b), mean(i), mean(r)
    return {"ratio": gb / gi if gi > 0 else float("nan"), "local_ratio": gb / gr if gr > 0 else float("nan"),
            "boundary": gb, "interior": gi, "boundary_texels": int(b.sum()), "interior_texels": int(i.sum())}


# --------------------------------------------------------------------------------------------
# 5. cost


def _find_rss(d: Any) -> float | None:
    if isinstance(d, dict):
        for k, v in d.items():
            if "rss" in str(k).lower() and isinstance(v, (int, float)):
                kk = str(k).lower()
                return float(v) / 2**20 if kk.endswith(("bytes", "_b")) else float(v)
        for v in d.values():
            r = _find_rss(v)
            if r is not None:
                return r
    return None


def cost(report: dict[str, Any]) -> dict[str, Any]:
    """``{"wall_s": sum of report["timings_s"], "peak_rss_mb": ...}`` (RSS only when the report
    has a key with "rss" in its name: MB, or bytes when the key ends in "bytes")."""
    out: dict[str, Any] = {"wall_s": round(sum(float(v) for v in FaceReport(report).timings_s.values()), 4)}
    rss = _find_rss({k: v for k, v in report.items() if k != "metrics"})
    if rss is not None:
        out["peak_rss_mb"] = round(rss, 1)
    return out


# --------------------------------------------------------------------------------------------
# an output folder


@dataclass
class OutputFolder:
    """One face folder written by ``facerefiner unwrap|refine``, read back.

    Attributes:
        texture: (3, S, S) float32 ``texture.png``.
        visibility: (S, S) bool ``visibility.png``.
        complete: whether the texture is filled outside V (refine) or not (unwrap's sampled one).
    """

    folder: Path
    report: dict[str, Any]
    photo: np.ndarray
    geometry: FaceGeometry
    layout: UVLayout
    texture: torch.Tensor
    visibility: torch.Tensor
    valid: torch.Tensor
    complete: bool


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.exists():
        raise InputError(f"{path}: missing (not a complete facerefiner output folder)")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except OSError as e:
        raise InputError(f"{path}: unreadable ({e})") from None


def geometry_from_folder(folder: str | os.PathLike) -> FaceGeometry:
    """The :class:`FaceGeometry` of an output folder from ``mesh.obj`` and ``camera.json``.

    The landmarks are the head model's points that correspond to MediaPipe's 468 (the projected
    vertices for the face mask; no iris points; z in pixels from the camera's scale); the head pose
    is recomputed from the camera, the box is report.json's ``face_box`` (the detector's landmark
    box) when it has one, else the box of those landmarks.
    """
    from .export import read_obj_vertices
    from .heads import get_head

    folder = Path(folder)
    for name in ("mesh.obj", "camera.json"):
        if not (folder / name).exists():
            raise InputError(f"{folder / name}: missing (not a complete facerefiner output folder)")
    try:
        cam = Camera.from_json(json.loads((folder / "camera.json").read_text(encoding="utf-8")))
        verts = read_obj_vertices(folder / "mesh.obj")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise InputError(f"{folder}: unreadable mesh.obj or camera.json ({type(e).__name__})") from None
    report = report_or_none(folder)
    head = get_head(FaceReport(report).head)
    n = head.layout().num_vertices
    if verts.shape != (n, 3):
        raise InputError(f"{folder / 'mesh.obj'}: has {len(verts)} vertices, expected {n} (head {head.name})")
    proj = cam.project(head.landmark_points(verts))
    scale = float(abs(np.linalg.det(cam.K[:2, :2])) ** 0.5)
    lm = np.concatenate([proj[:, :2], (proj[:, 2:3] - proj[:, 2].min()) * (scale if not cam.perspective else 1.0)], 1)
    yaw, pitch, roll = _pose(cam)
    box = FaceReport(report).face_box or bounding_box(proj)
    return FaceGeometry(vertices=verts, camera=cam, landmarks=lm, box=box, yaw=yaw, pitch=pitch, roll=roll,
                        scale=scale, info={"source": str(folder)})


def folder_layout(folder: Path, report: dict[str, Any]) -> UVLayout:
    """The UV layout a face folder was made with: its head model's (report.json's ``head``), the
    shipped face-mask layout, or its ``mesh.obj``'s (a ``--uv-layout`` of the face mask)."""
    from .heads import DEFAULT_HEAD, get_head

    r = FaceReport(report)
    if r.head != DEFAULT_HEAD:
        return get_head(r.head).layout()
    name = r.uv_layout
    return default_layout() if name in (None, default_layout().name) else load_layout(Path(folder) / "mesh.obj")


NO_ALBEDO = "no albedo.png and light.json (made with --no-delight, by unwrap, or no light was found: see report.json's 'light')"


def read_albedo(folder: str | os.PathLike) -> tuple[torch.Tensor, Any]:
    """A face folder's ``albedo.png`` ((3, S, S) float32 in [0, 1]) and ``light.json``
    (:class:`facerefiner.light.Light`).

    Raises:
        InputError: either file is missing or unreadable (one line naming it).
    """
    from .light import Light

    folder = Path(folder)
    a_path, l_path = folder / "albedo.png", folder / "light.json"
    if not (a_path.exists() and l_path.exists()):
        raise InputError(f"{folder}: {NO_ALBEDO}")
    try:
        light = Light.from_json(json.loads(l_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{l_path}: not a light.json ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    alb = torch.from_numpy(load_png_float(a_path)).permute(2, 0, 1).contiguous()  # 16-bit (8-bit: older folders)
    return alb, light


def load_output(folder: str | os.PathLike, photo: str | os.PathLike | np.ndarray | None = None) -> OutputFolder:
    """Read an output folder back: report, photo (``report["input"]`` unless given), geometry,
    layout, texture and visibility.

    Raises:
        InputError: a file is missing or unreadable, or the photo does not match the report.
    """
    from .io import load_image
    from .unwrap import uv_raster

    folder = Path(folder)
    report = read_report(folder)
    geo = geometry_from_folder(folder)
    layout = folder_layout(folder, report)
    if isinstance(photo, np.ndarray):
        rgb = photo
    else:
        src = Path(photo) if photo is not None else (FaceReport(report).input or Path(""))
        if photo is None and not src.is_absolute() and not src.exists() and (folder / src).exists():
            src = folder / src
        if not str(src) or not src.exists():
            raise InputError(f"{folder}: the photo {str(src)!r} (report.json 'input') is missing")
        rgb = load_image(src)
    if (rgb.shape[1], rgb.shape[0]) != tuple(geo.camera.image_size):
        raise InputError(f"{folder}: the photo is {rgb.shape[1]}x{rgb.shape[0]} px but camera.json is for "
                         f"{geo.camera.image_size[0]}x{geo.camera.image_size[1]} px")
    tex = _read_png(folder / "texture.png")
    vis = _read_png(folder / "visibility.png")
    square = tex.ndim == 3 and tex.shape[0] == tex.shape[1] and vis.shape[0] == vis.shape[1]
    if not square or (tex.shape[0] != vis.shape[0] and FaceReport(report).export_size != tex.shape[0]):
        raise InputError(f"{folder}: texture.png {tex.shape[:2]} and visibility.png {vis.shape[:2]} do not match")
    texture = torch.from_numpy(np.array(tex[..., :3])).permute(2, 0, 1).float() / 255.0
    vis = vis if vis.ndim == 2 else vis.max(2)
    if vis.shape[0] != tex.shape[0]:  # --export-size: V at the optimised size, the texture larger
        from PIL import Image

        vis = np.asarray(Image.fromarray(vis).resize(tex.shape[:2][::-1], Image.NEAREST))
    visibility = torch.from_numpy(np.array(vis > 127))
    valid = uv_raster(layout, texture.shape[-1]).valid
    hole = valid & ~visibility
    filled = float((texture.amax(0)[hole] > 1.5 / 255).float().mean()) if bool(hole.any()) else 1.0
    return OutputFolder(folder=folder, report=report, photo=rgb, geometry=geo, layout=layout, texture=texture,
                        visibility=visibility, valid=valid, complete=filled >= COMPLETE_FRACTION)


# --------------------------------------------------------------------------------------------
# all of them


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return round(f, 6) if math.isfinite(f) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_report_metrics(folder: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into ``folder/report.json`` under ``"metrics"`` (temp file + os.replace)."""
    folder = Path(folder)
    report = read_report(folder)
    report["metrics"] = _json_safe(metrics)
    write_report(folder, report)


_warned_identity = False


def _skip_identity(reason: str) -> dict[str, Any]:
    global _warned_identity
    if not _warned_identity:
        log.warning("identity metric skipped: %s", reason)
        _warned_identity = True
    else:
        log.info("identity metric skipped: %s", reason)
    return {"skipped": reason}


def evaluate_folder(folder: str | os.PathLike, *, identity: bool = True,
                    photo: str | os.PathLike | np.ndarray | None = None, write: bool = True,
                    on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compute every metric for one output folder and merge them into its ``report.json``.

    Metrics that do not apply are recorded as ``{"skipped": reason}``: identity without the
    ``eval`` extra (or with ``identity=False``); the turned identity renders, completion and seam
    for an incomplete texture (``unwrap``'s sampled texture); completion for a folder made without
    ``--mask``. The mask may be any photo mask (e.g. a :func:`probe_mask` of any kind, named by
    ``report["settings"]["mask"]``): the hidden texels are those visible in an unmasked unwrap of
    the photo but not in the folder's V, scored against that unwrap's sampled texture
    (:func:`completion_score`: PSNR, SSIM and the detail ratio, its band-pass over that unwrap's V).

    Args:
        folder: OUT/<face> of ``facerefiner unwrap`` or ``refine``.
        identity: compute the identity metric (needs ``pip install "facerefiner[eval]"``).
        photo: the photo, when ``report["input"]`` no longer points to it.
        write: merge the result into ``report.json``.

    Returns:
        The metrics dict (non-finite numbers as floats; ``null`` in the file).

    Raises:
        InputError: the folder or the photo is missing or unreadable.
    """
    stage = on_stage or (lambda s: None)
    t0 = time.perf_counter()
    stage("load")
    out = load_output(folder, photo)
    times: dict[str, float] = {"load": time.perf_counter() - t0}
    incomplete = "texture.png is the sampled texture (not completed outside V)"
    m: dict[str, Any] = {"version": METRICS_VERSION, "texture_complete": out.complete}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        stage(name)
        t = time.perf_counter()
        r = fn()
        times[name] = time.perf_counter() - t
        return r

    m["fidelity"] = timed("fidelity", lambda: visible_fidelity(out.photo, out.texture, out.geometry, out.layout,
                                                             out.visibility))
    m["relit_fidelity"] = timed("relit_fidelity", lambda: relit_fidelity(out, m["fidelity"]["psnr"]))
    if not identity:
        m["identity"] = {"skipped": "disabled (--no-identity)"}
    else:
        try:
            model = identity_model()
        except EvalExtraMissing as e:
            m["identity"] = _skip_identity(str(e))
        else:
            yaws = IDENTITY_YAWS if out.complete else None
            from .heads import get_head

            head = get_head(FaceReport(out.report).head)
            marks = head.landmark_points(out.geometry.vertices)
            m["identity"] = timed("identity", lambda: identity_distances(
                out.photo, out.texture, out.geometry, out.layout, out.visibility if not out.complete else None,
                yaws=yaws, model=model, landmarks=marks, face=head.face_texels(int(out.texture.shape[-1]))))
            if not out.complete:
                m["identity"]["turned"] = {"skipped": incomplete}

    mask_used = FaceReport(out.report).mask
    if not out.complete:
        m["completion"] = {"skipped": incomplete}
    elif not mask_used:
        m["completion"] = {"skipped": "made without --mask (see facerefiner.metrics.probe_mask)"}
    else:
        def _completion() -> dict[str, Any]:
            from .unwrap import unwrap

            S = out.texture.shape[-1]
            full = unwrap(out.photo, out.geometry, S, layout=out.layout, cos_threshold=FaceReport(out.report).cos_threshold)
            hidden = full.visibility & ~out.visibility
            if not bool(hidden.any()):
                return {"skipped": "the mask hides no texel that the photo shows"}
            return {**completion_score(out.texture, full.texture, hidden, full.visibility), "mask": str(mask_used)}

        m["completion"] = timed("completion", _completion)
    m["seam"] = timed("seam", lambda: seam_ratio(out.texture, out.visibility, out.valid)) if out.complete \
        else {"skipped": incomplete}
    m["cost"] = cost(out.report)
    m["eval_timings_s"] = {k: round(v, 4) for k, v in times.items()}
    m["eval_timings_s"]["total"] = round(time.perf_counter() - t0, 4)
    if write:
        stage("write")
        write_report_metrics(out.folder, m)
    return m
