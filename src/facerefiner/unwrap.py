"""Unwrap: the photo sampled into UV space (the sampled texture I_S) and its visibility mask V.

For each texel of the UV layout we know the triangle and barycentrics (the layout rasterised once in
UV space, :func:`uv_raster`), hence the 3D point it maps to and that point's projection into the
photo, where we sample the photo bilinearly. A texel is valid where its surface faces the camera
(cosine between the interpolated normal and the direction to the camera above 0.4, or 0.6 when
|yaw| > 25 degrees, as in the paper), is not hidden by another part of the face (depth test against
the face rendered in the photo), lies inside the photo and outside the user's occlusion mask. Small
holes of the mask are closed morphologically, as in the paper.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import render as R
from .layout import UVLayout, default_layout
from .reconstruct import FaceGeometry

log = logging.getLogger(__name__)

#: Cosine thresholds of the paper: frontal faces, and profile faces (|yaw| > PROFILE_YAW).
COS_THRESHOLD = 0.4
COS_THRESHOLD_PROFILE = 0.6
PROFILE_YAW = 25.0
#: Cosine threshold of the surfaces inside a head's mouth and eyes (layout parts other than skin:
#: sockets, teeth, gums and tongue, eyeballs). The photo shows them only through the lips' and
#: lids' openings, mostly at a grazing angle (the top of the lower teeth, the gums above the upper
#: ones); what it shows there is their colour at the photo's pose, and the parts' default colours
#: in their place rendered white teeth and pink gums over deca_ex_image02673's dark, open mouth.
INNER_COS_THRESHOLD = 0.0
#: Depth tolerance of the occlusion test, in cm (the mesh is in cm).
DEPTH_TOLERANCE_CM = 0.4
#: Default number of back-projection iterations of :func:`unwrap`.
BACKPROJECT_ITERATIONS = 4


@dataclass(frozen=True)
class UVRaster:
    """The UV layout rasterised at S x S (opt-in precomputation, reused for every photo).

    Attributes:
        rast: (1, S, S, 4) float32 ``rasterize`` output in UV space ([b1, b2, 0, tri_id + 1]).
        valid: (S, S) bool, texels covered by the layout.
        faces: (F, 3) int64 the layout's triangles.
    """

    rast: torch.Tensor
    valid: torch.Tensor
    faces: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.rast.shape[1])

    def interpolate(self, attr: torch.Tensor) -> torch.Tensor:
        """(V, C) per-vertex attribute -> (S, S, C) per-texel (0 outside the layout)."""
        return R.interpolate(attr, self.rast, self.faces)[0]


def uv_raster(layout: UVLayout | None = None, size: int = 512, device: str | torch.device = "cpu") -> UVRaster:
    """Rasterise ``layout`` in UV space at ``size`` x ``size`` texels (cached per layout and size)."""
    layout = layout or default_layout()
    return _uv_raster_cached(layout, int(size), str(device))


@functools.lru_cache(maxsize=16)
def _uv_raster_cached(layout: UVLayout, size: int, device: str) -> UVRaster:
    uv = torch.as_tensor(layout.uv, dtype=torch.float32, device=device)
    pos = torch.cat([uv * size, torch.zeros_like(uv[:, :1])], dim=1)
    faces = torch.as_tensor(layout.faces, dtype=torch.int64, device=device)
    rast = R.rasterize(pos, faces, (size, size))
    return UVRaster(rast=rast, valid=rast[0, ..., 3] > 0, faces=faces)


def vertex_normals(points: np.ndarray, faces: np.ndarray, weld: np.ndarray | None = None) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a mesh with (V, 3) points and (F, 3) faces,
    following the faces' winding (counter-clockwise = the side the normal points to).

    ``weld``: optional (V,) int index of the model vertex each vertex copies (a layout's
    :attr:`~facerefiner.layout.UVLayout.weld`): the copies of one vertex get one normal."""
    p = np.asarray(points, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = p[f[:, 0]], p[f[:, 1]], p[f[:, 2]]
    fn = np.cross(b - a, c - a)
    w = np.arange(len(p)) if weld is None else np.asarray(weld, dtype=np.int64)
    n = np.zeros((int(w.max()) + 1, 3))
    for k in range(3):
        np.add.at(n, w[f[:, k]], fn)
    n = n[w]
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def texel_normals(geometry: FaceGeometry, layout: UVLayout | None = None, size: int = 512,
                  uvr: UVRaster | None = None) -> torch.Tensor:
    """The mesh's unit normal at every texel, in the camera frame (OpenCV: x right, y down, z away
    from the camera; a texel facing the camera has z < 0).

    Args:
        geometry: the face; layout: its UV layout; size: S (ignored when ``uvr`` is given).
        uvr: optional precomputed :func:`uv_raster` of ``layout``.

    Returns:
        (S, S, 3) float32 (zeros outside the layout).
    """
    layout = layout or default_layout()
    uvr = uvr or uv_raster(layout, size)
    nv = vertex_normals(geometry.camera.to_camera(geometry.vertices), layout.faces, layout.weld)
    n = uvr.interpolate(torch.as_tensor(nv, dtype=torch.float32))
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.where(uvr.valid[..., None], n, torch.zeros_like(n))


def _to_chw_float(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 3 and t.shape[0] == 3:
            return t.float()[None]
        raise ValueError(f"image: expected a (3, H, W) float tensor in [0, 1], got {tuple(t.shape)}")
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) array, got {a.shape}")
    a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)
    t = torch.from_numpy(a).permute(2, 0, 1)[None]
    return t.float() / 255.0 if a.dtype == np.uint8 else t.float()


@dataclass(frozen=True)
class Region:
    """A rectangle of the photo, resampled by ``scale``: photo pixel (x, y) -> ((x - x0) s, (y - y0) s)."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float = 1.0

    @property
    def out_size(self) -> tuple[int, int]:
        """(W, H) of the resampled region."""
        return (max(1, round((self.x1 - self.x0) * self.scale)), max(1, round((self.y1 - self.y0) * self.scale)))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) photo -> the resampled region (h, w, 3), same dtype."""
        import cv2

        a = image[self.y0:self.y1, self.x0:self.x1]
        if self.scale != 1.0:
            a = cv2.resize(a, self.out_size, interpolation=cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR)
        return a

    def to_region(self, xy: np.ndarray | torch.Tensor):
        return (xy - xy.new_tensor([self.x0, self.y0]) if isinstance(xy, torch.Tensor)
                else xy - np.array([self.x0, self.y0])) * self.scale


def face_region(geometry: FaceGeometry, margin: float = 0.15, max_side: int | None = None, *,
                to_mesh: bool = True) -> Region:
    """The photo region around the face (the landmark box, grown to the projected mesh's box for a
    head larger than the face unless ``to_mesh`` is False, then by ``margin`` of the landmark box
    on each side), scaled down so that its long side is at most ``max_side`` pixels."""
    w, h = geometry.camera.image_size
    x0, y0, x1, y1 = geometry.box
    m = margin * max(x1 - x0, y1 - y0)
    if to_mesh:
        p = geometry.projected()[:, :2]
        x0, y0 = min(x0, float(p[:, 0].min())), min(y0, float(p[:, 1].min()))
        x1, y1 = max(x1, float(p[:, 0].max())), max(y1, float(p[:, 1].max()))
    r = Region(int(max(0, np.floor(x0 - m))), int(max(0, np.floor(y0 - m))),
               int(min(w, np.ceil(x1 + m))), int(min(h, np.ceil(y1 + m))))
    if max_side is not None:
        side = max(r.x1 - r.x0, r.y1 - r.y0)
        if side > max_side:
            r = Region(r.x0, r.y0, r.x1, r.y1, scale=max_side / side)
    return r


def rasterize_face(geometry: FaceGeometry, layout: UVLayout, region: Region,
                   vertices: np.ndarray | None = None, camera=None) -> torch.Tensor:
    """Rasterise the face mesh into a photo region: (1, h, w, 4) ``rast``."""
    cam = camera or geometry.camera
    proj = cam.project(geometry.vertices if vertices is None else vertices)
    pos = torch.as_tensor(np.concatenate([region.to_region(proj[:, :2]), proj[:, 2:3]], 1), dtype=torch.float32)
    w, h = region.out_size
    return R.rasterize(pos, torch.as_tensor(layout.faces), (h, w), perspective=cam.perspective)


@dataclass(frozen=True)
class UnwrapResult:
    """Output of :func:`unwrap`.

    Attributes:
        texture: (3, S, S) float32 RGB in [0, 1], the sampled texture I_S; 0 where not visible.
        visibility: (S, S) bool, the visibility mask V (True = the texel shows the photo).
        cosine: (S, S) float32, cosine between the surface normal and the direction to the camera
            (0 outside the layout).
        threshold: the cosine threshold used.
        raster: the :class:`PhotoRaster` it sampled through (the rendering term reuses it).
    """

    texture: torch.Tensor
    visibility: torch.Tensor
    cosine: torch.Tensor
    threshold: float
    raster: "PhotoRaster | None" = None


#: Photo pixels per texel on the long side of the face region that unwrap samples from and the
#: rendering term compares against (at most; a smaller face keeps its own resolution).
PIXELS_PER_TEXEL = 2


def sample_side(size: int) -> int:
    """Long side (px) of the face region for a texture of ``size`` texels: ``PIXELS_PER_TEXEL * size``."""
    return PIXELS_PER_TEXEL * int(size)


@dataclass(frozen=True)
class PhotoRaster:
    """The face mesh rasterised once into its photo region (:func:`photo_raster`).

    Attributes:
        region: the photo :class:`Region` (long side at most ``side`` px).
        rast: (1, h, w, 4) float32 ``rasterize`` output in that region ([b1, b2, z, tri_id + 1]).
        side: the ``max_side`` it was made for.
    """

    region: Region
    rast: torch.Tensor
    side: int


def photo_raster(geometry: FaceGeometry, layout: UVLayout, side: int) -> PhotoRaster:
    """Rasterise ``geometry``'s mesh (triangles of ``layout``) into its :func:`face_region` of long
    side at most ``side`` px. Pass it to :func:`unwrap` and :func:`facerefiner.refine.render_target`
    so that one photo is rasterised once."""
    region = face_region(geometry, max_side=side)
    return PhotoRaster(region=region, rast=rasterize_face(geometry, layout, region), side=int(side))


def unwrap(image: np.ndarray | torch.Tensor, geometry: FaceGeometry, size: int = 512, *,
           layout: UVLayout | None = None, mask: np.ndarray | None = None,
           uvr: UVRaster | None = None, cos_threshold: float | None = None,
           backproject: int = BACKPROJECT_ITERATIONS, raster: PhotoRaster | None = None) -> UnwrapResult:
    """Sample the photo into the UV layout.

    Args:
        image: the photo, (H, W, 3) uint8 RGB array or (3, H, W) float tensor in [0, 1].
        geometry: the face's mesh and camera (from :func:`facerefiner.reconstruct`).
        size: texture size S in texels.
        layout: UV layout (default: the shipped symmetric layout).
        mask: optional (H, W) bool, True where the photo must NOT be trusted (hand, glasses, hair).
        uvr: optional precomputed :func:`uv_raster` of ``layout`` at ``size``.
        cos_threshold: override the paper's 0.4 / 0.6 threshold.
        backproject: iterations of back-projection (see :func:`backproject`); 0 keeps the plain
            bilinear samples.
        raster: optional precomputed :func:`photo_raster` of ``geometry`` at ``sample_side(size)``.

    Returns:
        :class:`UnwrapResult` (texture (3, S, S) float32 in [0, 1], visibility (S, S) bool).
    """
    import cv2

    layout = layout or default_layout()
    uvr = uvr or uv_raster(layout, size)
    S = uvr.size
    is_tensor = isinstance(image, torch.Tensor)
    H, W = (image.shape[1:] if is_tensor else image.shape[:2])
    # Sample from the face region, at most ~2 photo pixels per texel (no aliasing, bounded memory).
    if raster is None or raster.side != sample_side(S):
        raster = photo_raster(geometry, layout, sample_side(S))
    region = raster.region
    if is_tensor:
        photo = torch.nn.functional.interpolate(
            image[None, :, region.y0:region.y1, region.x0:region.x1].float(), size=region.out_size[::-1],
            mode="area") if region.scale != 1.0 else image[None, :, region.y0:region.y1, region.x0:region.x1].float()
    else:
        photo = _to_chw_float(region.crop(np.asarray(image)))

    cam = geometry.camera
    proj = cam.project(geometry.vertices)                    # (V, 3) pixel x, y, depth
    attr = torch.as_tensor(np.concatenate([region.to_region(proj[:, :2]), proj[:, 2:3]], 1), dtype=torch.float32)
    tx = uvr.interpolate(attr)                               # (S, S, 3)
    xy, depth = tx[..., :2], tx[..., 2]
    n = texel_normals(geometry, layout, uvr=uvr)
    if cam.perspective:
        pts = R.interpolate(torch.as_tensor(cam.to_camera(geometry.vertices), dtype=torch.float32),
                            uvr.rast, uvr.faces)[0]
        view = -pts / pts.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        cosine = (n * view).sum(-1)
    else:
        cosine = -n[..., 2]                                   # camera looks along +z
    cosine = torch.where(uvr.valid, cosine, torch.zeros_like(cosine))

    texture = R.sample_image(photo, xy[None])[0]              # (3, S, S)

    # Occlusion: depth of the nearest surface at each texel's pixel.
    rast = raster.rast
    zbuf = torch.where(rast[0, ..., 3] > 0, rast[0, ..., 2], torch.full_like(rast[0, ..., 2], float("inf")))
    h, w = zbuf.shape
    px = xy[..., 0].floor().long().clamp(0, w - 1)
    py = xy[..., 1].floor().long().clamp(0, h - 1)
    front = depth <= zbuf[py, px] + DEPTH_TOLERANCE_CM
    if layout.parts is not None:  # the nearest surface at the pixel must be the texel's own
        parts = torch.as_tensor(layout.parts)
        own = parts[(uvr.rast[0, ..., 3].long() - 1).clamp_min(0)]
        seen = parts[(rast[0, ..., 3].long() - 1).clamp_min(0)][py, px]
        front &= own == seen

    thr = cos_threshold if cos_threshold is not None else (
        COS_THRESHOLD_PROFILE if abs(geometry.yaw) > PROFILE_YAW else COS_THRESHOLD)
    # Inside the region/photo (half a pixel of slack for bilinear lookups).
    rw, rh = region.out_size
    inside = (xy[..., 0] >= 0.5) & (xy[..., 1] >= 0.5) & (xy[..., 0] <= rw - 0.5) & (xy[..., 1] <= rh - 0.5)
    # texels of triangles the head model never takes from the photo (None: all may be sampled)
    allowed = (None if layout.sampled is None
               else torch.as_tensor(layout.sampled)[(uvr.rast[0, ..., 3].long() - 1).clamp_min(0)])
    texel_thr = thr if layout.parts is None else torch.where(
        own == 0, torch.tensor(float(thr)), torch.tensor(INNER_COS_THRESHOLD))
    vis = uvr.valid & (cosine > texel_thr) & front & inside
    if allowed is not None:
        vis &= allowed
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (H, W):
            raise ValueError(f"mask: expected shape {(H, W)}, got {m.shape}")
        # A texel is untrusted if its photo pixel (nearest) is masked.
        fx = (xy[..., 0] / region.scale + region.x0).floor().long().clamp(0, W - 1)
        fy = (xy[..., 1] / region.scale + region.y0).floor().long().clamp(0, H - 1)
        vis &= ~torch.from_numpy(m)[fy, fx]

    # Morphological clean-up: close small holes, drop specks, stay inside the layout.
    raw = vis
    k = max(3, (S // 128) | 1)
    v8 = vis.numpy().astype(np.uint8)
    v8 = cv2.morphologyEx(v8, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    v8 = cv2.morphologyEx(v8, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    vis = torch.from_numpy(v8.astype(bool)) & uvr.valid & inside
    if layout.parts is not None:
        # a head's teeth and eyeballs are seen as thin slivers (between parted lips, in a narrowed
        # eye): the opening dropped them, and the render at the photo's pose showed the parts'
        # default colours there (white teeth in deca_ex_alfw2's dark mouth gap)
        vis |= raw & (own != 0) & (own != 1)
    if allowed is not None:  # the closing must not bring them back
        vis &= allowed
    if mask is not None:
        vis &= ~torch.from_numpy(m)[fy, fx]
    texture = texture * vis[None].float()
    if backproject > 0:
        texture = _backproject(texture, vis, photo, rast, layout, backproject)
    return UnwrapResult(texture=texture.contiguous(), visibility=vis, cosine=cosine, threshold=float(thr), raster=raster)


def _backproject(texture: torch.Tensor, vis: torch.Tensor, photo: torch.Tensor, rast: torch.Tensor,
                 layout: UVLayout, iterations: int) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg 1991) of the photo onto the visible texels.

    Plain bilinear sampling followed by bilinear rendering blurs twice, and where a texel covers
    more than one photo pixel it aliases. Each iteration renders the texture (``render_cached``),
    takes the residual against the photo on the pixels that see only visible texels, maps it back
    to the texels through the renderer's adjoint (its gradient) and normalises by the adjoint of
    ones (a SART step), so that the texture converges toward the least-squares texture that renders
    back to the photo.

    Args:
        texture: (3, S, S) float32 sampled texture, 0 outside ``vis``.
        vis: (S, S) bool visible texels (only those change).
        photo: (1, 3, h, w) float32 the photo region that ``rast`` was rasterised into.
        rast: (1, h, w, 4) the face rasterised into that region.

    Returns:
        (3, S, S) float32 in [0, 1], 0 outside ``vis``.
    """
    cache = R.prepare(rast, torch.as_tensor(layout.faces), layout.uv_tensor())
    visf = vis[None, None].float()
    weight = R.visible_pixels(vis, cache).float()
    ones = torch.ones_like(visf, requires_grad=True)
    (R.render_cached(ones, cache) * weight).sum().backward()
    step = visf / ones.grad.clamp_min(1e-6)
    tex = texture[None].clone().requires_grad_(True)
    for _ in range(iterations):
        tex.grad = None
        (0.5 * ((R.render_cached(tex, cache) - photo) * weight).square().sum()).backward()
        with torch.no_grad():
            tex -= tex.grad * step
    return tex.detach()[0].clamp_(0.0, 1.0) * vis[None].float()
