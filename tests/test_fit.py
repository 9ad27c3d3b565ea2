"""facerefiner.fit: the weighted similarity and the morphable fit against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from facerefiner.fit import fit_morphable, weighted_similarity
from facerefiner.reconstruct import umeyama


def _rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_weighted_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    R = _rotation(rng)
    dst = 2.5 * src @ R.T + np.array([1.0, -2.0, 3.0])
    s, R2, t = weighted_similarity(src, dst, rng.uniform(0.5, 2.0, 30))
    assert s == pytest.approx(2.5, rel=1e-10)
    np.testing.assert_allclose(R2, R, atol=1e-10)
    np.testing.assert_allclose(t, [1.0, -2.0, 3.0], atol=1e-10)


def test_weighted_similarity_with_unit_weights_is_umeyama():
    rng = np.random.default_rng(1)
    src, dst = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    a, b = weighted_similarity(src, dst), umeyama(src, dst)
    assert a[0] == pytest.approx(b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-12)
    np.testing.assert_allclose(a[2], b[2], atol=1e-12)


def test_zero_weight_points_are_ignored():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(12, 3))
    dst = src.copy()
    dst[-1] += 100.0  # an outlier with weight 0
    s, R, t = weighted_similarity(src, dst, np.r_[np.ones(11), 0.0])
    assert s == pytest.approx(1.0)
    np.testing.assert_allclose(R, np.eye(3), atol=1e-10)


def test_fit_morphable_recovers_weights_and_pose_of_a_linear_model():
    rng = np.random.default_rng(3)
    N, K = 60, 6
    X0 = rng.normal(size=(N, 3)) * 5
    B = rng.normal(size=(N, 3, K)) * 0.5
    w = np.array([0.8, -1.2, 0.3, 0.2, 0.9, 0.0])
    R = _rotation(rng)
    Y = 3.0 * (X0 + B @ w) @ R.T + np.array([10.0, 20.0, 5.0])
    lo = np.r_[-np.inf, -np.inf, -np.inf, 0.0, 0.0, 0.0]
    hi = np.r_[np.inf, np.inf, np.inf, 1.0, 1.0, 1.0]
    f = fit_morphable(X0, B, Y, reg=np.full(K, 1e-9), lower=lo, upper=hi, iterations=50, tol=1e-12)
    np.testing.assert_allclose(f.weights, w, atol=1e-5)
    assert f.scale == pytest.approx(3.0, rel=1e-6)
    np.testing.assert_allclose(f.rotation, R, atol=1e-6)
    assert np.abs(f.residual).max() < 1e-4


def test_fit_morphable_keeps_bounds_and_shrinks_with_the_ridge():
    rng = np.random.default_rng(4)
    N, K = 40, 3
    X0 = rng.normal(size=(N, 3)) * 5
    B = rng.normal(size=(N, 3, K))
    Y = X0 + B @ np.array([2.0, 1.5, -0.5])  # 1.5 and -0.5 lie outside [0, 1]
    lo, hi = np.r_[-np.inf, 0.0, 0.0], np.r_[np.inf, 1.0, 1.0]
    f = fit_morphable(X0, B, Y, reg=np.full(K, 1e-9), lower=lo, upper=hi, iterations=30)
    assert 0.0 <= f.weights[1] <= 1.0 and 0.0 <= f.weights[2] <= 1.0
    assert f.weights[1] == pytest.approx(1.0, abs=1e-6) and f.weights[2] == pytest.approx(0.0, abs=1e-6)
    strong = fit_morphable(X0, B, Y, reg=np.full(K, 1e4), lower=lo, upper=hi, iterations=30)
    assert abs(strong.weights[0]) < abs(f.weights[0])


def test_fit_morphable_names_the_shapes_it_expected():
    with pytest.raises(ValueError, match=r"expected \(4, 3, K\)"):
        fit_morphable(np.zeros((4, 3)), np.zeros((5, 3, 2)), np.zeros((4, 3)), reg=np.ones(2),
                      lower=np.zeros(2), upper=np.ones(2))


def test_fit_morphable_pairs_weigh_a_gap_without_moving_the_points():
    # a "jaw" weight w moves the lower lip (point 1) down by w and the chin (point 2) by 2 w; the
    # targets have the lips closed and the chin 0.5 lower (the landmarks disagree: w = 0 or 0.25)
    anchors = np.array([[-3.0, 2, 0], [3, 2, 0], [-3, -4, 0], [3, -4, 0], [0, 4, 1], [0, -6, 1]])
    X0 = np.concatenate([[[0.0, 0, 0], [0, 0, 0], [0, -1, 0]], anchors])
    B = np.zeros((len(X0), 3, 1))
    B[1, 1, 0], B[2, 1, 0] = -1.0, -2.0
    Y = X0.copy()
    Y[2, 1] = -1.5
    kw = dict(reg=np.full(1, 1e-9), lower=np.zeros(1), upper=np.ones(1), iterations=50, tol=1e-12)
    free = fit_morphable(X0, B, Y, **kw)
    assert 0.1 < free.weights[0] < 0.25  # a compromise: the lips open
    sealed = fit_morphable(X0, B, Y, pairs=np.array([[0, 1]]), pair_weights=np.array([1e4]), **kw)
    assert sealed.weights[0] < 1e-3  # the gap is kept shut
    # a pair whose target gap the model already meets changes nothing
    Y2 = X0 + B @ np.array([0.2])
    a = fit_morphable(X0, B, Y2, **kw)
    b = fit_morphable(X0, B, Y2, pairs=np.array([[0, 1]]), pair_weights=np.array([1e4]), **kw)
    np.testing.assert_allclose(b.weights, a.weights, atol=1e-6)
    np.testing.assert_allclose(b.translation, a.translation, atol=1e-6)
