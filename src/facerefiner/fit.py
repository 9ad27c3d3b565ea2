"""Fitting a linear morphable model to 3D landmarks: pose (scale, rotation, translation) and weights.

The model is ``X(w) = X0 + B w`` at N points (the head model's points that correspond to the
detector's landmarks), the observation ``Y ~= s R X(w) + t``. The fit minimises

    sum_n a_n |s R X_n(w) + t - Y_n|^2 / s^2  +  sum_k lam_k w_k^2,   lower_k <= w_k <= upper_k

by alternating a weighted similarity (Umeyama) for the pose with a bounded ridge least squares for
the weights (:func:`scipy.optimize.lsq_linear`). Dividing by ``s^2`` measures the residual in the
model's units (cm), so ``lam_k`` is the variance of the landmark noise in cm^2 over the prior
variance of ``w_k``: identity weights N(0, 1) get ``lam = sigma^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MorphableFit", "weighted_similarity", "fit_morphable"]


@dataclass(frozen=True)
class MorphableFit:
    """The result of :func:`fit_morphable`.

    Attributes:
        scale: s (observation units per model unit).
        rotation: (3, 3) float64, det +1.
        translation: (3,) float64.
        weights: (K,) float64 model weights.
        residual: (N, 3) float64 ``s R X(w) + t - Y`` in observation units.
        iterations: alternations run.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    weights: np.ndarray
    residual: np.ndarray
    iterations: int


def weighted_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
                        ) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity ``dst ~= s R src + t`` (Umeyama 1991 with point weights).

    Args:
        src, dst: (N, 3) float corresponding points.
        weights: (N,) non-negative point weights (default: all 1).

    Returns:
        ``(s, R, t)``: scale, (3, 3) rotation with det +1, (3,) translation.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"src, dst: expected two (N, 3) arrays, got {src.shape} and {dst.shape}")
    a = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    a = a / a.sum()
    mu_s, mu_d = a @ src, a @ dst
    ps, pd = src - mu_s, dst - mu_d
    cov = (pd * a[:, None]).T @ ps
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = float(a @ (ps ** 2).sum(1))
    s = float(np.trace(np.diag(D) @ S) / var_s)
    return s, R, mu_d - s * R @ mu_s


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices ([v]_x u = v x u)."""
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _rodrigues(theta: np.ndarray) -> np.ndarray:
    a = float(np.linalg.norm(theta))
    if a < 1e-12:
        return np.eye(3) + _skew(theta)
    k = _skew(theta / a)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def fit_morphable(X0: np.ndarray, basis: np.ndarray, targets: np.ndarray, *, reg: np.ndarray,
                  lower: np.ndarray, upper: np.ndarray, weights: np.ndarray | None = None,
                  axis_weights: np.ndarray | None = None, pairs: np.ndarray | None = None,
                  pair_weights: np.ndarray | None = None, iterations: int = 8, tol: float = 1e-6) -> MorphableFit:
    """Fit pose and weights of ``X(w) = X0 + basis @ w`` to ``targets`` (see the module docstring).

    The pose starts from the weighted similarity of the mean shape; then Gauss-Newton steps on
    all unknowns together (rotation as a small-angle update, log-scale, translation, weights),
    each a bounded ridge least squares (:func:`scipy.optimize.lsq_linear`). Alternating pose and
    weights instead converges slowly where they trade off (pitch against the brows' and the jaw's
    modes: 100 alternations to get within a degree of a synthetic head's pitch; a few steps here).

    Args:
        X0: (N, 3) float model points at w = 0 (model units).
        basis: (N, 3, K) float: the points' change per unit weight.
        targets: (N, 3) float observed points (any units; the similarity absorbs them).
        reg: (K,) ridge weights lam_k (model units squared).
        lower, upper: (K,) bounds of the weights (-inf / inf for none).
        weights: (N,) point weights a_n (default 1).
        axis_weights: (3,) weights of the x, y, z residuals (default 1; e.g. a detector's depth,
            less sure than its image coordinates, weighted less).
        pairs: optional (M, 2) int point index pairs (i, j) whose difference is fitted as well:
            ``(X_i - X_j) ~= (Y_i - Y_j) / s`` rotated, weighted ``pair_weights`` (M,) (default 1)
            and ``axis_weights``. The translation cancels, so a pair weighs the gap between two
            points (a closed mouth's lips) without pulling them anywhere together.
        iterations: at most this many Gauss-Newton steps.
        tol: stop when a step changes the weights by less than this (max abs) and the rotation by
            less than this (radians).
    """
    X0 = np.asarray(X0, np.float64)
    B = np.asarray(basis, np.float64)
    Y = np.asarray(targets, np.float64)
    N, K = X0.shape[0], B.shape[2]
    if B.shape != (N, 3, K) or Y.shape != (N, 3):
        raise ValueError(f"basis, targets: expected ({N}, 3, K) and ({N}, 3), got {B.shape} and {Y.shape}")
    from scipy.optimize import lsq_linear

    a = np.ones(N) if weights is None else np.asarray(weights, np.float64)
    ax = np.ones(3) if axis_weights is None else np.asarray(axis_weights, np.float64)
    sa = np.sqrt(a[:, None] * ax[None]).reshape(-1, 1)
    sreg = np.sqrt(np.asarray(reg, np.float64))
    lo = np.asarray(lower, np.float64)
    hi = np.asarray(upper, np.float64)
    if pairs is None:
        pairs = np.zeros((0, 2), np.int64)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pw = np.ones(len(pairs)) if pair_weights is None else np.asarray(pair_weights, np.float64)
    sp = np.sqrt(pw[:, None] * ax[None]).reshape(-1, 1)
    w = np.clip(np.zeros(K), lo, hi)
    s, R, t = weighted_similarity(X0 + B @ w, Y, a)
    it = 0
    for it in range(1, iterations + 1):
        P = (X0 + B @ w) @ R.T  # rotated model points
        r = P + t / s - Y / s  # residual in model units
        J = np.concatenate([np.einsum("ij,njk->nik", R, B),  # d r / d w
                            -_skew(P),                         # d r / d theta (R <- exp([theta]_x) R)
                            (Y / s)[..., None],                # d r / d log s
                            np.broadcast_to(np.eye(3), (N, 3, 3))], axis=2)
        Jp = (J[pairs[:, 0]] - J[pairs[:, 1]]).reshape(-1, K + 7)
        rp = (r[pairs[:, 0]] - r[pairs[:, 1]]).reshape(-1)
        J = J.reshape(N * 3, K + 7)
        A = np.concatenate([J * sa, Jp * sp, np.concatenate([np.diag(sreg), np.zeros((K, 7))], 1)])
        b = np.concatenate([-r.reshape(-1) * sa[:, 0], -rp * sp[:, 0], -sreg * w])
        bl = np.r_[lo - w, np.full(7, -np.inf)]
        bu = np.r_[hi - w, np.full(7, np.inf)]
        d = lsq_linear(A, b, bounds=(np.minimum(bl, 0), np.maximum(bu, 0)), method="bvls").x
        w = np.clip(w + d[:K], lo, hi)
        R = _rodrigues(d[K:K + 3]) @ R
        ds = float(np.exp(d[K + 3]))
        # r = P + tau - Y exp(-log s) with tau = t / s: tau and log s move, t follows
        tau = t / s + d[K + 4:]
        s *= ds
        t = tau * s
        if np.abs(d[:K]).max() < tol and np.abs(d[K:K + 3]).max() < tol:
            break
    res = s * (X0 + B @ w) @ R.T + t - Y
    return MorphableFit(scale=s, rotation=R, translation=t, weights=w, residual=res, iterations=it)
