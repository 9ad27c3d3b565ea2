"""Image input and atomic output.

Photos are read with Pillow and returned as ``uint8`` RGB arrays of shape (H, W, 3) in the photo's
upright orientation (EXIF orientation applied), whatever the file's mode: grayscale, palette,
RGBA/LA (composited over white), CMYK, 16-bit and 32-bit integer or float grayscale. Files that are
not images, are corrupt or truncated, or are too large raise :class:`~facerefiner.errors.InputError`
with a one-line message naming the file.

Outputs are written into a hidden temporary folder beside the destination and renamed into place
when complete (:func:`atomic_dir`), so an interrupted run never leaves a half-written face folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, OutputError

log = logging.getLogger(__name__)

#: Largest photo accepted, in pixels (larger files are refused rather than decoded).
MAX_PIXELS = 250_000_000
#: Smallest photo accepted on either side, in pixels.
MIN_SIDE = 16

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            hi = 1.0 if np.nanmax(a) <= 1.0 else 255.0
        else:
            hi = 65535.0 if np.nanmax(a) > 255 else 255.0
        g = np.clip(np.nan_to_num(a) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode == "CMYK":
        # Pillow's CMYK->RGB ignores ICC profiles; good enough for face photos.
        return np.asarray(img.convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as an upright RGB image.

    Args:
        path: a JPEG, PNG, WebP, BMP, TIFF or GIF (first frame) file.

    Returns:
        ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB, EXIF orientation applied.

    Raises:
        InputError: the file is missing, not an image, corrupt or truncated, too large
            (over :data:`MAX_PIXELS`) or too small (a side under :data:`MIN_SIDE` pixels).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(p) as img:
                    w, h = img.size
                    if w * h > MAX_PIXELS:
                        raise InputError(f"{p}: image too large ({w}x{h} = {w * h / 1e6:.0f} MP; "
                                         f"the limit is {MAX_PIXELS / 1e6:.0f} MP)")
                    img.load()
                    img = ImageOps.exif_transpose(img)
                    rgb = _to_rgb(img)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image file Pillow can read (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{p}: image too large (the limit is {MAX_PIXELS / 1e6:.0f} MP)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{p}: corrupt or truncated image ({msg})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{p}: unsupported image layout {rgb.shape}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{p}: image too small ({w}x{h} px; at least {MIN_SIDE} px a side)")
    return np.ascontiguousarray(rgb)


def load_mask(path: str | os.PathLike, size_wh: tuple[int, int]) -> np.ndarray:
    """Read an occlusion mask: white (> 127) pixels are NOT to be trusted.

    Returns a bool array of shape (H, W) matching ``size_wh`` = (W, H) of the photo (after EXIF
    orientation). A mask of another size is an error, since it would not line up with the photo.
    """
    p = Path(path)
    rgb = load_image(p)
    if (rgb.shape[1], rgb.shape[0]) != tuple(size_wh):
        raise InputError(f"{p}: mask is {rgb.shape[1]}x{rgb.shape[0]} px but the photo is "
                         f"{size_wh[0]}x{size_wh[1]} px (--mask must match the photo)")
    return rgb.max(axis=2) > 127


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array (or float in [0, 1]) as PNG."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.asarray(a, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(a).save(path, format="PNG")


def save_png16(path: str | os.PathLike, image: Any) -> None:
    """Write a (3, H, W) float tensor or (H, W, 3) float array in [0, 1] as a PNG of 16 bits per
    channel (RGB, rounded, clamped). PIL writes no 16-bit RGB, so OpenCV encodes it."""
    import cv2

    a = image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    a = np.clip(np.asarray(a, dtype=np.float64) * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a[..., ::-1]))
    if not ok:
        raise OutputError(f"{path}: could not encode a 16-bit PNG")
    Path(path).write_bytes(buf.tobytes())


def load_png_float(path: str | os.PathLike) -> np.ndarray:
    """A PNG of 8 or 16 bits per channel -> (H, W, 3) float32 RGB in [0, 1] (grey replicated, alpha
    dropped).

    Raises:
        InputError: the file is missing or not a PNG OpenCV can decode (one line naming it).
    """
    import cv2

    p = Path(path)
    try:
        data = np.frombuffer(p.read_bytes(), np.uint8)
    except OSError as e:
        raise InputError(f"{p}: unreadable ({e.strerror or e})") from None
    a = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if a is None:
        raise InputError(f"{p}: not an image file OpenCV can read")
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    a = a[..., :3][..., ::-1]
    return (a.astype(np.float32) / scale).copy()


def to_uint8(image: Any) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] -> (H, W, C) uint8 array, C-contiguous (rounded, clamped)."""
    a = image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray((a * 255 + 0.5).astype(np.uint8))


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    m = os.umask(0o022)
    os.umask(m)
    return m


#: Permissions of files and folders written through temporary names: what ``open`` and ``mkdir``
#: would give (``tempfile`` makes them private to the user, 0600 and 0700).
_UMASK = _umask()
_FILE_MODE, _DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[Any]:
    """A text file to write ``path`` piece by piece, never half-written: yields a file open on a
    temporary file beside ``path`` that is renamed into place when the block ends without an
    exception, and removed otherwise (also on Ctrl-C). For files too large to build as one string
    (a summary of 100,000 rows); small ones: :func:`atomic_write_bytes`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_json(path: str | os.PathLike, obj: Any, *, allow_nan: bool = True) -> None:
    """Indented JSON, written atomically (:func:`atomic_write_bytes`)."""
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=allow_nan) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that ``path`` is or can become a writable folder: the
    nearest part of it that exists must be a folder this process may write into.

    Raises:
        OutputError: a file stands in the way, or the folder is not writable (one line).
    """
    p = Path(path)
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    if q.exists() and not q.is_dir():
        raise OutputError(f"{p}: output folder is not writable ({q} is a file)")
    if not os.access(q, os.W_OK | os.X_OK):
        raise OutputError(f"{p}: output folder is not writable (permission denied on {q})")
    return p


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written into it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OutputError(f"{p}: output folder is not writable ({e.strerror or e})") from None
    return p


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``dest``; on success rename it to ``dest``.

    On an exception (including KeyboardInterrupt) the temporary folder is removed and ``dest``
    is left as it was. With ``overwrite`` an existing ``dest`` is replaced only once the new one
    is complete.
    """
    dest = Path(dest)
    parent = ensure_writable_dir(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=parent))
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, _DIR_MODE)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    try:
        if dest.exists():
            if not overwrite:
                raise OutputError(f"{dest}: already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=parent))
            os.replace(dest, old / "x")
        os.replace(tmp, dest)
    except BaseException as e:
        # Put the previous folder back if the new one did not make it (also on Ctrl-C between
        # the two renames), and leave no temporary folder behind.
        if old is not None and (old / "x").exists() and not dest.exists():
            with contextlib.suppress(OSError):
                os.replace(old / "x", dest)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if isinstance(e, OSError):
            raise OutputError(f"{dest}: cannot move the finished output into place ({e.strerror or e})") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
