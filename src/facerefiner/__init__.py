"""facerefiner: one photo of a face in, a complete UV texture for a 3D face mesh out.

The public API::

    import facerefiner as fr
    rgb = fr.load_image("photo.jpg")          # (H, W, 3) uint8 RGB, EXIF orientation applied
    geo = fr.reconstruct(rgb)                 # FaceGeometry: mesh vertices, camera, head pose
    occ = fr.find_occlusions(rgb, geo)        # Occlusion: mask (H, W) of hands, hair, glasses, ...
    un = fr.unwrap(rgb, geo, size=512, mask=occ.mask)  # UnwrapResult: texture (3, S, S), visibility (S, S)
    img, mask = fr.render_face(un.texture, geo.vertices, geo.camera, fr.default_layout())

Each stage lives in a module named after it: ``reconstruct``, ``layout``, ``unwrap``, ``render``,
``occlusion``, ``complete``, ``prior``, ``features``, ``losses``, ``refine``, ``metrics``, ``cli``, ``app``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Functions named like their modules (reconstruct, unwrap, complete, refine) are bound eagerly here,
# so that ``facerefiner.reconstruct`` is the function, not the submodule.
from .camera import Camera
from .complete import complete
from .errors import FaceRefinerError, InputError, NoFaceError
from .io import load_image, load_mask
from .layout import UVLayout, default_layout, load_layout
from .occlusion import Occlusion, find_occlusions
from .reconstruct import FaceGeometry, FaceMeshDetector, reconstruct, reconstruct_all
from .presets import PRESETS, RefineConfig, preset
from .refine import RefineResult, refine
from .render import face_raster, interpolate, rasterize, render_face, texture
from .unwrap import UnwrapResult, unwrap, uv_raster

__all__ = [
    "__version__", "Camera", "complete", "FaceRefinerError", "InputError", "NoFaceError", "load_image",
    "load_mask", "Occlusion", "find_occlusions", "UVLayout", "default_layout", "load_layout", "FaceGeometry", "FaceMeshDetector",
    "reconstruct", "reconstruct_all", "PRESETS", "RefineConfig", "RefineResult", "preset", "refine",
    "face_raster", "interpolate", "rasterize", "render_face", "texture", "UnwrapResult", "unwrap", "uv_raster",
]
