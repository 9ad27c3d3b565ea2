"""Shared fixtures. Tests that need the development data (real photos, weights) skip with a reason
when it is absent. The data is looked for in the folder named by the environment variable
``FACEREFINER_DEV_DATA`` (the folder that holds ``data/faces``, ``data/mediapipe`` and
``models/``), else in ``../shared`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the development data folder (default: ../shared beside the checkout).
DEV_DATA_ENV = "FACEREFINER_DEV_DATA"
SHARED = Path(os.environ[DEV_DATA_ENV]).expanduser() if os.environ.get(DEV_DATA_ENV) else REPO.parent / "shared"
FACES = SHARED / "data" / "faces"
MEDIAPIPE_OBJ = SHARED / "data" / "mediapipe" / "canonical_face_model.obj"
VGG_CAFFE = SHARED / "models" / "vgg16_imagenet_caffe_conv.pth"


def face_photos() -> list[Path]:
    if not FACES.is_dir():
        return []
    return sorted(p for p in FACES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the development data: set {DEV_DATA_ENV} to its folder, default ../shared)")
    return path


@pytest.fixture(scope="session")
def detector():
    from facerefiner.reconstruct import FaceMeshDetector

    d = FaceMeshDetector()
    yield d
    d.close()


@pytest.fixture(scope="session")
def ffhq_photo() -> Path:
    return need(FACES / "ffhq_00128.png")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)
