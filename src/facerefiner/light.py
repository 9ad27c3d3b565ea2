"""Light: the photo's illumination as second-order spherical harmonics, and the de-lit albedo.

The shading of a Lambertian surface with unit normal n under distant light is, to second order
(Ramamoorthi and Hanrahan 2001), ``shading(n) = sum_k gamma_k Y_k(n)`` per colour channel, with the
nine basis functions already convolved with the clamped cosine (Deep3DFaceRecon's convention):

    a = [pi, 2 pi / sqrt(3), 2 pi / sqrt(8)]
    c = [1 / sqrt(4 pi), sqrt(3) / sqrt(4 pi), 3 sqrt(5) / sqrt(12 pi)]
    Y = [a0 c0,
         -a1 c1 y,  a1 c1 z,  -a1 c1 x,
         a2 c2 x y,  -a2 c2 y z,  a2 c2 / (2 sqrt 3) (3 z^2 - 1),  -a2 c2 x z,  a2 c2 / 2 (x^2 - y^2)]

The frame is the photo's camera (:mod:`facerefiner.camera`, OpenCV): x right, y down, z away from
the camera, so a face seen from the front has normals near (0, 0, -1). The l = 1 band is
``a1 c1 (d . n)`` with ``d = (-gamma_3, -gamma_1, gamma_2)``: ``d`` points toward the light.

The photo's texture I_S is the albedo times this shading. Both are fitted at once where the face
shows skin (:func:`estimate_light`): the albedo of the skin is taken as one colour, so the
coefficients per channel are a linear least-squares fit of the visible skin texels' colours,
iteratively reweighted (Huber) so that moles, stubble and what the occlusion step missed do not
pull it; the eyes, brows, lips and nostrils, clipped texels and the darkest tail (attached shadows
under the nose and chin) are left out. By default (:data:`ORDER` ``"key"``) the light is one distant
key light plus an ambient term, each with its own colour: the second band is the one such a source
has (a face shows too few normals to pin a free second band down: it trades with the first and
dips at the nose's normals; without one, a side light's direction tilts 35 to 45 degrees). The channels are fitted freely: with
the skin's albedo taken as one colour, the light's colour and the albedo's are one product, and
Deep3DFaceRecon's pull toward a nearly white light bent a coloured light's recovered shape (a
ridge of 0.05 per texel turned a side light's z coefficient 90 % off on a rendered sphere, 0.001
still 5 %). A fit
that is implausible (most of the face in deep shadow, a light from behind, a negative ambient) is
refused. The scale between albedo and light is fixed so that the shading's mean over the fitted
texels is 1 (the albedo keeps the photo's mean skin colour), raised where that would give more
than 1 - :data:`ALBEDO_QUANTILE` of the visible texels an albedo above 1 (``albedo.png`` clips at
1, and the photo would not come back from it under its own light).

:func:`delight` divides the shading out of the visible texels; where the shading is too low to
divide by (below :data:`MIN_SHADING`: a deep shadow) the texel counts as not visible, and the
completion fills it from the de-lit rest, like any hidden texel.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .check import check_shape
from .errors import InputError
from .layout import UVLayout, default_layout, feature_mask
from .reconstruct import FaceGeometry
from .unwrap import UVRaster, texel_normals, uv_raster  # noqa: F401  (texel_normals: part of this module's API)

log = logging.getLogger(__name__)

#: The Lambertian kernel's SH coefficients per band, and the SH normalisation constants.
SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
SH_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))
#: Texels darker than this quantile of the fitted skin's luma are left out of the fit (attached
#: shadows: the basis models no visibility).
DARK_QUANTILE = 0.05
#: Texels with a channel at or above this (in [0, 1]) are clipped, not shading.
CLIPPED = 0.98
#: Shading below this is too low to divide by (a deep shadow): the texel is completed instead.
MIN_SHADING = 0.25
#: Ridge weight pulling the second-order coefficients toward zero (relative to the texel count):
#: tiny, for conditioning only (0.002 already turned a side light 11 to 16 degrees toward the
#: camera on a noise-free rendered face); raised twentyfold per retry when the fit is implausible.
ORDER2_WEIGHT = 1e-5
#: A fitted light is plausible when at least this share of the visible texels gets the shading
#: :func:`delight` can divide by (the rest, deep shadows, is completed), and the light is on the
#: camera's side of the face (its direction's z at most :data:`LIGHT_BEHIND`: a light from the
#: side, a little behind, still lights the face's edge).
PLAUSIBLE_LIT = 0.7
LIGHT_BEHIND = 0.3
#: Fits tried, the second band's ridge twenty times stronger each time (the last is first order).
RETRIES = 5
#: The light model. ``"key"`` (default): one distant key light and an ambient term, each with its
#: own colour (:func:`_fit_key_ambient`): nine coefficients per channel whose second band is the
#: one a distant source has. 1: the first-order fit (the second band near zero); 2: the free
#: nine-coefficient fit. On the synthetic set (BENCHMARKS.md, "Light, second measurements") the key
#: model gave 26.7 dB median and 6 degrees, first order 24.3 dB and 11 degrees (side lights 33 to
#: 45 degrees off: a free or absent second band trades with the first over a face's few normals);
#: the free second order dips at the nose's and lids' normals on real photos, so the albedo glows.
ORDER = "key"
#: The second band's ridge in the first-order fit that gives the dominant direction.
FIRST_ORDER_WEIGHT = 1e4
#: Directions tried for the key light of the ``"key"`` model (a Fibonacci sphere).
KEY_CANDIDATES = 300
#: Huber threshold, in robust standard deviations of the residual.
HUBER_K = 1.5
#: Reweighting iterations.
IRLS_ITERATIONS = 5
#: Fewer fitted texels than this: no light is estimated.
MIN_TEXELS = 200
#: The light's scale is raised until this share of the visible texels has an albedo at most 1.
ALBEDO_QUANTILE = 0.995
#: A photo whose fitted skin has a mean luma below this (in [0, 1]) is too dark to de-light.
MIN_LUMA = 0.04


def sh_basis(normals: torch.Tensor | np.ndarray) -> np.ndarray:
    """The nine basis functions of the module docstring at unit normals.

    Args:
        normals: (..., 3) unit normals (x, y, z) in the camera frame.

    Returns:
        (..., 9) float64.
    """
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    a0, a1, a2 = SH_A
    c0, c1, c2 = SH_C
    one = np.ones_like(x)
    return np.stack([a0 * c0 * one,
                     -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x,
                     a2 * c2 * x * y, -a2 * c2 * y * z, a2 * c2 / (2 * math.sqrt(3.0)) * (3 * z * z - 1),
                     -a2 * c2 * x * z, a2 * c2 / 2 * (x * x - y * y)], -1)


def shading(gamma: np.ndarray, normals: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, 9) coefficients and (..., 3) normals -> (..., 3) float64 shading per channel."""
    return sh_basis(normals) @ np.asarray(gamma, dtype=np.float64).T


def shading_texture(light: "Light", normals: torch.Tensor) -> torch.Tensor:
    """(S, S, 3) texel normals -> (3, S, S) float32 CPU tensor: ``light``'s shading of every texel."""
    return torch.from_numpy(shading(light.gamma, normals.cpu().numpy()).astype(np.float32)).permute(2, 0, 1)


@dataclass(frozen=True)
class Light:
    """Second-order SH light (see the module docstring).

    Attributes:
        gamma: (3, 9) float64 coefficients per RGB channel, scaled so that the mean shading over the
            fitted texels is 1.
        texels: how many texels the fit used.
        residual: the fit's robust RMS residual, in [0, 1] colour units.
    """

    gamma: np.ndarray
    texels: int
    residual: float
    dominant: np.ndarray | None = None

    def direction(self) -> np.ndarray:
        """(3,) unit vector toward the light's dominant direction, in the camera frame: ``dominant``
        when the fit gave one (the key light's, or a first-order fit's: :func:`estimate_light`), else the
        luma-weighted l = 1 band of ``gamma``; (0, 0, 0) for a purely ambient light."""
        if self.dominant is not None:
            return np.asarray(self.dominant, dtype=np.float64)
        g = np.array([0.299, 0.587, 0.114]) @ self.gamma
        d = np.array([-g[3], -g[1], g[2]])
        n = float(np.linalg.norm(d))
        return d / n if n > 1e-9 else np.zeros(3)

    def ambient_share(self) -> float:
        """The constant band's share of the shading a surface facing the light receives:
        ``a0 c0 g0 / (a0 c0 g0 + a1 c1 |d|)`` (luma-weighted), in [0, 1]."""
        g = np.array([0.299, 0.587, 0.114]) @ self.gamma
        amb = SH_A[0] * SH_C[0] * g[0]
        dirn = SH_A[1] * SH_C[1] * float(np.linalg.norm([g[1], g[2], g[3]]))
        return float(amb / max(amb + dirn, 1e-9))

    def to_json(self) -> dict[str, Any]:
        """``light.json``: the coefficients with the basis, constants and frame they mean."""
        return {
            "model": "second-order spherical harmonics, Lambertian (Deep3DFaceRecon's basis)",
            "basis": ["a0 c0", "-a1 c1 y", "a1 c1 z", "-a1 c1 x", "a2 c2 x y", "-a2 c2 y z",
                      "a2 c2 / (2 sqrt 3) (3 z^2 - 1)", "-a2 c2 x z", "a2 c2 / 2 (x^2 - y^2)"],
            "a": list(SH_A), "c": list(SH_C),
            "frame": "the photo's camera (camera.json, OpenCV): x right, y down, z away from the camera; "
                     "normals are unit vectors of the surface, facing the camera has z < 0",
            "shading": "shading_c(n) = sum_k gamma[c][k] Y_k(n); texture = albedo * shading; gamma scaled so "
                       "that the mean shading over the fitted skin texels is 1, or brighter where that keeps "
                       "99.5 % of the visible albedo at most 1",
            "fit": "estimated as one distant key light plus ambient, each with its own colour (the second "
                   "band is the key light's) when ORDER is 'key', facerefiner.light.estimate_light",
            "gamma": [[round(float(v), 6) for v in row] for row in self.gamma],
            "channels": ["r", "g", "b"],
            "direction": [round(float(v), 4) for v in self.direction()],
            "ambient_share": round(self.ambient_share(), 4),
            "fit_texels": int(self.texels),
            "residual": round(float(self.residual), 5),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Light":
        g = np.asarray(d["gamma"], dtype=np.float64)
        if g.shape != (3, 9):
            raise InputError(f"light: expected gamma of shape (3, 9), got {list(g.shape)}")
        dom = d.get("direction")
        return cls(gamma=g, texels=int(d.get("fit_texels", 0)), residual=float(d.get("residual", 0.0)),
                   dominant=None if dom is None else np.asarray(dom, dtype=np.float64))


def directional(direction: np.ndarray, colour=(1.0, 1.0, 1.0), ambient: float = 0.4) -> Light:
    """A light of one distant source toward ``direction`` (camera frame) plus ambient, as SH: the
    clamped-cosine source's l <= 2 projection, scaled so that a surface facing it gets
    ``ambient + (1 - ambient)`` (before the mean-1 normalisation, which this light does not have)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / max(np.linalg.norm(d), 1e-12)
    # The SH projection of a delta light toward d is Y_lm(d) (real SH, unit normalisation); the
    # basis above already carries the kernel a_l, so gamma_k = c_l-normalised Y at d.
    c0, c1, c2 = SH_C
    x, y, z = d
    y_at_d = np.array([c0, -c1 * y, c1 * z, -c1 * x, c2 * x * y, -c2 * y * z, c2 / (2 * math.sqrt(3.0)) * (3 * z * z - 1),
                       -c2 * x * z, c2 / 2 * (x * x - y * y)])
    facing = float(sh_basis(d[None])[0] @ y_at_d)
    g = y_at_d * (1.0 - ambient) / facing
    g[0] += ambient / (SH_A[0] * SH_C[0])
    return Light(gamma=np.outer(np.asarray(colour, dtype=np.float64), g), texels=0, residual=0.0)


def _fit_mask(texture: torch.Tensor, visibility: torch.Tensor, layout: UVLayout, uvr: UVRaster) -> np.ndarray:
    """The texels the light is fitted on: visible skin, not clipped, not the darkest tail."""
    tex = texture.detach().float().cpu().numpy()
    vis = visibility.cpu().numpy() & uvr.valid.cpu().numpy()
    skin = vis & ~feature_mask(layout, texture.shape[-1])
    skin &= tex.max(0) < CLIPPED
    if skin.sum() < MIN_TEXELS:
        return skin
    luma = 0.299 * tex[0] + 0.587 * tex[1] + 0.114 * tex[2]
    return skin & (luma > np.quantile(luma[skin], DARK_QUANTILE))


def _mean_skin_luma(texture: torch.Tensor, visibility: torch.Tensor, layout: UVLayout) -> float:
    tex = texture.detach().float().cpu().numpy()
    skin = visibility.cpu().numpy() & ~feature_mask(layout, texture.shape[-1])
    if not skin.any():
        return 0.0
    return float((0.299 * tex[0] + 0.587 * tex[1] + 0.114 * tex[2])[skin].mean())


def estimate_light(texture: torch.Tensor, visibility: torch.Tensor, normals: torch.Tensor,
                   layout: UVLayout | None = None, *, uvr: UVRaster | None = None,
                   source: str = "photo") -> Light | None:
    """Fit the photo's light to the visible skin texels (see the module docstring).

    Args:
        texture: (3, S, S) float I_S in [0, 1].
        visibility: (S, S) bool V (the occlusion mask already left out).
        normals: (S, S, 3) unit normals (:func:`texel_normals`).
        layout: the UV layout (its facial features are left out of the fit).
        source: the photo's name, for the error message.

    Returns:
        The :class:`Light`, or None when fewer than :data:`MIN_TEXELS` texels of skin are seen or
        no plausible light fits them (more than 1 - :data:`PLAUSIBLE_LIT` of the visible face in
        deep shadow, a light from behind the head, or a negative ambient term: the skin seen is darker at its edges than
        any light makes it, hair or shadows the occlusion step missed).

    Raises:
        InputError: the skin is nearly black (mean luma below :data:`MIN_LUMA`): there is no
            shading to measure.
    """
    check_shape(texture, ["3", "S", "S"], "texture")
    layout = layout or default_layout()
    S = texture.shape[-1]
    uvr = uvr or uv_raster(layout, S)
    if int(visibility.sum()) >= MIN_TEXELS and _mean_skin_luma(texture, visibility & uvr.valid, layout) < MIN_LUMA:
        raise InputError(f"{source}: the face is nearly black in the photo; its light cannot be estimated "
                         "(use --no-delight)")
    m = _fit_mask(texture, visibility, layout, uvr)
    n_fit = int(m.sum())
    if n_fit < MIN_TEXELS:
        return None
    tex = texture.detach().float().cpu().numpy()
    I = tex[:, m].T.astype(np.float64)                           # (N, 3)
    B = sh_basis(normals.cpu().numpy()[m])                       # (N, 9)
    N = len(I)
    # every visible texel's normal (features included: they are divided by this shading too)
    B_all = sh_basis(normals.cpu().numpy()[(visibility.cpu().numpy() & uvr.valid.cpu().numpy())])
    # ridge: the second-order band toward zero
    P2 = np.kron(np.eye(3), np.diag([0.0] * 4 + [1.0] * 5)) * N
    def plausible(g: np.ndarray) -> bool:
        # most visible texels get light enough to divide by, and the light is not behind the head
        sh = B_all @ g.T
        lit = (sh >= MIN_SHADING * sh.mean(0)).all(1).mean()
        lum = np.array([0.299, 0.587, 0.114]) @ g
        d = np.array([-lum[3], -lum[1], lum[2]])
        behind = d[2] / max(float(np.linalg.norm(d)), 1e-9)
        return bool(lit >= PLAUSIBLE_LIT and behind <= LIGHT_BEHIND and lum[0] > 0)  # (and no negative ambient)

    # the first-order fit (the second band held near zero) starts the key model's weights and gives
    # the dominant direction of ORDER 1 and 2, and with ORDER 1 the light: with nine terms a face's few normals let the second band trade with the
    # first (BENCHMARKS.md, "Light": on re-lit dev photos the nine-term l = 1 band pointed 46
    # degrees off in the median, the first-order fit's 7), and on real photos the nine-term light
    # dips at the nose's normals, so that the albedo glows there
    g1, resid1 = _irls(B, I, P2 * FIRST_ORDER_WEIGHT)
    if ORDER == "key":
        fit = _fit_key_ambient(B, I, g1)
        if fit is None or not plausible(fit[0]):
            log.info("%s: no plausible light fits the skin seen (dark at the edges: hair or shadows?)", source)
            return None
        g, resid, d_key = fit
    elif ORDER == 1:
        g, resid = g1, resid1
        if not plausible(g):
            log.info("%s: no plausible light fits the skin seen (dark at the edges: hair or shadows?)", source)
            return None
    else:
        order2 = ORDER2_WEIGHT
        for _attempt in range(RETRIES):
            g, resid = _irls(B, I, P2 * order2)
            if plausible(g):  # else the second band over-fits: pull it harder, down to first order
                break
            order2 *= 20.0
        else:
            log.info("%s: no plausible light fits the skin seen (dark at the edges: hair or shadows?)", source)
            return None
    lum1 = np.array([0.299, 0.587, 0.114]) @ g1
    d1 = np.array([-lum1[3], -lum1[1], lum1[2]])
    dominant = d1 / np.linalg.norm(d1) if np.linalg.norm(d1) > 1e-9 else np.zeros(3)
    if ORDER == "key":
        dominant = d_key
    shade = B @ g.T                                              # (N, 3), albedo folded in
    # fix the albedo-light scale: mean shading over the fitted texels is 1 (per channel the albedo
    # then keeps the photo's mean skin colour)
    k = shade.mean(0)
    if np.any(k <= 1e-6):
        return None
    gamma = g / k[:, None]
    # and raised where that would leave bright visible texels an albedo above 1 (a lit forehead
    # whose shading is below the mean): albedo.png clips at 1, and the photo would not come back
    vis_all = visibility.cpu().numpy() & uvr.valid.cpu().numpy()
    # (a few rounds: a brighter light lets more shadowed texels be divided by)
    I_all = tex[:, vis_all].T
    for _round in range(10):
        sh_all = B_all @ gamma.T
        ok = (sh_all >= MIN_SHADING).all(1)
        if not ok.any():
            break
        q = float(np.quantile((I_all[ok] / sh_all[ok]).max(1), ALBEDO_QUANTILE))
        if q <= 1.0 + 1e-9:
            break
        gamma = gamma * q
    res = float(np.sqrt(np.median((resid ** 2).mean(1))))
    return Light(gamma=gamma, texels=n_fit, residual=res, dominant=dominant)


def _key_lobe(d: np.ndarray) -> np.ndarray:
    """(9,) the SH coefficients of a white distant source toward unit ``d`` (no ambient)."""
    return directional(d, ambient=0.0).gamma[0]


def _fibonacci_directions(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    r = np.sqrt(np.clip(1 - z * z, 0, 1))
    phi = k * math.pi * (3 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def _fit_key_ambient(B: np.ndarray, I: np.ndarray, g_start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The light as one distant key light and an ambient term, each with its own colour:
    gamma_c = alpha_c e_0 + kappa_c h(d), with h(d) a white source's SH lobe toward d
    (:func:`directional`), so the second band is the one such a light has, not a free fit.

    For a fixed d the model is linear in (alpha, kappa) per channel; d is searched over
    :data:`KEY_CANDIDATES` directions facing the camera side (``d_z <=`` :data:`LIGHT_BEHIND`),
    then refined locally, inside Huber reweighting (as :func:`_irls`).

    Args:
        B: (N, 9) basis at the fitted texels; I: (N, 3) their colours.
        g_start: (3, 9) a first-order fit (its residuals start the weights).

    Returns:
        ``(gamma (3, 9), residuals (N, 3), d (3,))`` or None when no direction gives a positive
        key light.
    """
    e0 = np.zeros(9)
    e0[0] = 1.0
    cand = _fibonacci_directions(KEY_CANDIDATES)
    cand = cand[cand[:, 2] <= LIGHT_BEHIND]
    lum = np.array([0.299, 0.587, 0.114])

    def weights(r: np.ndarray) -> np.ndarray:
        rr = np.sqrt((r ** 2).mean(1))
        return np.minimum(1.0, HUBER_K * (1.4826 * np.median(rr) + 1e-6) / np.maximum(rr, 1e-12))

    def solver(w: np.ndarray):
        # the weighted normal equations once per reweighting: a direction's 2 x 2 system and its
        # residual energy then come from these 9 x 9 and 9 x 3 moments, not from the N texels
        G, H, q = B.T @ (B * w[:, None]), B.T @ (I * w[:, None]), float((w[:, None] * I ** 2).sum())

        def solve(d: np.ndarray):
            V = np.stack([e0, _key_lobe(d)], 1)           # (9, 2): ambient and key columns
            A, b = V.T @ G @ V, V.T @ H                      # (2, 2), (2, 3)
            coef = np.linalg.solve(A + 1e-9 * np.eye(2), b)  # (2, 3)
            return coef, q - float((coef * b).sum())
        return solve

    w = weights(I - B @ g_start.T)
    d = None
    for _ in range(IRLS_ITERATIONS):
        solve = solver(w)
        if d is None:  # the first round searches every candidate, later ones refine the last
            scores = []
            for c in cand:
                coef, e = solve(c)
                scores.append(e if lum @ coef[1] > 0 else np.inf)
            i = int(np.argmin(scores))
            if not np.isfinite(scores[i]):
                return None
            d = cand[i]
        coef, e = solve(d)
        step = 0.15
        while step > 0.001:  # local refinement in the tangent plane
            t1 = np.cross(d, [0.0, 1.0, 0.0] if abs(d[1]) < 0.9 else [1.0, 0.0, 0.0])
            t1 /= np.linalg.norm(t1)
            t2 = np.cross(d, t1)
            moved = False
            for dv in (t1, -t1, t2, -t2):
                dn = d + step * dv
                dn /= np.linalg.norm(dn)
                if dn[2] > LIGHT_BEHIND:
                    continue
                cn, en = solve(dn)
                if en < e and lum @ cn[1] > 0:
                    d, coef, e, moved = dn, cn, en, True
            if not moved:
                step /= 2
        r = I - B @ (np.outer(coef[0], e0) + np.outer(coef[1], _key_lobe(d))).T
        w = weights(r)
    gamma = np.outer(coef[0], e0) + np.outer(coef[1], _key_lobe(d))
    return gamma, r, d


def _irls(B: np.ndarray, I: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Huber-reweighted least squares of the three channels at once: (N, 9) basis, (N, 3) colours,
    (27, 27) ridge -> (3, 9) coefficients and (N, 3) residuals."""
    N = len(I)
    w = np.ones(N)
    g = np.zeros((3, 9))
    resid = I.copy()
    for _ in range(IRLS_ITERATIONS):
        Bw = B * w[:, None]
        A = np.kron(np.eye(3), Bw.T @ B) + P
        rhs = np.concatenate([Bw.T @ I[:, c] for c in range(3)])
        g = np.linalg.solve(A, rhs).reshape(3, 9)
        resid = I - B @ g.T
        r = np.sqrt((resid ** 2).mean(1))
        s = 1.4826 * np.median(r) + 1e-6
        w = np.minimum(1.0, HUBER_K * s / np.maximum(r, 1e-12))
    return g, resid


def delight(texture: torch.Tensor, visibility: torch.Tensor, normals: torch.Tensor, light: Light,
            min_shading: float = MIN_SHADING) -> tuple[torch.Tensor, torch.Tensor]:
    """The albedo on the visible texels: the texture divided by the light's shading.

    Args:
        texture: (3, S, S) float I_S in [0, 1].
        visibility: (S, S) bool V.
        normals: (S, S, 3) unit normals.
        light: from :func:`estimate_light`.
        min_shading: texels whose shading (in any channel) is below this are left out.

    Returns:
        ``(albedo, visible)``: (3, S, S) float32 in [0, 1] (0 outside ``visible``) and the (S, S)
        bool texels it is defined on (V minus deep shadows).
    """
    sh = shading_texture(light, normals)
    ok = visibility.cpu() & (sh.min(0).values >= min_shading)
    alb = torch.where(ok[None], texture.detach().float().cpu() / sh.clamp_min(min_shading), torch.zeros_like(sh))
    return alb.clamp(0.0, 1.0).to(texture.device), ok.to(visibility.device)


def relight(albedo: torch.Tensor, normals: torch.Tensor, light: Light) -> torch.Tensor:
    """(3, S, S) albedo under ``light``: albedo times its shading, clamped to [0, 1]."""
    sh = shading_texture(light, normals)
    return (albedo.detach().float().cpu() * sh).clamp(0.0, 1.0).to(albedo.device)


@dataclass(frozen=True)
class AlbedoResult:
    """What :func:`albedo_texture` made for one face.

    Attributes:
        albedo: (3, S, S) float32 in [0, 1], complete: the de-lit visible texels, the rest completed
            in albedo space.
        light: the estimated :class:`Light`.
        visibility: (S, S) bool the texels the albedo shows of the photo (V minus deep shadows).
        normals: (S, S, 3) the texel normals used.
    """

    albedo: torch.Tensor
    light: Light
    visibility: torch.Tensor
    normals: torch.Tensor

    def report(self) -> dict[str, Any]:
        """The ``light`` block of ``report.json``."""
        return {"direction": [round(float(v), 4) for v in self.light.direction()],
                "ambient_share": round(self.light.ambient_share(), 4), "fit_texels": int(self.light.texels),
                "residual": round(float(self.light.residual), 5)}


@dataclass(frozen=True)
class AlbedoInputs:
    """The de-lit inputs of one face's refinement in albedo space (:func:`albedo_inputs`).

    Attributes:
        light: the estimated :class:`Light`.
        normals: (S, S, 3) float32 unit texel normals (camera frame).
        shading: (3, S, S) float32 the light's shading of every texel (>= 0).
        sampled: (3, S, S) float32 the de-lit visible texels (0 elsewhere), in [0, 1].
        visibility: (S, S) bool the texels ``sampled`` is defined on (V minus deep shadows).
        initial: (3, S, S) float32 in [0, 1], ``sampled`` completed in albedo space (the content
            texture I_C of the refinement).
        synthesis: what the completion did (:func:`facerefiner.refine.content_texture`).
    """

    light: Light
    normals: torch.Tensor
    shading: torch.Tensor
    sampled: torch.Tensor
    visibility: torch.Tensor
    initial: torch.Tensor
    synthesis: dict


def albedo_inputs(image: np.ndarray, unwrapped, geometry: FaceGeometry, layout: UVLayout | None = None, *,
                  uvr: UVRaster | None = None, detail: bool = True, seed: int = 0, prior: Any = None,
                  source: str = "photo") -> AlbedoInputs | None:
    """:func:`estimate_light` on the sampled texture, :func:`delight` on its visible texels, then the
    project's completion (:func:`facerefiner.refine.content_texture`: mirror, the person's grain, a
    prior's structure) in albedo space, so that the mirror carries no shading across the face.

    Args:
        image: (H, W, 3) uint8 photo (its digest keeps a prior from completing it with itself).
        unwrapped: the photo's :class:`~facerefiner.unwrap.UnwrapResult` (occlusion applied).
        geometry: the face.

    Returns:
        :class:`AlbedoInputs`, or None when no light is estimated (too little skin seen, or no
        plausible light fits it: :func:`estimate_light`).

    Raises:
        InputError: the face is nearly black in the photo.
    """
    from dataclasses import replace

    from .content import content_texture

    layout = layout or default_layout()
    S = unwrapped.texture.shape[-1]
    uvr = uvr or uv_raster(layout, S)
    normals = texel_normals(geometry, layout, S, uvr)
    light = estimate_light(unwrapped.texture, unwrapped.visibility, normals, layout, uvr=uvr, source=source)
    if light is None:
        return None
    alb, ok = delight(unwrapped.texture, unwrapped.visibility, normals, light)
    if not bool(ok.any()):
        return None
    done, synthesis = content_texture(image, replace(unwrapped, texture=alb, visibility=ok), layout, uvr,
                                      detail=detail, seed=seed, prior=prior)
    sh = shading_texture(light, normals)
    return AlbedoInputs(light=light, normals=normals, shading=sh.clamp_min(0.0).contiguous(), sampled=alb,
                        visibility=ok, initial=done, synthesis=synthesis)


def albedo_texture(image: np.ndarray, unwrapped, geometry: FaceGeometry, layout: UVLayout | None = None, *,
                   uvr: UVRaster | None = None, detail: bool = True, seed: int = 0, prior: Any = None,
                   source: str = "photo") -> AlbedoResult | None:
    """The de-lit, complete albedo of one face without refinement: :func:`albedo_inputs`' content
    texture (what ``refine --content`` and the light benchmark use; ``refine`` itself refines it).

    Returns:
        :class:`AlbedoResult`, or None when no light is estimated.

    Raises:
        InputError: the face is nearly black in the photo.
    """
    a = albedo_inputs(image, unwrapped, geometry, layout, uvr=uvr, detail=detail, seed=seed, prior=prior,
                      source=source)
    if a is None:
        return None
    return AlbedoResult(albedo=a.initial, light=a.light, visibility=a.visibility, normals=a.normals)


#: The lights of ``views.png``'s relit row: from the image's left, its right and above, each a
#: white key light with a little ambient (camera frame: x right, y down, z away from the camera).
RELIGHT_DIRECTIONS = {"left": (-1.0, 0.0, -0.6), "right": (1.0, 0.0, -0.6), "top": (0.0, -1.0, -0.6)}


def named_light(name: str, normals: torch.Tensor | np.ndarray, ambient: float = 0.3) -> Light:
    """One of :data:`RELIGHT_DIRECTIONS` (or ``front``) as a white key light with ``ambient``, scaled
    so that the mean shading over the texels facing the camera is 1 (a face relit by it is about
    as bright as its photo).

    Args:
        name: ``left``, ``right``, ``top`` or ``front``.
        normals: (S, S, 3) camera-frame texel normals (:func:`texel_normals`).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    dirs = {**RELIGHT_DIRECTIONS, "front": (0.0, 0.0, -1.0)}
    if name not in dirs:
        raise ValueError(f"light: expected one of {', '.join(dirs)} or a light.json file, got {name!r}")
    n = np.asarray(normals.cpu().numpy() if isinstance(normals, torch.Tensor) else normals, dtype=np.float64)
    light = directional(np.array(dirs[name]), ambient=ambient)
    seen = n[..., 2] < 0
    k = shading(light.gamma, n[seen]).mean(0) if seen.any() else np.ones(3)
    return Light(gamma=light.gamma / np.maximum(k, 1e-9)[:, None], texels=0, residual=0.0,
                 dominant=np.array(dirs[name], dtype=np.float64) / np.linalg.norm(dirs[name]))
