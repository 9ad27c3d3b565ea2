"""MediaPipe's 468-vertex face mask: the detector's landmarks are the mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import HeadModel


class MediaPipeHead(HeadModel):
    name = "mediapipe"
    description = "MediaPipe's 468-vertex face mask (the landmarks as the mesh)"

    def layout(self, uv_layout: str | Path | None = None):
        from ..layout import load_layout

        return load_layout(uv_layout)

    def fit(self, landmarks: np.ndarray, image_size: tuple[int, int]):
        from ..reconstruct import geometry_from_landmarks

        return geometry_from_landmarks(landmarks, image_size)
