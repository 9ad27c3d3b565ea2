"""Novel views of a textured face and the contact sheet ``views.png``.

A novel view turns the head about the model's vertical axis through the mesh centroid and renders
it with the photo's orthographic camera, cropped around the face, on a plain background.
"""

from __future__ import annotations

import numpy as np
import torch

from .camera import Camera
from .layout import UVLayout
from .reconstruct import FaceGeometry
from .render import render_face
from .io import to_uint8 as _u8

#: Yaw angles (degrees) of the turned views in ``views.png``.
SHEET_YAWS = (-45.0, -20.0, 20.0, 45.0)


def turned_view(texture: torch.Tensor, geometry: FaceGeometry, layout: UVLayout, yaw: float, size: int = 256,
                background: float = 1.0, margin: float = 0.12,
                frame: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray, Camera]:
    """Render the face turned by ``yaw`` degrees (positive: toward the image's right).

    The view is framed on the box of the projected vertices (``frame``: only those, (n,) int64
    indices, e.g. ``layout.face`` to frame a head's face), grown by ``margin`` of its side.

    Returns:
        ``(image, xy, camera)``: (3, size, size) float in [0, 1] on a grey-level ``background``, the
        (V, 2) projected vertices in that image, and the camera used.
    """
    cam = geometry.camera.turned(yaw, center=geometry.vertices.mean(0))
    proj = cam.project(geometry.vertices if frame is None else geometry.vertices[frame])
    x0, y0 = proj[:, :2].min(0)
    x1, y1 = proj[:, :2].max(0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = cam.crop(cx - side / 2, cy - side / 2, size, size, scale=size / side)
    bg = torch.full((texture.shape[0], 1, 1), float(background), dtype=texture.dtype)
    img, _ = render_face(texture, geometry.vertices, crop, layout, background=bg)
    return img.clamp(0, 1), crop.project(geometry.vertices)[:, :2], crop


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    f = size / max(h, w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out




#: Colour the left-out pixels are tinted with in the occlusion tile of ``views.png``.
OCCLUSION_TINT = (255, 0, 200)


def contact_sheet(photo: np.ndarray, sampled: torch.Tensor, initial: torch.Tensor, texture: torch.Tensor,
                  render: np.ndarray, geometry: FaceGeometry, layout: UVLayout, tile: int = 256,
                  occlusion: np.ndarray | None = None, yaws: tuple[float, ...] = SHEET_YAWS) -> np.ndarray:
    """photo | [the pixels left out] | I_S | I_C | I_X | render | the head turned by each of ``yaws``
    (default -45, -20, +20, +45 degrees; a whole head's turntable adds 0, +-90 and 180).

    Args:
        photo: (H, W, 3) uint8; render: (h, w, 3) uint8 (``render_over_photo``); textures (3, S, S).
        occlusion: optional (H, W) bool, the pixels left out (occluders and the user's mask): a
            tile of the photo with them tinted :data:`OCCLUSION_TINT` follows the photo's.

    Returns:
        (tile, (5 + len(yaws)) * tile, 3) uint8, one more tile with ``occlusion``.
    """
    x0, y0, x1, y1 = geometry.box
    m = 0.25 * max(x1 - x0, y1 - y0)
    H, W = photo.shape[:2]
    box = (int(max(0, x0 - m)), int(max(0, y0 - m)), int(min(W, x1 + m)), int(min(H, y1 + m)))
    sy, sx = render.shape[0] / H, render.shape[1] / W
    tiles = [_tile(photo[box[1]:box[3], box[0]:box[2]], tile)]
    if occlusion is not None:
        crop = photo[box[1]:box[3], box[0]:box[2]].astype(np.float32)
        m = np.asarray(occlusion, bool)[box[1]:box[3], box[0]:box[2]]
        crop[m] = 0.4 * crop[m] + 0.6 * np.array(OCCLUSION_TINT, np.float32)
        tiles.append(_tile(crop.astype(np.uint8), tile))
    tiles += [_tile(_u8(t), tile) for t in (sampled, initial, texture)]
    tiles.append(_tile(render[int(box[1] * sy):int(box[3] * sy), int(box[0] * sx):int(box[2] * sx)], tile))
    tiles += [_u8(turned_view(texture, geometry, layout, y, tile)[0]) for y in yaws]
    return np.concatenate(tiles, axis=1)


def relit_views(albedo: torch.Tensor, normals: torch.Tensor, geometry: FaceGeometry, layout: UVLayout,
                light, yaws=(0.0,), tile: int = 256, background: float = 1.0) -> np.ndarray:
    """The head under ``light`` (a :class:`facerefiner.light.Light` in the photo's camera frame,
    fixed in the world: the camera turns, the light stays) at each yaw, side by side.

    Args:
        albedo: (3, S, S) float in [0, 1]; normals: (S, S, 3) camera-frame texel normals.
        yaws: degrees, positive toward the image's right (:func:`turned_view`).

    Returns:
        (tile, tile * len(yaws), 3) uint8.
    """
    from .light import relight

    lit = relight(albedo, normals, light)
    return np.concatenate([_u8(turned_view(lit, geometry, layout, float(y), tile, background=background)[0])
                           for y in yaws], axis=1)


def relit_row(albedo: torch.Tensor, normals: torch.Tensor, geometry: FaceGeometry, layout: UVLayout,
              width: int, tile: int = 256) -> np.ndarray:
    """``views.png``'s second row: the albedo, then the head at the photo's pose under each light of
    :data:`facerefiner.light.RELIGHT_DIRECTIONS` (:func:`facerefiner.light.named_light`), on white.

    Args:
        albedo: (3, S, S) float in [0, 1]; normals: (S, S, 3) camera-frame texel normals.
        width: the row's width in pixels (the first row's).

    Returns:
        (tile, width, 3) uint8.
    """
    from .light import RELIGHT_DIRECTIONS, named_light

    tiles = [_tile(_u8(albedo), tile)]
    tiles += [relit_views(albedo, normals, geometry, layout, named_light(n, normals), (0.0,), tile)
              for n in RELIGHT_DIRECTIONS]
    row = np.concatenate(tiles, axis=1)
    out = np.full((tile, width, 3), 255, np.uint8)
    out[:, :min(width, row.shape[1])] = row[:, :width]
    return out
