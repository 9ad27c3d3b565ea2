"""The camera that projects a face mesh onto its photo, in OpenCV convention.

Camera frame: x right, y down, z forward (away from the camera). Pixel (0, 0) is the top-left
corner of the top-left pixel, so the centre of pixel row i, column j is at (j + 0.5, i + 0.5).

* ``world_to_camera`` (4x4) maps model-frame points (the mesh's vertices: y-up, right-handed,
  centimetres) to the camera frame (centimetres).
* ``orthographic``: pixel = K[:2, :2] @ (x, y) + K[:2, 2], depth = z.
* ``perspective``:  pixel = (K @ X)[:2] / z, depth = z.

This is what ``camera.json`` holds, so any renderer can re-project ``mesh.obj`` onto the photo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


def rotation_y(deg: float) -> np.ndarray:
    """3x3 rotation about the y axis by ``deg`` degrees (right-handed)."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass(frozen=True)
class Camera:
    """A pinhole or orthographic camera.

    Attributes:
        image_size: (W, H) of the photo in pixels.
        world_to_camera: (4, 4) float64 rigid transform, model frame -> camera frame.
        K: (3, 3) float64 intrinsics (see the module docstring for both models).
        model: ``"orthographic"`` or ``"perspective"``.
    """

    image_size: tuple[int, int]
    world_to_camera: np.ndarray
    K: np.ndarray
    model: str = "orthographic"

    def __post_init__(self) -> None:
        if self.model not in ("orthographic", "perspective"):
            raise ValueError(f"camera model must be 'orthographic' or 'perspective', got {self.model!r}")

    @property
    def perspective(self) -> bool:
        return self.model == "perspective"

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) model-frame points -> (N, 3) camera-frame points."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.world_to_camera[:3, :3].T + self.world_to_camera[:3, 3]

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project (N, 3) model-frame points.

        Returns:
            (N, 3) float64: pixel x, pixel y (convention above) and camera depth z.
        """
        xc = self.to_camera(points)
        if self.perspective:
            uvw = xc @ self.K.T
            xy = uvw[:, :2] / uvw[:, 2:3]
        else:
            xy = xc[:, :2] @ self.K[:2, :2].T + self.K[:2, 2]
        return np.concatenate([xy, xc[:, 2:3]], axis=1)

    def crop(self, x0: float, y0: float, width: int, height: int, scale: float = 1.0) -> "Camera":
        """The camera of the photo region [x0, x0 + width/scale) x [y0, y0 + height/scale),
        resampled by ``scale`` to ``width`` x ``height`` pixels."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        S = np.diag([scale, scale, 1.0])
        return replace(self, image_size=(int(width), int(height)), K=S @ K)

    def turned(self, yaw_deg: float, center: np.ndarray | None = None) -> "Camera":
        """The same camera looking at the model turned by ``yaw_deg`` about the model's vertical
        (y) axis through ``center`` (model frame, default the origin). Used for novel views."""
        c = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64)
        T = np.eye(4)
        T[:3, :3] = rotation_y(yaw_deg)
        T[:3, 3] = c - T[:3, :3] @ c
        return replace(self, world_to_camera=self.world_to_camera @ T)

    def to_json(self) -> dict[str, Any]:
        return {
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "world_to_camera": np.asarray(self.world_to_camera).tolist(),
            "intrinsics": {"model": self.model, "K": np.asarray(self.K).tolist()},
            "convention": "OpenCV: camera x right, y down, z forward; pixel (0,0) is the top-left "
                          "corner of the top-left pixel. orthographic: pixel = K[:2,:2] @ (x,y) + "
                          "K[:2,2], depth = z; perspective: pixel = (K @ X) / z.",
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Camera":
        return cls(
            image_size=(int(d["image_size"][0]), int(d["image_size"][1])),
            world_to_camera=np.asarray(d["world_to_camera"], dtype=np.float64),
            K=np.asarray(d["intrinsics"]["K"], dtype=np.float64),
            model=d["intrinsics"]["model"],
        )
