"""Per-photo orchestration shared by the CLI verbs: load, reconstruct, unwrap, render, write.

Each face's folder is written into a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .errors import FaceRefinerError, InputError, NothingVisibleError
from .folder import versions, write_face_folder, write_refined_files  # noqa: F401  (versions: re-exported)
from .io import atomic_dir, load_image, load_mask, to_uint8
from .heads import get_head
from .layout import UVLayout
from .occlusion import face_mask
from .reconstruct import FaceGeometry, FaceMeshDetector, default_detector, reconstruct_all
from .render import render_face
from .unwrap import UnwrapResult, uv_raster, unwrap

log = logging.getLogger(__name__)

#: Long side (px) of ``render.png``; larger photos are composited at this size.
RENDER_MAX_SIDE = 2048


@dataclass
class UnwrapConfig:
    """Settings of ``facerefiner unwrap``."""

    size: int = 512
    """Texture size S (S x S texels)."""
    all_faces: bool = False
    """Process every face of a photo into its own folder (<stem>_face0, ...) instead of the largest."""
    min_face: float = 64.0
    """Ignore faces smaller than this many pixels across."""
    head: str = "mediapipe"
    """Head model: mediapipe (the 468-vertex face mask) or ict (ICT-FaceKit's whole head: ears, neck, scalp, eyes, teeth, with 53 ARKit blendshapes in mesh.glb)."""
    uv_layout: Path | None = None
    """An OBJ with UVs for MediaPipe's 468-vertex topology (e.g. canonical_face_model.obj); default: ours. Only with --head mediapipe."""
    mask: Path | None = None
    """An image the size of the photo whose white pixels are not to be trusted (hand, glasses, hair)."""
    occlusion: str = "auto"
    """auto: find hands, hair, glasses, background and highlights in front of the face and leave them out (added to --mask; occlusion.png shows them); off: trust every pixel --mask does not hide."""


@dataclass
class FaceOutput:
    """What was written for one face."""

    folder: Path
    geometry: FaceGeometry
    unwrapped: UnwrapResult
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class PhotoResult:
    """Outcome for one input photo: the faces written, or the error (one line)."""

    path: Path
    faces: list[FaceOutput] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    """One-line notices about the result (e.g. hidden eyes filled without a prior)."""
    faces_in_photo: int = 0
    """Faces found in the photo (of at least ``min_face`` pixels); more than ``len(faces)`` when
    only the largest was processed (no ``all_faces``)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def face_folder_names(stem: str, n: int, all_faces: bool) -> list[str]:
    return [f"{stem}_face{i}" for i in range(n)] if all_faces else [stem]


def photo_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    a = rgb if rgb.flags.writeable else rgb.copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)


def render_over_photo(rgb: np.ndarray, texture: torch.Tensor, geometry: FaceGeometry, layout: UVLayout,
                      visibility: torch.Tensor | None = None, max_side: int = RENDER_MAX_SIDE) -> np.ndarray:
    """The textured mesh at the input camera composited over the photo (downscaled to ``max_side``).

    Args:
        rgb: (H, W, 3) uint8 photo.
        texture: (3, S, S) float in [0, 1].
        visibility: optional (S, S) bool; texels outside it are transparent (the photo shows
            through), so a sampled texture's holes do not paint black over the photo.

    Returns:
        (h, w, 3) uint8.
    """
    import cv2

    h, w = rgb.shape[:2]
    f = min(1.0, max_side / max(h, w))
    base = rgb if f == 1.0 else cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    cam = geometry.camera.crop(0, 0, base.shape[1], base.shape[0], scale=f)
    alpha = torch.ones_like(texture[:1]) if visibility is None else visibility[None].to(texture.dtype)
    rgba, mask = render_face(torch.cat([texture * alpha, alpha]), geometry.vertices, cam, layout)
    a = torch.where(mask[None], rgba[3:], torch.zeros_like(rgba[3:]))
    out = rgba[:3] * mask[None] + (1 - a) * photo_to_tensor(base)  # premultiplied "over"
    return (out.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _load_and_detect(path: Path, cfg: "UnwrapConfig", detector: FaceMeshDetector | None,
                     stage: Callable[[str], None]):
    """Photo, optional occlusion mask, the faces to process (largest only unless ``all_faces``) and
    the number found, with the clock at start, after loading and after detection."""
    t0 = time.perf_counter()
    stage("load")
    rgb = load_image(path)
    mask = load_mask(cfg.mask, (rgb.shape[1], rgb.shape[0])) if cfg.mask else None
    t1 = time.perf_counter()
    stage("reconstruct")
    geos = reconstruct_all(rgb, min_face=cfg.min_face, detector=detector or default_detector(), source=str(path),
                           head=get_head(cfg.head))
    return rgb, mask, (geos if cfg.all_faces else geos[:1]), len(geos), (t0, t1, time.perf_counter())


def unwrap_photo(path: Path, out_root: Path, cfg: UnwrapConfig, *, layout: UVLayout | None = None,
                 detector: FaceMeshDetector | None = None,
                 on_stage: Callable[[str], None] | None = None) -> PhotoResult:
    """Run reconstruct + unwrap + render on one photo and write its folder(s) under ``out_root``.

    User errors (bad file, no face, ...) are caught and returned in :attr:`PhotoResult.error`.
    """
    res = PhotoResult(path=Path(path))
    try:
        layout = layout or get_head(cfg.head).layout(cfg.uv_layout)
        stage = on_stage or (lambda s: None)
        rgb, mask, geos, res.faces_in_photo, (t0, t1, t2) = _load_and_detect(path, cfg, detector, stage)
        names = face_folder_names(Path(path).stem, len(geos), cfg.all_faces)
        uvr = uv_raster(layout, cfg.size)
        for k, (name, geo) in enumerate(zip(names, geos)):
            stage("occlusion")
            ta = time.perf_counter()
            face_m, occ_report = face_mask(rgb, geo, layout, mask, cfg.occlusion)
            to = time.perf_counter()
            stage("unwrap")
            un = unwrap(rgb, geo, cfg.size, layout=layout, mask=face_m, uvr=uvr)
            tb = time.perf_counter()
            stage("render")
            comp = render_over_photo(rgb, un.texture, geo, layout, un.visibility)
            tc = time.perf_counter()
            timings = {"load": t1 - t0, "reconstruct": (t2 - t1) / len(geos), "occlusion": to - ta, "unwrap": tb - to,
                       "render": tc - tb}
            stage("write")
            with atomic_dir(Path(out_root) / name) as tmp:
                write_face_folder(tmp, path, rgb, geo, un, layout, cfg, comp, timings,
                                  {"face_index": k, "photo_faces": len(geos), "faces_in_photo": res.faces_in_photo,
                                   "occlusion": occ_report}, occlusion=face_m)
                timings["write"] = time.perf_counter() - tc
            res.faces.append(FaceOutput(folder=Path(out_root) / name, geometry=geo, unwrapped=un, timings=timings))
    except FaceRefinerError as e:
        res.error = str(e)
    except MemoryError:
        res.error = f"{path}: out of memory"
    return res


texture_to_uint8 = to_uint8  # (3, S, S) float in [0, 1] -> (S, S, 3) uint8


@dataclass
class RefineOptions(UnwrapConfig):
    """Per-run settings of ``facerefiner refine`` besides the optimisation's :class:`RefineConfig`."""

    content: Path | None = None
    """Your own content texture I_C (this project's UV layout); resampled to the texture size."""
    device: str = "auto"
    """cpu, cuda or auto."""
    prior: Path | None = None
    """A face-texture prior (``facerefiner prior build``): hidden eyes, brows, lips and nose that the mirror cannot fill get its structure; without one they are filled as skin."""
    delight: bool = True
    """Estimate the photo's light and refine in albedo space (the photo's texels de-lit, completed and refined, the rendering term lit by that light); write albedo.png and light.json, and texture.png as the photo's texels plus the albedo under the photo's light; mesh.glb then carries the albedo."""
    export_size: int | None = None
    """Write texture.png (and mesh.glb's texture) at this size: the refined texture upsampled, with
    the photo's own texels where it shows the face (None: the optimisation's size times the head's
    export scale: 1 for mediapipe, 2 for ict)."""


#: The largest texture.png a head's export scale makes by itself (``--export-size`` allows the same).
MAX_EXPORT_SIZE = 4096


def load_content(path: Path) -> torch.Tensor:
    """A content texture file -> (3, h, w) float32 in [0, 1] (any mode converted to RGB)."""
    return photo_to_tensor(load_image(path))


@dataclass
class FaceResult:
    """One face processed by :func:`process_face`, in arrays (nothing written yet).

    Attributes:
        texture: (3, S', S') float32 in [0, 1], ``texture.png`` (S' = ``export_size`` or S).
        sampled: (3, S, S) float32 I_S; visibility: (S, S) bool V; initial: (3, S, S) float32 I_C.
        albedo: the :class:`facerefiner.light.AlbedoResult` when de-lit, else None.
        unwrapped: the :class:`~facerefiner.unwrap.UnwrapResult` the refinement started from.
        occlusion: (H, W) bool, the photo's pixels left out (None: none).
        composite: (h, w, 3) uint8 ``render.png``; views: (h, w, 3) uint8 ``views.png``.
        timings: seconds per stage; report: the report keys besides :func:`write_face_folder`'s;
        notes: one-line notices for the user.
    """

    texture: torch.Tensor
    sampled: torch.Tensor
    visibility: torch.Tensor
    initial: torch.Tensor
    albedo: Any
    unwrapped: UnwrapResult
    occlusion: np.ndarray | None
    composite: np.ndarray
    views: np.ndarray
    timings: dict[str, float]
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def process_face(rgb: np.ndarray, geo: FaceGeometry, layout: UVLayout, opts: RefineOptions, config: Any, *,
                 mask: np.ndarray | None = None, content: torch.Tensor | None = None, extractor: tuple | None = None,
                 prior: Any = None, source: str = "photo", on_stage: Callable[[str], None] | None = None,
                 on_step: Callable[[dict], None] | None = None) -> FaceResult:
    """One face of a photo, array in, arrays out: occlusion, refinement (de-lit unless
    ``opts.delight`` is off), the head's parts, render, contact sheet and export size.

    The path every caller of the refinement shares (``facerefiner refine``, the web app through
    :func:`refine_photo`); :func:`refine_photo` adds loading, detection and writing.

    Args:
        rgb: (H, W, 3) uint8 RGB photo.
        geo: the face's :class:`FaceGeometry` (of ``opts.head``'s model); layout: that head's layout.
        opts: the run's settings; config: the optimisation's :class:`facerefiner.refine.RefineConfig`.
        mask: (H, W) bool, the user's untrusted pixels (``--mask``), added to what ``opts.occlusion`` finds.
        content: (3, h, w) float in [0, 1], the user's own I_C (``opts.content`` loaded).
        extractor: a loaded feature extractor; prior: a loaded :class:`facerefiner.prior.TexturePrior`.
        source: the photo's name for messages.

    Raises:
        FaceRefinerError: a one-line user-facing reason (e.g. the mask hides the whole face).
    """
    from dataclasses import replace

    from .postprocess import upscale_texture
    from .presets import config_dict
    from .refine import NO_LIGHT, refine
    from .views import contact_sheet

    stage = on_stage or (lambda s: None)
    notes: list[str] = []
    stage("occlusion")
    to = time.perf_counter()
    face_m, occ_report = face_mask(rgb, geo, layout, mask, opts.occlusion)
    t_occ = time.perf_counter() - to
    stage("refine")
    try:
        r = refine(rgb, geo, config=config, content=content, mask=face_m, extractor=extractor, layout=layout,
                   device=opts.device, on_step=on_step, prior=prior, delight=opts.delight, source=source)
    except NothingVisibleError as e:  # name the file that hid everything
        raise NothingVisibleError(f"{opts.mask or source}: {e}") from None
    albedo, light_skip = r.albedo, (r.extra.get("light") or {}).get("skipped")
    if (r.extra.get("light") or {}).get("error"):
        notes.append(str(light_skip))
    if opts.delight and content is not None:
        # a user's own I_C is lit: the refinement stays on the lit texture and the albedo
        # is the de-lit photo completed without refinement
        stage("light")
        tl = time.perf_counter()
        from .light import albedo_texture

        try:
            albedo = albedo_texture(rgb, r.unwrapped, geo, layout, detail=config.detail, seed=config.seed,
                                    prior=prior, source=source)
        except InputError as e:  # a nearly black face: the texture is still written, without albedo
            light_skip = str(e)
            notes.append(str(e))
        r.timings["light"] = time.perf_counter() - tl
    head = get_head(opts.head)
    cols = head.part_colours()
    if cols:  # teeth, gums, eyeballs: their own colour where the photo does not show them
        from .complete import fill_parts

        r.texture = fill_parts(r.texture, r.visibility, layout, cols)
        r.initial = fill_parts(r.initial, r.visibility, layout, cols)
        if albedo is not None:
            albedo = replace(albedo, albedo=fill_parts(albedo.albedo, r.visibility, layout, cols))
    stage("views")
    ta = time.perf_counter()
    comp = render_over_photo(rgb, r.texture, geo, layout)
    sheet = contact_sheet(rgb, r.sampled, r.initial, r.texture, comp, geo, layout,
                          occlusion=face_m if face_m is not None else np.zeros(rgb.shape[:2], bool),
                          yaws=head.sheet_yaws)
    if albedo is not None:
        from .views import relit_row

        sheet = np.concatenate([sheet, relit_row(albedo.albedo, albedo.normals, geo, layout, sheet.shape[1])])
    timings = {"occlusion": t_occ, **r.timings, "views": time.perf_counter() - ta}
    report = {"occlusion": occ_report,
              "refine": {"config": config_dict(config), "features": r.features, "device": r.device,
                         "loss_history": r.history,
                         "content": str(opts.content) if opts.content else "facerefiner.complete"},
              "synthesis": r.extra.get("synthesis", {}),
              "light": (albedo.report() if albedo is not None else
                        {"skipped": "--no-delight" if not opts.delight else light_skip or NO_LIGHT})}
    if r.extra.get("synthesis", {}).get("notice"):
        notes.append(r.extra["synthesis"]["notice"])
    out_tex = r.texture
    S = r.texture.shape[-1]
    export_size = opts.export_size or max(S, min(MAX_EXPORT_SIZE, S * head.export_scale))
    if export_size != r.texture.shape[-1]:
        stage("export")
        te = time.perf_counter()
        out_tex = upscale_texture(rgb, geo, r.texture, export_size, layout=layout, mask=face_m, part_colours=cols)
        if albedo is not None:  # the albedo at the same size (upsampled: it has no photo texels to re-sample)
            up = torch.nn.functional.interpolate(albedo.albedo[None].float(), size=(export_size,) * 2,
                                                 mode="bicubic", align_corners=False)[0].clamp(0, 1)
            albedo = replace(albedo, albedo=up)
        timings["export"] = time.perf_counter() - te
        report["export_size"] = int(export_size)
    return FaceResult(texture=out_tex, sampled=r.sampled, visibility=r.visibility, initial=r.initial, albedo=albedo,
                      unwrapped=r.unwrapped, occlusion=face_m, composite=comp, views=sheet, timings=timings,
                      report=report, notes=notes)


def refine_photo(path: Path, out_root: Path, opts: RefineOptions, config: Any, *, layout: UVLayout | None = None,
                 detector: FaceMeshDetector | None = None, extractor: tuple | None = None,
                 prior: Any = None, on_stage: Callable[[str], None] | None = None,
                 on_step: Callable[[dict], None] | None = None) -> PhotoResult:
    """Reconstruct, unwrap, complete and refine one photo; write each face's folder under ``out_root``.

    Loading, detection and writing around :func:`process_face` (one call per face).
    ``prior``: a loaded :class:`facerefiner.prior.TexturePrior` (default: ``opts.prior`` is read).
    User errors are caught and returned in :attr:`PhotoResult.error` (one line).
    """
    res = PhotoResult(path=Path(path))
    try:
        layout = layout or get_head(opts.head).layout(opts.uv_layout)
        stage = on_stage or (lambda s: None)
        rgb, mask, geos, res.faces_in_photo, (t0, _, t2) = _load_and_detect(path, opts, detector, stage)
        content = load_content(opts.content) if opts.content else None
        if prior is None and opts.prior:
            from .prior import load_prior

            prior = load_prior(opts.prior, layout)
        t_load = t2 - t0
        names = face_folder_names(Path(path).stem, len(geos), opts.all_faces)
        for k, (name, geo) in enumerate(zip(names, geos)):
            f = process_face(rgb, geo, layout, opts, config, mask=mask, content=content, extractor=extractor,
                             prior=prior, source=str(path), on_stage=stage, on_step=on_step)
            res.notes.extend(f"{name}: {n}" for n in f.notes)
            timings = {"load_and_detect": t_load, **f.timings}
            extra = {"face_index": k, "photo_faces": len(geos), "faces_in_photo": res.faces_in_photo, **f.report}
            stage("write")
            with atomic_dir(Path(out_root) / name) as tmp:
                write_face_folder(tmp, path, rgb, geo, f.unwrapped, layout, opts, f.composite, timings, extra,
                                  texture=f.texture, occlusion=f.occlusion,
                                  material=None if f.albedo is None else f.albedo.albedo, thumbnail=False)
                write_refined_files(tmp, sampled=f.sampled, visibility=f.visibility, initial=f.initial,
                                    views=f.views, albedo=None if f.albedo is None else f.albedo.albedo,
                                    light=None if f.albedo is None else f.albedo.light)
            res.faces.append(FaceOutput(folder=Path(out_root) / name, geometry=geo, unwrapped=f.unwrapped,
                                        timings=timings))
    except FaceRefinerError as e:
        res.error = str(e)
    except MemoryError:
        res.error = f"{path}: out of memory"
    return res


class PhotoSource:
    """The photos named by paths, folders and glob patterns, enumerated lazily (:func:`photo_source`).

    Iterating yields Paths in the order of the inputs: a file as given; a folder's image files (by
    suffix, :data:`facerefiner.io.IMAGE_SUFFIXES`; nothing is read) sorted by name; a glob
    pattern's files, sorted. A folder is listed with one ``os.scandir`` when its turn comes, and
    only its names are held while its photos are handed out (to sort them; 69 bytes a name of 11
    characters, so under 10 MB for a folder of 100,000 photos); no photo is opened before its turn
    in the batch.
    Each iteration lists the folders again (a photo added meanwhile is seen).
    """

    def __init__(self, inputs: Iterable[str | Path]) -> None:
        self.inputs = [str(s) for s in inputs]

    def __iter__(self) -> Iterator[Path]:
        import glob

        from .io import IMAGE_SUFFIXES

        for s in self.inputs:
            p = Path(s)
            if p.is_dir():
                try:
                    with os.scandir(p) as it:
                        names = [e.name for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                                 and e.is_file()]
                except OSError as e:
                    raise InputError(f"{s}: cannot list this folder ({e.strerror or e})") from None
                names.sort()
                for name in names:
                    yield p / name
            elif p.exists():
                yield p
            elif _is_pattern(s):
                yield from sorted(Path(q) for q in glob.iglob(s) if os.path.isfile(q))

    def first(self) -> Path | None:
        """The first photo, or None when the inputs hold none (lists folders until one is found)."""
        return next(iter(self), None)

    def count(self) -> int:
        """How many photos the inputs hold now (one listing of each folder; nothing kept)."""
        return sum(1 for _ in self)


def _is_pattern(s: str) -> bool:
    return any(c in s for c in "*?[")


def photo_source(inputs: Iterable[str | Path]) -> PhotoSource:
    """The photos of ``inputs`` (paths, folders and glob patterns) as a lazy :class:`PhotoSource`,
    after checking each input.

    Raises:
        InputError: a path that does not exist, or a glob pattern that matches no file: a usage
            error, reported before anything is written (a typo must not become a "failed" photo
            in a summary). A folder without photos gives no photos, and no error.
    """
    import glob

    inputs = [str(s) for s in inputs]
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            try:
                with os.scandir(p):  # listable (opened, not read)
                    pass
            except OSError as e:
                raise InputError(f"{s}: cannot list this folder ({e.strerror or e})") from None
            continue
        if p.exists():
            continue
        if _is_pattern(s):
            if not any(os.path.isfile(q) for q in glob.iglob(s)):
                raise InputError(f"{s}: no file matches this pattern")
        else:
            raise InputError(f"{s}: no such file or folder")
    return PhotoSource(inputs)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Photos from paths, folders (their image files, sorted) and glob patterns, as a list
    (:func:`photo_source`, whose errors it raises; for a handful of photos: a batch streams them
    from the :class:`PhotoSource` instead)."""
    return list(photo_source(inputs))
