"""The local web app of ``facerefiner serve``: a photo in, the refined texture, the contact sheet,
an interactive 3D view of ``mesh.glb`` and a zip of the face's folder out.

Built with Gradio (the optional extra ``app``: ``pip install "facerefiner[app]"``). Gradio is
imported only by :func:`build_app` and :func:`launch`, so the helpers here (per-run folders, the
upload check, the mask, the progress mapping) work and are tested without it.

Isolation and clean-up: every run works in its own fresh folder (``tempfile.mkdtemp``) under the
app's private root; a session's folders are deleted when it starts its next run, when its browser
tab closes (``Blocks.unload``), after :data:`MAX_AGE_S` and, with the whole root, when the process
exits. Gradio's own copies of uploads and results go to a private temporary folder of this process
(:func:`use_private_gradio_temp`), deleted when the server stops (:func:`shutdown`) or the process
exits; while it runs, ``Blocks(delete_cache=...)`` deletes the old ones. Nothing is served from the
run folders themselves: results reach the browser through Gradio's cache.
"""

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import FaceRefinerError, InputError

log = logging.getLogger(__name__)

#: Presets offered in the UI, fastest first, with what to expect on a 2-core CPU.
PRESET_CHOICES = (
    ("quick: seconds, 128 x 128 (a smoke test)", "quick"),
    ("default: about a minute, 512 x 512", "default"),
    ("paper: the authors' schedule, an hour or more on a CPU", "paper"),
)
#: Run folders (and Gradio's cached files) older than this are deleted (seconds).
MAX_AGE_S = 3600
#: How often Gradio sweeps its cache of this app's files (seconds).
CACHE_SWEEP_S = 600
#: Long side (px) of the photo shown in the mask editor (the mask is scaled back to the photo); the
#: editor's canvas is this size, so the photo fills it whatever its own size.
PREVIEW_SIDE = 800

_INSTALL_HINT = 'pip install "facerefiner[app]"  (in a checkout: pip install -e ".[app]")'


_gradio_temp: Path | None = None  # the private folder use_private_gradio_temp made (None: none now)


def use_private_gradio_temp() -> Path | None:
    """Point Gradio's temporary folder (``GRADIO_TEMP_DIR``) at a fresh private folder of this
    process, unless the user chose one; returns it (None when the user's setting stands).

    Why: Gradio's default is ``/tmp/gradio``, shared by every Gradio app, and its ``delete_cache``
    deletes its copies of uploads and results but not the folders it made for them: a stopped server
    left dozens of empty folders and files there. A private folder can simply be deleted
    (:func:`remove_private_gradio_temp`). Gradio reads the variable when it is imported, when each
    component is made and at launch, so call this before Gradio is imported (``serve`` does; so does
    :func:`build_app`, for a process that imported Gradio already). Calling it again returns the
    same folder.
    """
    global _gradio_temp
    if _gradio_temp is not None and os.environ.get("GRADIO_TEMP_DIR") == str(_gradio_temp):
        return _gradio_temp
    if os.environ.get("GRADIO_TEMP_DIR"):
        return None
    _gradio_temp = Path(tempfile.mkdtemp(prefix="facerefiner-gradio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(_gradio_temp)
    atexit.register(remove_private_gradio_temp)
    return _gradio_temp


def remove_private_gradio_temp() -> None:
    """Delete the folder :func:`use_private_gradio_temp` made, with everything Gradio put there, and
    unset ``GRADIO_TEMP_DIR`` again (a later app in this process gets a fresh folder)."""
    global _gradio_temp
    d, _gradio_temp = _gradio_temp, None
    if d is None:
        return
    shutil.rmtree(d, ignore_errors=True)
    if os.environ.get("GRADIO_TEMP_DIR") == str(d):
        del os.environ["GRADIO_TEMP_DIR"]


def gradio_missing() -> str | None:
    """None when Gradio imports, else the one-line message with the install command."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        return f"the web app needs Gradio, which is not installed: {_INSTALL_HINT}"
    return None


# --- per-run folders ------------------------------------------------------------------------------


class RunFolders:
    """Fresh per-run folders under a private root, remembered per session for clean-up."""

    def __init__(self, root: str | os.PathLike | None = None, max_age_s: float = MAX_AGE_S):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="facerefiner-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._by_session: dict[str, list[Path]] = {}
        self._lock = threading.Lock()

    def new(self, session: str | None) -> Path:
        """A new empty folder for one run of ``session`` (its earlier runs' folders are deleted:
        their results were handed to Gradio already); also sweeps folders past the age limit."""
        self.sweep()
        key = session or "-"
        with self._lock:
            old = self._by_session.pop(key, [])
        for d in old:
            shutil.rmtree(d, ignore_errors=True)
        d = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        with self._lock:
            self._by_session[key] = [d]
        return d

    def end_session(self, session: str | None) -> None:
        """Delete every folder of ``session`` (its tab was closed)."""
        with self._lock:
            dirs = self._by_session.pop(session or "-", [])
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete run folders older than ``max_age_s``; returns those deleted."""
        now = time.time() if now is None else now
        gone = []
        if not self.root.is_dir():
            return gone
        for d in self.root.iterdir():
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
                    gone.append(d)
            except OSError:
                continue
        if gone:
            with self._lock:
                for k in list(self._by_session):
                    self._by_session[k] = [d for d in self._by_session[k] if d not in gone]
        return gone

    def cleanup(self) -> None:
        """Delete the whole root (at exit)."""
        shutil.rmtree(self.root, ignore_errors=True)
        with self._lock:
            self._by_session.clear()


# --- inputs ---------------------------------------------------------------------------------------


def safe_stem(name: str | os.PathLike | None) -> str:
    """A file name's stem reduced to letters, digits, ``.``, ``_`` and ``-`` (never empty)."""
    stem = Path(str(name or "")).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "photo"
    return stem[:80]


def check_photo(path: str | os.PathLike, display_name: str | None = None) -> np.ndarray:
    """The upload as an upright RGB photo (:func:`facerefiner.io.load_image`).

    Raises:
        InputError: not an image (or corrupt, too large, too small), with a one-line message that
            names ``display_name`` instead of the server-side temporary path.
    """
    from .io import load_image

    try:
        return load_image(path)
    except InputError as e:
        raise InputError(clean_message(str(e), path, display_name)) from None


def clean_message(msg: str, path: str | os.PathLike | None, display_name: str | None) -> str:
    """``msg`` with the server-side ``path`` replaced by the user's file name."""
    msg = str(msg).splitlines()[0] if msg else "failed"
    if path is not None:
        msg = msg.replace(str(path), display_name or Path(str(path)).name)
    return msg


#: Colour of the mask editor's brush, and of the occluders "Find occluders" paints (RGBA).
MASK_RGBA = (255, 0, 255, 153)


def preview(rgb: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """The photo scaled to ``side`` pixels on its long side (for the mask editor)."""
    h, w = rgb.shape[:2]
    f = side / max(h, w)
    if f == 1.0:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))


def _resize_bool(m: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (m.shape[1], m.shape[0]) == tuple(size_wh):
        return m
    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(tuple(size_wh), Image.NEAREST)) > 127


def _same_aspect(a_wh: tuple[int, int], b_wh: tuple[int, int], tol: float = 0.02) -> bool:
    return abs(a_wh[0] / a_wh[1] - b_wh[0] / b_wh[1]) <= tol * (b_wh[0] / b_wh[1])


def painted_mask(layers: list[Any] | None, size_wh: tuple[int, int]) -> np.ndarray | None:
    """The union of the editor's painted layers (alpha > 0) scaled to the photo, or None when
    nothing was painted.

    Args:
        layers: (h, w, 4) uint8 RGBA arrays (or (h, w, 3) / (h, w), where non-black counts).
        size_wh: (W, H) of the photo.

    Raises:
        InputError: a layer's aspect ratio differs from the photo's (it would not line up).
    """
    union = None
    for layer in layers or []:
        if layer is None:
            continue
        a = np.asarray(layer)
        m = a[..., 3] > 0 if a.ndim == 3 and a.shape[2] == 4 else (a.max(axis=2) if a.ndim == 3 else a) > 0
        if not m.any():
            continue
        if not _same_aspect((m.shape[1], m.shape[0]), size_wh):
            raise InputError(f"the painted mask is {m.shape[1]}x{m.shape[0]} px, not the photo's shape "
                             f"({size_wh[0]}x{size_wh[1]}); upload the photo again and repaint")
        m = _resize_bool(m, size_wh)
        union = m if union is None else union | m
    return union


def uploaded_mask(path: str | os.PathLike, size_wh: tuple[int, int], display_name: str | None = None) -> np.ndarray:
    """A mask image (white = not trusted) scaled to the photo; the same aspect ratio is required."""
    rgb = check_photo(path, display_name)
    name = display_name or Path(str(path)).name
    if not _same_aspect((rgb.shape[1], rgb.shape[0]), size_wh):
        raise InputError(f"{name}: mask is {rgb.shape[1]}x{rgb.shape[0]} px, not the photo's shape "
                         f"({size_wh[0]}x{size_wh[1]})")
    return _resize_bool(rgb.max(axis=2) > 127, size_wh)


# --- progress -------------------------------------------------------------------------------------


class StageProgress:
    """Turns the pipeline's ``on_stage`` / ``on_step`` callbacks into ``report(fraction, text)``.

    Loading and detection take the first 10 %, the optimisation's steps 10-90 % (in proportion to
    the schedule's steps), writing the rest.
    """

    _AT = {"load": 0.0, "reconstruct": 0.03, "occlusion": 0.07, "refine": 0.1, "light": 0.9, "views": 0.91,
           "export": 0.93, "write": 0.95}
    _TEXT = {"load": "loading the photo", "reconstruct": "finding the face",
             "occlusion": "finding what covers the face", "refine": "refining the texture",
             "light": "estimating the light, de-lighting the texture",
             "views": "rendering the views", "write": "writing the mesh, texture and views",
             "export": "upsampling the texture"}

    def __init__(self, report: Callable[[float, str], None], total_steps: int):
        self.report = report
        self.total = max(1, int(total_steps))
        self.done = 0

    def stage(self, name: str) -> None:
        self.report(self._AT.get(name, 0.0), self._TEXT.get(name, name))

    def step(self, rec: dict) -> None:
        self.done += 1
        f = 0.1 + 0.8 * min(1.0, self.done / self.total)
        self.report(f, f"refining: scale {rec.get('scale', '?')}, step {rec.get('step', 0) + 1}/{rec.get('steps', '?')}")


def total_steps(config: Any) -> int:
    return int(sum(config.steps)) * int(config.passes)


# --- the run --------------------------------------------------------------------------------------


@dataclass
class RunOutput:
    """What one run produced (paths inside its run folder) and a summary line."""

    folder: Path
    texture: Path
    views: Path
    glb: Path
    zip: Path
    summary: str
    report: dict = field(default_factory=dict)


class FaceApp:
    """The app's state shared by every session: the feature extractor and layout (loaded once),
    the run folders. :meth:`run` is the request handler's work, without Gradio."""

    def __init__(self, *, preset: str = "default", features: str = "auto", vgg_weights: str | os.PathLike | None = None,
                 device: str = "auto", root: str | os.PathLike | None = None, max_age_s: float = MAX_AGE_S,
                 extractor: tuple | None = None, prior: str | os.PathLike | None = None, head: str | None = None):
        from .features import get_extractor
        from .heads import DEFAULT_HEAD, get_head
        from .presets import PRESETS
        from .refine import resolve_device

        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        self.preset = preset
        self.device = str(resolve_device(device))
        self.head = head or DEFAULT_HEAD
        self.layout = get_head(self.head).layout(None)  # (an unknown name raises InputError, naming the known ones)
        self.extractor = extractor or get_extractor(features, weights=vgg_weights, device=self.device)
        self.notice = self.extractor[1].get("notice")
        self.prior = None
        if prior is not None:  # loaded once: hidden eyes, brows and lips get structure from it
            from .prior import load_prior

            self.prior = load_prior(prior, self.layout)
        self.runs = RunFolders(root, max_age_s=max_age_s)
        atexit.register(self.runs.cleanup)

    @property
    def features_name(self) -> str:
        return str(self.extractor[1].get("extractor"))

    def run(self, photo: str | os.PathLike, *, preset: str | None = None, session: str | None = None,
            display_name: str | None = None, mask_layers: list[Any] | None = None,
            mask_file: str | os.PathLike | None = None, mask_name: str | None = None,
            occlusion: str = "auto", report: Callable[[float, str], None] | None = None) -> RunOutput:
        """Refine one uploaded photo in a fresh run folder and zip the face's folder.

        Raises:
            FaceRefinerError: one-line, user-facing reason (not an image, no face, bad mask, ...).
        """
        from .pipeline import RefineOptions, refine_photo
        from .presets import PRESETS, preset as make_preset

        if (preset or self.preset) not in PRESETS:
            raise FaceRefinerError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        name = display_name or Path(str(photo)).name
        rgb = check_photo(photo, name)
        size_wh = (rgb.shape[1], rgb.shape[0])
        mask = painted_mask(mask_layers, size_wh)
        if mask_file:
            m = uploaded_mask(mask_file, size_wh, mask_name)
            mask = m if mask is None else mask | m
        cfg = make_preset(preset or self.preset)
        work = self.runs.new(session)
        stem = safe_stem(name)
        src = work / "input" / f"{stem}{Path(str(photo)).suffix.lower()[:8]}"
        src.parent.mkdir()
        shutil.copyfile(photo, src)
        opts = RefineOptions(size=cfg.size, device=self.device, occlusion=occlusion, head=self.head)
        if mask is not None and mask.any():
            from .io import save_png

            opts.mask = work / "input" / "mask.png"
            save_png(opts.mask, mask.astype(np.uint8) * 255)
        prog = StageProgress(report or (lambda f, t: None), total_steps(cfg))
        out = work / "out"
        t0 = time.perf_counter()
        res = refine_photo(src, out, opts, cfg, layout=self.layout, extractor=self.extractor, prior=self.prior,
                           on_stage=prog.stage, on_step=prog.step)
        if not res.ok:
            raise FaceRefinerError(clean_message(res.error or "failed", src, name))
        folder = res.faces[0].folder
        prog.report(0.97, "zipping the folder")
        zip_path = Path(shutil.make_archive(str(work / stem), "zip", root_dir=out, base_dir=folder.name))
        secs = time.perf_counter() - t0
        from .folder import read_report

        rep = read_report(folder)
        summary = summary_line(name, rep, size=cfg.size, preset=preset or self.preset, features=self.features_name,
                               secs=secs, masked=opts.mask is not None)
        return RunOutput(folder=folder, texture=folder / "texture.png", views=folder / "views.png",
                         glb=folder / "mesh.glb", zip=zip_path, summary=summary, report=rep)

    def find_occluders(self, photo: str | os.PathLike, display_name: str | None = None) -> dict[str, Any]:
        """What ``--occlusion auto`` finds in front of the photo's largest face, as the mask
        editor's value: ``{"background": (h, w, 3) uint8 preview, "layers": [(h, w, 4) uint8 RGBA,
        MASK_RGBA where found, transparent elsewhere], "composite": the two blended}`` at the
        photo's :func:`preview` size, so that the user can paint more or erase before the run.

        Raises:
            FaceRefinerError: not an image, no face.
        """
        from .heads import get_head
        from .occlusion import find_occlusions
        from .reconstruct import reconstruct

        name = display_name or Path(str(photo)).name
        rgb = check_photo(photo, name)
        geo = reconstruct(rgb, source=name, head=get_head(self.head))
        m = find_occlusions(rgb, geo, self.layout).mask
        small = preview(rgb)
        m = _resize_bool(m, (small.shape[1], small.shape[0]))
        layer = np.zeros(small.shape[:2] + (4,), np.uint8)
        layer[m] = MASK_RGBA
        a = layer[..., 3:4] / 255.0
        comp = (small * (1 - a) + layer[..., :3] * a).astype(np.uint8)
        return {"background": small, "layers": [layer], "composite": comp}


def summary_line(name: str, rep: dict, *, size: int, preset: str, features: str, secs: float,
                 masked: bool = False) -> str:
    """The Markdown line shown under the results, from the face folder's ``report.json``.

    When the photo holds more than one face it says which one was done (the app does the largest
    only), so that a group photo's other faces are not silently missing.
    """
    from .folder import FaceReport

    r = FaceReport(rep)
    pose = r.head_pose_deg
    line = (f"**{name}**: {size} x {size} texture, preset `{preset}`, features `{features}`, "
            f"head `{r.head}`, {secs:.1f} s; "
            f"head yaw {pose.get('yaw', 0):+.0f}°, pitch {pose.get('pitch', 0):+.0f}°; "
            f"{(r.visible_fraction or 0) * 100:.0f} % of the texture seen in the photo")
    share = r.occlusion_share
    if share:
        line += f"; {share * 100:.0f} % of the face left out as occluded (see the contact sheet's second tile)"
    n = r.faces_in_photo
    if n is not None and n > 1:
        line += f"; 1 of {n} faces in the photo (the largest; the command line's `--all-faces` does every face)"
    return line + ("; occlusion mask applied" if masked else "")


# --- the Gradio app -------------------------------------------------------------------------------

# Gradio's 3D viewer (Babylon.js) picks WebGPU in any Chromium that exposes navigator.gpu and does not
# fall back to WebGL when no WebGPU adapter exists (headless, many Linux desktops, remote sessions):
# the view stays blank. The mesh is tiny, so the page always uses WebGL.
_HEAD = "<script>try { delete Navigator.prototype.gpu; } catch (e) {}</script>"

_CSS = """
#fr-status {min-height: 1.5em}
#fr-texture img {width: 100%; height: 100%; object-fit: contain}
#fr-zip .empty {min-height: 0; height: 5.5rem}
footer {display: none !important}
"""


def _theme():
    import gradio as gr
    from gradio.themes.utils.fonts import LocalFont

    # Fonts from Gradio's wheel only (the default theme links Google Fonts; the app must work offline).
    return gr.themes.Default(font=[LocalFont("IBM Plex Sans"), "ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=[LocalFont("IBM Plex Mono"), "ui-monospace", "monospace"])


def build_app(*, preset: str = "default", features: str = "auto", vgg_weights: str | os.PathLike | None = None,
              device: str = "auto", root: str | os.PathLike | None = None, max_age_s: float = MAX_AGE_S,
              face_app: FaceApp | None = None, prior: str | os.PathLike | None = None, head: str | None = None):
    """The Gradio Blocks of the app (not launched: see :func:`launch`).

    Args:
        preset: the preset selected when the page opens (quick, default or paper).
        features: feature extractor, loaded once here: auto, vgg16 or patches.
        vgg_weights: VGG16 weights file (else ``FACEREFINER_VGG16`` / the torch hub cache).
        device: cpu, cuda or auto.
        root: folder for the per-run folders (default: a fresh temporary folder, deleted at exit).
        max_age_s: run folders and Gradio's cached files older than this are deleted.
        face_app: a prebuilt :class:`FaceApp` (then the arguments above other than ``preset`` are unused).
        prior: a face-texture prior file (``facerefiner prior build``), loaded once.
        head: the head model of every run (see :data:`facerefiner.heads.HEADS`; default: the default head).

    Raises:
        FaceRefinerError: the feature extractor could not be loaded (e.g. bad ``vgg_weights``).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    use_private_gradio_temp()  # (before Gradio makes the components: each reads it)
    import gradio as gr

    fa = face_app or FaceApp(preset=preset, features=features, vgg_weights=vgg_weights, device=device, root=root,
                             max_age_s=max_age_s, prior=prior, head=head)

    def on_photo(photo: str | None):
        """Check the upload at once (a warning names what is wrong); show the photo in the mask editor."""
        if not photo:
            return None
        try:
            rgb = check_photo(photo, Path(photo).name)
        except InputError as e:
            gr.Warning(str(e))
            return None
        return {"background": preview(rgb), "layers": [], "composite": None}

    def on_find(photo: str | None):
        """Put what --occlusion auto finds into the mask editor; the run then uses the edited mask
        alone (the automatic search is switched off, so erased pixels stay erased)."""
        if not photo:
            raise gr.Error("Upload a photo of a face first.")
        try:
            return fa.find_occluders(photo, Path(photo).name), False
        except FaceRefinerError as e:
            raise gr.Error(str(e), print_exception=False) from None

    def on_run(photo: str | None, editor: dict | None, mask_file: str | None, preset_name: str,
               auto: bool, request: gr.Request, progress=gr.Progress()):
        if not photo:
            raise gr.Error("Upload a photo of a face first.")
        try:
            out = fa.run(photo, preset=preset_name, session=getattr(request, "session_hash", None),
                         display_name=Path(photo).name,
                         mask_layers=(editor or {}).get("layers"), mask_file=mask_file,
                         mask_name=Path(mask_file).name if mask_file else None,
                         occlusion="auto" if auto else "off",
                         report=lambda f, t: progress(f, desc=t))
        except FaceRefinerError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except MemoryError:
            raise gr.Error("out of memory: try the quick preset or a smaller photo", print_exception=False) from None
        except Exception as e:  # a bug: log the traceback, show one line
            log.exception("run failed")
            raise gr.Error(f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                           print_exception=False) from None
        return str(out.texture), str(out.views), str(out.glb), str(out.zip), out.summary

    def on_unload(request: gr.Request):
        fa.runs.end_session(getattr(request, "session_hash", None))

    with warnings.catch_warnings():  # Gradio 5 warns that theme and css move to launch() in Gradio 6
        warnings.filterwarnings("ignore", message=".*parameter in the Blocks constructor", category=DeprecationWarning)
        blocks = gr.Blocks(title="facerefiner", theme=_theme(), css=_CSS, head=_HEAD, analytics_enabled=False,
                           delete_cache=(CACHE_SWEEP_S, int(max_age_s)))
    with blocks as demo:
        gr.Markdown("## facerefiner\nOne photo of a face in: a complete UV texture for a 3D face mesh out. "
                    "Everything runs on this machine. Each run gets its own temporary folder; uploads and "
                    "results are deleted after about an hour, and when the server stops.")
        if fa.notice:
            gr.Markdown(f"**Notice:** {fa.notice}")
        with gr.Row():
            with gr.Column(scale=1):
                # The main action first (photo, preset, Run: in view without scrolling on a laptop's
                # screen), the optional mask below it.
                photo = gr.File(label="Photo (drop a JPEG, PNG, WebP, ... of one face)", file_types=["image"],
                                type="filepath", height=160, elem_id="fr-photo")
                preset_radio = gr.Radio([c for c in PRESET_CHOICES], value=fa.preset, label="Preset",
                                        elem_id="fr-preset")
                run_btn = gr.Button("Run", variant="primary", elem_id="fr-run")
                auto_box = gr.Checkbox(value=True, label="Find occluders automatically (hands, hair, glasses, "
                                       "background, highlights; added to the painted mask)", elem_id="fr-auto")
                gr.Markdown("**Mask (optional)**: paint over what hides the face (hands, glasses, hair). "
                            "Painted pixels are not trusted: the texture there is filled in like the hidden "
                            "side of the face. *Find occluders* paints what the automatic search finds, to "
                            "paint more or erase (the run then uses your mask alone).")
                find_btn = gr.Button("Find occluders", size="sm", elem_id="fr-find")
                editor = gr.ImageEditor(
                    label="Mask", show_label=False, height=360,
                    type="numpy", image_mode="RGBA", sources=(), transforms=(), interactive=True,
                    brush=gr.Brush(colors=[("#ff00ff", 0.6)], default_color=("#ff00ff", 0.6), color_mode="fixed"),
                    layers=False, canvas_size=(PREVIEW_SIDE, PREVIEW_SIDE), format="png", elem_id="fr-editor")
                with gr.Accordion("Or upload a mask image", open=False):
                    mask_file = gr.File(label="Mask (white = not trusted; the photo's shape)", file_types=["image"],
                                        type="filepath", elem_id="fr-mask")
                gr.Markdown(f"Features: `{fa.features_name}` · device: `{fa.device}` · one photo at a time "
                            "(others wait in the queue)")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="fr-status")
                with gr.Row():
                    texture = gr.Image(label="Refined texture", type="filepath", interactive=False,
                                       elem_id="fr-texture", height=360)
                    model = gr.Model3D(label="3D face (drag to rotate, scroll to zoom)", interactive=False,
                                       clear_color=(0.93, 0.93, 0.95, 1.0), elem_id="fr-model", height=360)
                views = gr.Image(label="Contact sheet: photo, the pixels left out, sampled, content, refined, render, "
                                       "turned views",
                                 type="filepath", interactive=False, elem_id="fr-views")
                zip_out = gr.File(label="Download the face's folder (zip)", interactive=False, elem_id="fr-zip")
        # (queued so that its warning reaches the page; no concurrency limit: it never waits for a refinement)
        photo.change(on_photo, inputs=photo, outputs=editor, concurrency_limit=None, show_progress="hidden")
        find_btn.click(on_find, inputs=photo, outputs=[editor, auto_box], concurrency_limit=1)
        run_btn.click(on_run, inputs=[photo, editor, mask_file, preset_radio, auto_box],
                      outputs=[texture, views, model, zip_out, status], concurrency_limit=1,
                      show_progress_on=[texture, model])
        with warnings.catch_warnings():  # (Gradio 5's unload passes show_api, which Gradio 6 renames)
            warnings.filterwarnings("ignore", message=".*show_api", category=DeprecationWarning)
            demo.unload(on_unload)
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.face_app = fa  # for tests and launch
    return demo


class OfflineHTML:
    """ASGI middleware: drops the ``<script src="https://...">`` and font preconnect links that
    Gradio's page template carries (an iframe-resizer from a CDN), so the page loads nothing from
    outside this machine."""

    _PATTERNS = (re.compile(rb'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', re.S),
                 re.compile(rb'<link[^>]*\srel="preconnect"[^>]*>', re.S))

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                if headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers:
                    start.update(message)
                    return
                return await send(message)
            if message["type"] == "http.response.body" and start:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                for p in self._PATTERNS:
                    body = p.sub(b"", body)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                return await send({"type": "http.response.body", "body": body, "more_body": False})
            return await send(message)

        return await self.app(scope, receive, wrapped)


class NoAPIDescription:
    """ASGI middleware: 404 for Gradio's descriptions of the app's API for programs
    (``/gradio_api/info``, which Gradio's Python and JavaScript clients read, and
    ``/gradio_api/openapi.json``), which answer although ``show_api=False`` (that only hides the
    page's "Use via API" link). The page itself does not fetch them: its HTML carries the
    description of its own events (``window.gradio_api_info``), which the browser needs to call them."""

    PATHS = frozenset({"/gradio_api/info", "/gradio_api/openapi.json"})
    _BODY = b'{"detail":"Not Found"}'

    def __init__(self, app):
        self.app = app

    @staticmethod
    def _route(scope) -> str:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        return (path[len(root):] if root and path.startswith(root) else path).rstrip("/")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._route(scope) not in self.PATHS:
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._BODY)).encode())]})
        await send({"type": "http.response.body", "body": self._BODY})


def launch(demo, *, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 20,
           prevent_thread_lock: bool = False, quiet: bool = True):
    """Start the app's server (local only: no share link, no API page or API description, no
    analytics, nothing from a CDN). Stop it with :func:`shutdown`.

    Returns what ``Blocks.launch`` returns; the URL is ``demo.local_url``.
    """
    from starlette.middleware import Middleware

    with warnings.catch_warnings():  # Gradio 5 announces Gradio 6's name for show_api
        warnings.filterwarnings("ignore", message=".*show_api", category=DeprecationWarning)
        return demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=quiet,
                           show_api=False, show_error=False, ssr_mode=False, prevent_thread_lock=prevent_thread_lock,
                           max_file_size=f"{int(max_upload_mb * 1024 * 1024)}b",
                           # (openapi_url=None: no FastAPI /openapi.json, /docs, /redoc)
                           app_kwargs={"middleware": [Middleware(OfflineHTML), Middleware(NoAPIDescription)],
                                       "openapi_url": None})


def shutdown(demo) -> None:
    """Stop the server of :func:`launch` and delete what the app made: the run folders and Gradio's
    private temporary folder (:func:`use_private_gradio_temp`; Gradio's own files in a folder the
    user chose through ``GRADIO_TEMP_DIR`` are left to Gradio's clean-up)."""
    try:
        demo.close(verbose=False)
    finally:
        demo.face_app.runs.cleanup()
        remove_private_gradio_temp()
