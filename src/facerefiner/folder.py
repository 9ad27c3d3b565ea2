"""The output folder of one face, ``OUT/<face>/``: its files and ``report.json``, written and read here.

Every verb that writes a face folder (``unwrap``, ``refine``, the benchmark) writes it through
:func:`write_face_folder` (into a temporary folder that :func:`facerefiner.io.atomic_dir` renames
into place, so "the folder has a report.json" means "finished"); every reader finds face folders
with :func:`face_folders` / :func:`is_face_folder` and reads the report with :func:`read_report`
(a user-facing :class:`~facerefiner.errors.InputError` naming the file) or :func:`report_or_none`,
and its keys through :class:`FaceReport` (each key spelled once, here).

Files (those a verb writes; ``FILES`` lists them in the order the gallery links them):

=========================  =====================================================================
``texture.png``            the texture (RGB, S x S, or ``export_size``)
``mesh.glb``               mesh + texture (the albedo when de-lit), the head's morph targets
``mesh.obj``               mesh with UVs (its ``mesh.mtl`` points to ``texture.png``)
``camera.json``            the photo's camera (:meth:`facerefiner.camera.Camera.to_json`)
``report.json``            what was done: see :func:`write_face_folder`'s keys
``render.png``             the texture rendered over the photo
``views.png``              contact sheet (refine): photo, textures, render, turned views
``visibility.png``         V, white = the texel shows the photo
``occlusion.png``          the photo's pixels left out, white
``texture_sampled.png``    I_S, RGBA (alpha = V) (refine)
``texture_initial.png``    I_C, the completed content texture (refine)
``albedo.png``             de-lit albedo, 16 bits per channel (refine, when de-lit)
``light.json``             the photo's light (refine, when de-lit)
``mesh.mtl``               the OBJ's material
``thumb.jpg``              the gallery's thumbnail of ``views.png`` (refine) or ``render.png``
                           (unwrap), made by whoever writes the folder (:func:`write_thumb`)
=========================  =====================================================================

The thumbnail is written with the folder (by the worker that makes it, inside the temporary
folder), so the gallery (``OUT/index.html``) only reads it; :func:`ensure_thumb` makes one for a
folder that lacks it (written by an older version) or whose source image is newer.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import InputError
from .io import save_json, save_png, save_png16, to_uint8

log = logging.getLogger(__name__)

REPORT = "report.json"
TEXTURE = "texture.png"
MESH_GLB = "mesh.glb"
MESH_OBJ = "mesh.obj"
MESH_MTL = "mesh.mtl"
CAMERA = "camera.json"
RENDER = "render.png"
VIEWS = "views.png"
VISIBILITY = "visibility.png"
OCCLUSION = "occlusion.png"
SAMPLED = "texture_sampled.png"
INITIAL = "texture_initial.png"
ALBEDO = "albedo.png"
LIGHT = "light.json"
THUMB = "thumb.jpg"
#: Largest thumbnail, (width, height) in pixels: a views.png strip stays a strip, render.png a square.
THUMB_BOX = (1600, 240)
#: The images a thumbnail is made from, the first present.
THUMB_SOURCES = (VIEWS, RENDER)
#: The files of a face folder, in the order the gallery links them.
FILES = (TEXTURE, MESH_GLB, MESH_OBJ, REPORT, RENDER, VIEWS, SAMPLED, INITIAL, ALBEDO, LIGHT, CAMERA, VISIBILITY,
         OCCLUSION, MESH_MTL, THUMB)

__all__ = ["REPORT", "FILES", "THUMB", "THUMB_BOX", "FaceReport", "is_face_folder", "face_folders", "face_names",
           "read_report", "report_or_none", "write_report", "write_face_folder", "write_refined_files", "write_thumb",
           "thumb_source", "ensure_thumb", "versions", "settings_json"]


# --- finding and reading ----------------------------------------------------------------------------

def is_face_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished face folder (it has a ``report.json``)."""
    return (Path(path) / REPORT).is_file()


def face_names(root: str | os.PathLike) -> list[str]:
    """The names of the face folders in ``root`` (its subfolders with a report.json; hidden ones,
    i.e. temporary, excluded), sorted; [] when ``root`` cannot be listed.

    One directory listing (``os.scandir``: no stat per entry to tell folders from files) and one
    stat per subfolder; names only (a short string each), for roots of 100,000 faces.
    """
    names: list[str] = []
    try:
        with os.scandir(root) as it:
            for e in it:
                if not e.name.startswith(".") and e.is_dir() and os.path.isfile(os.path.join(e.path, REPORT)):
                    names.append(e.name)
    except OSError:
        return []
    names.sort()
    return names


def face_folders(root: str | os.PathLike, *, itself: bool = False) -> list[Path]:
    """The face folders in ``root`` (:func:`face_names` as paths), sorted by name; with
    ``itself``, ``[root]`` when ``root`` is one."""
    root = Path(root)
    if itself and is_face_folder(root):
        return [root]
    return [root / n for n in face_names(root)]


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/report.json`` as a dict.

    Raises:
        InputError: no such folder, no report.json, unreadable or not a JSON object (one line,
            naming the path).
    """
    p = Path(folder) / REPORT
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: no such folder")
    if not p.exists():
        raise InputError(f"{folder}: no {REPORT} (not a facerefiner output folder)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(d, dict):
        raise InputError(f"{p}: unreadable (not a JSON object)")
    return d


def report_or_none(folder: str | os.PathLike) -> dict[str, Any] | None:
    """:func:`read_report`, or None when it is missing or unreadable."""
    try:
        return read_report(folder)
    except InputError:
        return None


class FaceReport:
    """A face folder's report.json, read: the keys its readers use, each spelled once here, typed,
    with what a report without it (an older version's, or one edited by hand) means.

    ``FaceReport(d)`` over the dict of :func:`read_report`; :attr:`data` is that dict. A key of
    the wrong type reads as absent. The keys are written by :func:`write_face_folder` (and the
    ``extra`` of the verb that wrote the folder), ``metrics`` by ``facerefiner eval``.
    """

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any] | None) -> None:
        self.data = data if isinstance(data, dict) else {}

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        v = self.data.get(key)
        if isinstance(v, bool):  # JSON's true is not a number
            return default
        return v if isinstance(v, kind) else default

    @property
    def input(self) -> Path | None:
        """The photo the folder was made from (``input``), or None."""
        v = self._get("input", str)
        return Path(v) if v else None

    @property
    def head(self) -> str:
        """The head model's registry name (``head``; a report from before heads: the default)."""
        from .heads import DEFAULT_HEAD

        return self._get("head", str, DEFAULT_HEAD)

    @property
    def uv_layout(self) -> str | None:
        """The UV layout's name (``uv_layout``)."""
        return self._get("uv_layout", str)

    @property
    def face_box(self) -> tuple[float, float, float, float] | None:
        """The detector's landmark box in photo pixels, ``(x0, y0, x1, y1)`` (``face_box``), or None."""
        v = self._get("face_box", list)
        ok = v is not None and len(v) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        return tuple(float(x) for x in v) if ok and v[2] > v[0] and v[3] > v[1] else None

    @property
    def texture_size(self) -> int | None:
        """The optimisation's (or unwrap's) texture size S (``texture_size``)."""
        return self._get("texture_size", int)

    @property
    def export_size(self) -> int | None:
        """texture.png's size when it is not S (``export_size``), else None."""
        return self._get("export_size", int)

    @property
    def visible_fraction(self) -> float | None:
        """The share of the texture's texels that show the photo (``visible_fraction``)."""
        return self._get("visible_fraction", (int, float))

    @property
    def cos_threshold(self) -> float | None:
        """The visibility's cosine threshold (``cos_threshold``)."""
        return self._get("cos_threshold", (int, float))

    @property
    def head_pose_deg(self) -> dict[str, float]:
        """``{"yaw", "pitch", "roll"}`` in degrees (``head_pose_deg``; empty when absent)."""
        return self._get("head_pose_deg", dict, {})

    @property
    def timings_s(self) -> dict[str, float]:
        """Seconds per stage (``timings_s``; empty when absent)."""
        return {k: v for k, v in self._get("timings_s", dict, {}).items() if isinstance(v, (int, float))}

    @property
    def photo_faces(self) -> int | None:
        """How many face folders the run wrote for the photo (``photo_faces``; ``--all-faces``)."""
        return self._get("photo_faces", int)

    @property
    def faces_in_photo(self) -> int | None:
        """How many faces the photo has (``faces_in_photo``)."""
        return self._get("faces_in_photo", int)

    @property
    def occlusion_share(self) -> float | None:
        """The share of the face left out as occluded, all sources (``occlusion.face_share.total``)."""
        share = (self._get("occlusion", dict, {}) or {}).get("face_share")
        v = share.get("total") if isinstance(share, dict) else None
        return v if isinstance(v, (int, float)) else None

    @property
    def refine(self) -> dict[str, Any] | None:
        """What the refinement did (``refine``: config, features, device, loss history), or None
        for an unwrap folder."""
        return self._get("refine", dict)

    @property
    def settings(self) -> dict[str, Any]:
        """The run's settings (``settings``; empty when absent)."""
        return self._get("settings", dict, {})

    @property
    def mask(self) -> str | None:
        """The user's ``--mask`` file (``settings.mask``), or None."""
        v = self.settings.get("mask")
        return v if isinstance(v, str) and v else None

    @property
    def metrics(self) -> dict[str, Any] | None:
        """``facerefiner eval``'s metrics (``metrics``), or None before it ran."""
        return self._get("metrics", dict)


def write_report(folder: str | os.PathLike, report: dict[str, Any]) -> None:
    """Write ``report`` as ``folder/report.json`` (temporary file + rename; NaN refused)."""
    save_json(Path(folder) / REPORT, report, allow_nan=False)


# --- writing ----------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    """The versions a report records: facerefiner, torch, mediapipe, numpy, Python."""
    import mediapipe

    return {"facerefiner": __version__, "torch": torch.__version__, "mediapipe": mediapipe.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def settings_json(cfg: Any) -> dict[str, Any]:
    """A config dataclass (or dict) as JSON values (paths as strings, tuples as lists)."""
    d = cfg if isinstance(cfg, dict) else asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def write_face_folder(folder: Path, path: Path, rgb: np.ndarray, geo: Any, un: Any, layout: Any, cfg: Any,
                      composite: np.ndarray, timings: dict[str, float], extra: dict[str, Any] | None = None,
                      texture: torch.Tensor | None = None, occlusion: np.ndarray | None = None,
                      material: torch.Tensor | None = None, thumbnail: bool = True) -> None:
    """Write the files every verb writes into ``folder`` (a temporary folder, renamed by the caller).

    Args:
        path: the photo (recorded as ``input``).
        rgb: (H, W, 3) uint8 photo.
        geo: its :class:`~facerefiner.reconstruct.FaceGeometry`; un: its
            :class:`~facerefiner.unwrap.UnwrapResult`; layout: the head's UV layout.
        cfg: the settings (a dataclass or dict, recorded under ``settings``; its ``head`` names the
            head model, default :data:`facerefiner.heads.DEFAULT_HEAD`).
        composite: (h, w, 3) uint8 ``render.png``.
        timings: seconds per stage (``timings_s``).
        extra: more report keys (merged last).
        texture: (3, S, S) float in [0, 1], ``texture.png`` (default the sampled one).
        occlusion: (H, W) bool, the photo's pixels left out (``occlusion.png``; none when absent).
        material: (3, S, S) float in [0, 1], the albedo ``mesh.glb`` carries (default ``texture.png``).
        thumbnail: write ``thumb.jpg`` from ``composite`` (False when :func:`write_refined_files`
            follows: it makes the thumbnail from ``views.png``).

    The report's keys: input, image_size, face_box, head_pose_deg, uv_layout, the head model's
    (:meth:`facerefiner.heads.HeadModel.report`: head, fit, weights), texture_size,
    visible_fraction, cos_threshold, settings, timings_s, versions, then ``extra``'s.
    """
    from .export import glb_bytes, write_obj
    from .heads import get_head

    folder = Path(folder)
    write_obj(folder / MESH_OBJ, geo.vertices, layout, texture_name=TEXTURE)
    save_json(folder / CAMERA, geo.camera.to_json())
    tex8 = to_uint8(un.texture if texture is None else texture)
    save_png(folder / TEXTURE, tex8)
    glb_tex = tex8 if material is None else to_uint8(material)
    head = get_head(cfg.get("head") if isinstance(cfg, dict) else getattr(cfg, "head", None))
    (folder / MESH_GLB).write_bytes(glb_bytes(geo.vertices, layout, glb_tex, morph=head.morph_targets(geo)))
    save_png(folder / VISIBILITY, un.visibility.numpy().astype(np.uint8) * 255)
    save_png(folder / OCCLUSION, (np.zeros(rgb.shape[:2], np.uint8) if occlusion is None
                                  else np.asarray(occlusion, bool).astype(np.uint8) * 255))
    save_png(folder / RENDER, composite)
    if thumbnail:
        write_thumb(folder, composite)
    report = {
        "input": str(Path(path)),
        "image_size": [int(rgb.shape[1]), int(rgb.shape[0])],
        "face_box": [round(float(v), 2) for v in geo.box],
        "head_pose_deg": {k: round(v, 2) for k, v in geo.pose().items()},
        "uv_layout": layout.name,
        **head.report(geo),
        "texture_size": int(un.texture.shape[-1]),
        "visible_fraction": float(un.visibility.float().mean()),
        "cos_threshold": un.threshold,
        "settings": settings_json(cfg),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "versions": versions(),
    }
    if extra:
        report.update(extra)
    save_json(folder / REPORT, report)


def write_refined_files(folder: Path, *, sampled: torch.Tensor, visibility: torch.Tensor, initial: torch.Tensor,
                        views: np.ndarray, albedo: torch.Tensor | None = None, light: Any = None) -> None:
    """The files ``refine`` adds to :func:`write_face_folder`'s: ``texture_sampled.png`` (I_S, RGBA,
    alpha = ``visibility``), ``texture_initial.png`` (I_C), ``views.png``, its ``thumb.jpg`` and,
    when de-lit, ``albedo.png`` and ``light.json`` (``light``: a :class:`facerefiner.light.Light`).

    Args:
        sampled, initial, albedo: (3, S, S) float in [0, 1]; visibility: (S, S) bool;
        views: (h, w, 3) uint8 contact sheet.
    """
    folder = Path(folder)
    if albedo is not None:
        save_png16(folder / ALBEDO, albedo)  # 16 bits: relit under bright lights without banding
        save_json(folder / LIGHT, light.to_json())
    rgba = np.concatenate([to_uint8(sampled), visibility.numpy().astype(np.uint8)[..., None] * 255], axis=2)
    save_png(folder / SAMPLED, rgba)
    save_png(folder / INITIAL, to_uint8(initial))
    save_png(folder / VIEWS, views)
    write_thumb(folder, views)


# --- the thumbnail ----------------------------------------------------------------------------------

def thumb_jpeg(image: Any) -> bytes:
    """``image`` (an (H, W, 3) uint8 array or a PIL image) shrunk to fit :data:`THUMB_BOX`, as
    JPEG bytes (quality 85)."""
    import io

    from PIL import Image

    im = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    im.thumbnail(THUMB_BOX)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


def write_thumb(folder: str | os.PathLike, image: Any) -> Path:
    """Write ``folder/thumb.jpg`` from ``image`` (see :func:`thumb_jpeg`), atomically (temporary
    file + rename); returns its path."""
    from .io import atomic_write_bytes

    dst = Path(folder) / THUMB
    atomic_write_bytes(dst, thumb_jpeg(image))
    return dst


def thumb_source(folder: str | os.PathLike, names: Any = None) -> str | None:
    """The name of the image ``folder``'s thumbnail shows (``views.png``, else ``render.png``), or
    None when it has neither. ``names``: the folder's file names when already listed (a set), to
    spare a stat per candidate."""
    folder = Path(folder)
    for n in THUMB_SOURCES:
        if (n in names) if names is not None else (folder / n).is_file():
            return n
    return None


def ensure_thumb(folder: str | os.PathLike, names: Any = None) -> str | None:
    """The image to show for ``folder``: ``thumb.jpg`` when it is there and at least as new as its
    source (the usual case: the worker wrote it with the folder), else made now from the source
    (a folder from an older version, or a source replaced since); the source's own name when no
    thumbnail can be written; None when the folder has no image. ``names`` as :func:`thumb_source`."""
    folder = Path(folder)
    src = thumb_source(folder, names)
    if src is None:
        return None
    dst = folder / THUMB
    try:
        if (names is None or THUMB in names) and dst.is_file() and \
                dst.stat().st_mtime_ns >= (folder / src).stat().st_mtime_ns:
            return THUMB
        from PIL import Image

        with Image.open(folder / src) as im:
            write_thumb(folder, im)
        return THUMB
    except Exception as e:  # noqa: BLE001  (a gallery entry without a thumbnail beats no gallery)
        log.info("%s: no thumbnail (%s); showing %s instead", folder, e, src)
        return src
