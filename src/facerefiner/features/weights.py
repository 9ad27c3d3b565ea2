"""Where the VGG16 weights come from (:func:`resolve_vgg16_weights`): an explicit file, the
``FACEREFINER_VGG16`` variable, torch hub's cache, or torchvision's download; see
:mod:`facerefiner.features`."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import torch

from ..errors import WeightsError

logger = logging.getLogger("facerefiner.features")


ENV_WEIGHTS = "FACEREFINER_VGG16"
ENV_OFFLINE = "FACEREFINER_OFFLINE"
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/" + TORCHVISION_VGG16_FILE
_HOW_TO_SUPPLY = (
    f"pass --vgg-weights PATH or set {ENV_WEIGHTS}=PATH (torchvision's {TORCHVISION_VGG16_FILE} "
    "or a Caffe-convention VGG16 conv state dict)"
)


# --------------------------------------------------------------------------------------------------
# Weight resolution
# --------------------------------------------------------------------------------------------------


def _env_offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` seconds (DNS included; run in
    a daemon thread so a hanging resolver cannot block the caller)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True, name="facerefiner-net-probe")
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(path, download, timeout) -> tuple[Path | None, list[str]]:
    """(resolved path or None, what was tried); raises WeightsError for a configured missing file."""
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"VGG16 weights file {p} (--vgg-weights) does not exist; {_HOW_TO_SUPPLY}")
        return p, []
    env = os.environ.get(ENV_WEIGHTS, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise WeightsError(f"{ENV_WEIGHTS}={env} does not exist; point it at a VGG16 weights file or unset it")
        return p, []
    cache = _hub_checkpoint_dir() / TORCHVISION_VGG16_FILE
    if cache.is_file():
        return cache, []
    tried = ["no --vgg-weights", f"{ENV_WEIGHTS} unset", f"no {cache}"]
    if download is None:
        download = not _env_offline()
    if not download:
        tried.append(f"download disabled ({ENV_OFFLINE}=1 or download=False)")
    elif not _reachable("download.pytorch.org", 443, timeout):
        tried.append("download.pytorch.org unreachable")
    else:
        logger.info("downloading %s into %s (528 MB)", TORCHVISION_VGG16_URL, cache.parent)
        old = socket.getdefaulttimeout()
        try:
            socket.setdefaulttimeout(60.0)
            torch.hub.load_state_dict_from_url(
                TORCHVISION_VGG16_URL, model_dir=str(cache.parent), map_location="cpu",
                progress=False, check_hash=True, file_name=TORCHVISION_VGG16_FILE, weights_only=True,
            )
        except Exception as e:  # network failure, hash mismatch, disk full
            tried.append(f"download failed: {type(e).__name__}")
            logger.warning("download of %s failed: %s", TORCHVISION_VGG16_URL, e)
        finally:
            socket.setdefaulttimeout(old)
        if cache.is_file():
            return cache, []
    return None, tried


def resolve_vgg16_weights(path: str | os.PathLike | None = None, *, download: bool | None = None, timeout: float = 3.0) -> Path:
    """Find the VGG16 weights file, in order:

    1. ``path`` (the ``--vgg-weights`` flag) when given;
    2. the environment variable ``FACEREFINER_VGG16``;
    3. torchvision's ``vgg16-397923af.pth`` in the torch hub cache (``torch.hub.get_dir()/checkpoints``);
    4. a download of it into that cache through ``torch.hub.load_state_dict_from_url(check_hash=True)``
       -- only when ``download`` is true, or ``download`` is None and ``FACEREFINER_OFFLINE`` is not
       set (to 1/true/yes/on); skipped within ``timeout`` seconds when download.pytorch.org cannot
       be reached (DNS + TCP probe in a daemon thread), so offline machines do not hang.

    An explicit ``path`` or environment variable that names a missing file is an error (no fall
    through). Only the existence of the file is checked here; :func:`load_vgg16_state_dict` reads it.

    Raises:
        WeightsError: nothing resolved; the message lists what was tried and how to supply weights.
    """
    p, tried = _resolve(path, download, timeout)
    if p is None:
        raise WeightsError(f"VGG16 weights not found ({'; '.join(tried)}); {_HOW_TO_SUPPLY}")
    return p

