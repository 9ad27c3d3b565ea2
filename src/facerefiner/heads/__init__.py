"""Head models behind one small interface (a registry, like rembg's sessions).

A head model owns what the pipeline needs to know about a mesh: its topology and UV layout
(:class:`~facerefiner.layout.UVLayout`, with the left/right pairing and the semantic regions),
and the fit that turns the detector's 478 MediaPipe landmarks into a
:class:`~facerefiner.reconstruct.FaceGeometry` (vertices in the model frame and the orthographic
camera). Everything downstream (unwrap, occlusion, light, complete, refine, export, metrics) works
on the geometry and layout it is given.

Registered models (:data:`HEADS`):

* ``mediapipe``: MediaPipe's 468-vertex face mask, the landmarks themselves as the mesh, in this
  project's symmetric layout (or a ``--uv-layout`` OBJ of that topology).
* ``ict``: the ICT-FaceKit Light head (face, ears, neck, scalp, eyeballs, teeth; MIT licence,
  shipped with the package), its identity, expression and pose fitted to the landmarks, in one
  atlas; :meth:`HeadModel.morph_targets` gives its 53 ARKit-named expression blendshapes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["HeadModel", "HEADS", "DEFAULT_HEAD", "get_head", "head_names"]

#: The head model used when none is named.
DEFAULT_HEAD = "mediapipe"


class HeadModel:
    """The interface of a head model (subclass it and add it to :data:`HEADS`)."""

    #: Registry name (``--head NAME``).
    name: str = ""
    #: One line for ``--help``.
    description: str = ""
    #: Yaw angles (degrees) of the turned views in ``views.png``.
    sheet_yaws: tuple[float, ...] = (-45.0, -20.0, 20.0, 45.0)
    #: ``texture.png`` is written at this multiple of the optimisation's size S unless
    #: ``--export-size`` says otherwise (a head whose atlas gives the face a smaller share of the
    #: texture needs more texels for the same detail).
    export_scale: int = 1

    def layout(self, uv_layout: str | Path | None = None):
        """The model's :class:`~facerefiner.layout.UVLayout` (``uv_layout``: an alternative OBJ,
        where the model accepts one)."""
        raise NotImplementedError

    def fit(self, landmarks: np.ndarray, image_size: tuple[int, int]):
        """(478, 3) MediaPipe landmarks (photo pixels, z depth in pixels) -> FaceGeometry whose
        vertices match :meth:`layout`."""
        raise NotImplementedError

    def landmark_points(self, vertices: np.ndarray) -> np.ndarray:
        """(468, 3) the points of a mesh of this model (``vertices`` (V, 3), model frame) that
        correspond to MediaPipe's 468 face-mesh landmarks."""
        return np.asarray(vertices, dtype=np.float64)[:468]

    def face_texels(self, size: int) -> np.ndarray | None:
        """(size, size) bool: the texels of this model's atlas that the face mask's 468-vertex
        surface covers (the face the identity metric compares across heads), or None for the
        face mask itself (all of its layout)."""
        return None

    def morph_targets(self, geometry) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        """Blendshapes for ``mesh.glb``: (names, (K, V, 3) float32 vertex offsets in the model frame
        relative to ``geometry.vertices`` at zero weights, (K,) default weights), or None."""
        return None

    def part_colours(self) -> dict:
        """``{part label: colour spec}`` for :func:`facerefiner.complete.fill_parts`: the parts
        (of :attr:`~facerefiner.layout.UVLayout.parts`) that are not skin and get their own colour
        where the photo does not show them (teeth, gums, eyeballs); empty for a face mask."""
        return {}

    def report(self, geometry) -> dict[str, Any]:
        """What report.json says about the fit (``{"head": name, ...}``)."""
        return {"head": self.name}


def _registry() -> dict[str, type]:
    from .ict import ICTHead
    from .mediapipe import MediaPipeHead

    return {"mediapipe": MediaPipeHead, "ict": ICTHead}


def head_names() -> list[str]:
    """The registered names, default first."""
    names = list(_registry())
    return [DEFAULT_HEAD] + [n for n in names if n != DEFAULT_HEAD]


HEADS = tuple(["mediapipe", "ict"])


@functools.lru_cache(maxsize=None)
def get_head(name: str | None = None) -> HeadModel:
    """The head model called ``name`` (default :data:`DEFAULT_HEAD`), loaded once.

    Raises:
        InputError: an unknown name (the message lists the known ones).
    """
    name = name or DEFAULT_HEAD
    reg = _registry()
    if name not in reg:
        raise InputError(f"unknown head model {name!r}; choose one of {', '.join(head_names())}")
    return reg[name]()
