"""facerefiner: one photo of a face in, a complete UV texture for a 3D face mesh out.

The public API (imported lazily, so ``import facerefiner`` stays cheap)::

    import facerefiner as fr
    rgb = fr.load_image("photo.jpg")          # (H, W, 3) uint8 RGB, EXIF orientation applied
    geo = fr.reconstruct(rgb)                 # FaceGeometry: mesh vertices, camera, head pose
    un = fr.unwrap(rgb, geo, size=512)        # UnwrapResult: texture (3, S, S), visibility (S, S)
    img, mask = fr.render_face(un.texture, geo.vertices, geo.camera, fr.default_layout())

Each stage lives in a module named after it: ``reconstruct``, ``layout``, ``unwrap``, ``render``,
``complete``, ``features``, ``losses``, ``refine``, ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_image": "io",
    "load_mask": "io",
    "reconstruct": "reconstruct",
    "reconstruct_all": "reconstruct",
    "FaceGeometry": "reconstruct",
    "FaceMeshDetector": "reconstruct",
    "Camera": "camera",
    "UVLayout": "layout",
    "default_layout": "layout",
    "load_layout": "layout",
    "unwrap": "unwrap",
    "UnwrapResult": "unwrap",
    "uv_raster": "unwrap",
    "render_face": "render",
    "face_raster": "render",
    "rasterize": "render",
    "interpolate": "render",
    "texture": "render",
    "complete": "complete",
    "FaceRefinerError": "errors",
    "InputError": "errors",
    "NoFaceError": "errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'facerefiner' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
