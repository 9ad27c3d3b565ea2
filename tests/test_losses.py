import math

import pytest
import torch
import torch.nn.functional as F

from facerefiner import losses as L
from facerefiner.errors import ShapeError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ distance matrices


def test_cosine_distance_matrix_matches_brute_force():
    g = _gen()
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randn(4, 5, generator=g, dtype=torch.float64)
    d = L.cosine_distance_matrix(x, y)
    ref = 1 - F.cosine_similarity(x[:, None, :], y[None, :, :], dim=-1)
    assert d.shape == (7, 4)
    torch.testing.assert_close(d, ref)
    # self-distance path (custom gram backward) gives the same values
    torch.testing.assert_close(L.cosine_distance_matrix(x, x), 1 - F.cosine_similarity(x[:, None], x[None], dim=-1))


def test_cosine_distance_zero_vector_is_safe():
    x = torch.zeros(2, 3)
    y = torch.ones(3, 3)
    d = L.cosine_distance_matrix(x, y)
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, torch.ones(2, 3))


def test_euclidean_distance_matrix_matches_cdist():
    g = _gen(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) + 100.0
    y = torch.randn(5, 4, generator=g, dtype=torch.float64) + 100.0
    torch.testing.assert_close(L.euclidean_distance_matrix(x, y), torch.cdist(x, y))


def test_euclidean_distance_matrix_zero_distance_has_finite_grad():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    d = L.euclidean_distance_matrix(x, x.detach())
    assert d[0, 0].item() == 0.0 and d[1, 1].item() == 0.0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_shape_errors():
    with pytest.raises(ShapeError, match="expected shape"):
        L.cosine_distance_matrix(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ShapeError):
        L.remd(torch.zeros(3, 4, 1), torch.zeros(3, 4))
    with pytest.raises(ShapeError):
        L.render_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ShapeError):
        L.content_loss(torch.zeros(3, 4), torch.zeros(4, 4))


# ------------------------------------------------------------------ REMD


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_remd_identical_sets_is_zero(metric):
    g = _gen(2)
    x = torch.rand(50, 8, generator=g)
    assert L.remd(x, x.clone(), metric=metric).item() == pytest.approx(0.0, abs=1e-6)
    # y is a superset with extra points: still 0 in the one-directional form
    y = torch.cat([x, torch.rand(20, 8, generator=g)])
    assert L.remd(x, y, metric=metric).item() == pytest.approx(0.0, abs=1e-6)


def test_remd_euclidean_translation_length():
    # far-apart points, copy translated by t with |t| much smaller than the spacing
    x = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    t = torch.tensor([0.3, -0.4, 1.2])  # |t| = 1.3
    assert L.remd(x, x + t, metric="euclidean").item() == pytest.approx(1.3, abs=1e-5)
    assert L.remd(x + t, x, metric="euclidean", symmetric=True).item() == pytest.approx(1.3, abs=1e-5)


def test_remd_matches_brute_force_min():
    g = _gen(3)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randn(70, 6, generator=g, dtype=torch.float64)
    for metric, dm in [("cosine", L.cosine_distance_matrix), ("euclidean", L.euclidean_distance_matrix)]:
        d = dm(x, y)
        torch.testing.assert_close(L.remd(x, y, metric=metric), d.min(1).values.mean())
        sym = torch.maximum(d.min(1).values.mean(), d.min(0).values.mean())
        torch.testing.assert_close(L.remd(x, y, metric=metric, symmetric=True), sym)


def test_remd_gradient_matches_dense_min():
    g = _gen(4)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randn(50, 5, generator=g, dtype=torch.float64)
    for metric, dm in [("cosine", L.cosine_distance_matrix), ("euclidean", L.euclidean_distance_matrix)]:
        xa = x.clone().requires_grad_()
        L.remd(xa, y, metric=metric).backward()
        xb = x.clone().requires_grad_()
        dm(xb, y).min(1).values.mean().backward()
        torch.testing.assert_close(xa.grad, xb.grad)


def test_remd_cosine_scale_invariant():
    g = _gen(5)
    x = torch.rand(30, 6, generator=g)
    y = torch.rand(40, 6, generator=g)
    base = L.remd(x, y).item()
    assert base > 0
    assert L.remd(3.7 * x, y).item() == pytest.approx(base, rel=1e-5)
    assert L.remd(x, 0.2 * y).item() == pytest.approx(base, rel=1e-5)


def test_remd_bad_metric():
    with pytest.raises(ValueError):
        L.remd(torch.zeros(2, 2), torch.zeros(2, 2), metric="l1")


def test_remd_gradcheck_unique_argmin():
    g = _gen(6)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for metric in ["cosine", "euclidean"]:
        assert torch.autograd.gradcheck(lambda a, b: L.remd(a, b, metric=metric), (x, y))
        assert torch.autograd.gradcheck(lambda a, b: L.remd(a, b, metric=metric, symmetric=True), (x, y))


# ------------------------------------------------------------------ moments


def test_moment_loss_point_reflection_is_zero():
    g = _gen(7)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64)
    mu = x.mean(0, keepdim=True)
    y = 2 * mu - x  # same mean, same covariance, different set
    assert not torch.allclose(x, y)
    assert L.moment_loss(x, y).item() == pytest.approx(0.0, abs=1e-12)


def test_moment_loss_positive_otherwise():
    g = _gen(8)
    x = torch.randn(20, 4, generator=g)
    assert L.moment_loss(x, x + 0.5).item() == pytest.approx(0.5, abs=1e-5)  # mean only
    assert L.moment_loss(x, 2 * x).item() > 0


def test_moment_loss_hand_value():
    # x: points (0,0), (2,0), (0,2): mean (2/3, 2/3); unbiased cov [[4/3, -2/3], [-2/3, 4/3]]
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # y: points (0,0), (0,0), (1,1), (3,3): mean (1, 1); cov = [[2, 2], [2, 2]]
    y = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    mean_term = (1 / 3 + 1 / 3) / 2
    cov_term = (abs(4 / 3 - 2) * 2 + abs(-2 / 3 - 2) * 2) / 4
    assert L.moment_loss(x, y).item() == pytest.approx(mean_term + cov_term, abs=1e-12)
    mu, cov = L.feature_moments(y)
    torch.testing.assert_close(cov, torch.full((2, 2), 2.0, dtype=torch.float64))
    assert L.moment_loss(x, y_moments=(mu, cov)).item() == pytest.approx(mean_term + cov_term, abs=1e-12)


def test_moment_loss_gradcheck():
    g = _gen(9)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(L.moment_loss, (x, y))


def test_moment_loss_needs_two_samples():
    with pytest.raises(ValueError):
        L.moment_loss(torch.zeros(1, 3), torch.zeros(4, 3))


# ------------------------------------------------------------------ colour


def test_rgb_to_yuv_orthonormal_round_trip():
    c = torch.tensor(L.YUV_MATRIX, dtype=torch.float64)
    torch.testing.assert_close(c @ c.T, torch.eye(3, dtype=torch.float64), atol=2e-6, rtol=0)
    rgb = torch.rand(4, 5, 3, generator=_gen(10), dtype=torch.float64)
    yuv = L.rgb_to_yuv(rgb)
    assert yuv.shape == rgb.shape
    torch.testing.assert_close(yuv @ c, rgb, atol=5e-6, rtol=0)  # back with C.T
    # grey goes to the luminance axis only: (1,1,1) -> (sqrt 3, 0, 0)
    grey = L.rgb_to_yuv(torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(grey, torch.tensor([math.sqrt(3), 0.0, 0.0], dtype=torch.float64), atol=1e-5, rtol=0)


def test_color_loss_is_distance_preserving():
    x = torch.tensor([[0.2, 0.3, 0.4], [0.9, 0.1, 0.5]])
    y = torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.1, 0.6]])
    # orthonormal transform: YUV distances equal RGB distances (0.1 for each point)
    assert L.color_loss(x, y).item() == pytest.approx(0.1, abs=1e-5)
    assert L.color_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ style


def test_style_loss_combination_and_parts():
    g = _gen(11)
    x = torch.rand(40, 7, generator=g)
    y = torch.rand(60, 7, generator=g)
    total, parts = L.style_loss(x, y, content_weight=8.0, style_weight=1.7)
    assert set(parts) == {"remd", "moment", "color"}
    assert all(isinstance(v, float) for v in parts.values())
    expect = (L.remd(x, y) + L.moment_loss(x, y) + L.color_loss(x[:, :3], y[:, :3]) / 8.0) * 1.7
    torch.testing.assert_close(total, expect)
    assert parts["color"] == pytest.approx(L.color_loss(x[:, :3], y[:, :3]).item())
    # content weight < 1 does not amplify the colour term
    t_small, _ = L.style_loss(x, y, content_weight=0.25, style_weight=1.0)
    torch.testing.assert_close(t_small, L.remd(x, y) + L.moment_loss(x, y) + L.color_loss(x[:, :3], y[:, :3]))
    # precomputed style moments give the same value
    t_pre, _ = L.style_loss(x, y, 8.0, 1.7, y_moments=L.feature_moments(y))
    torch.testing.assert_close(t_pre, total)


# ------------------------------------------------------------------ approximations (fast preset)


def test_nearest_search_exact_when_the_sketch_is_full_dimensional():
    g = _gen(21)
    x, y = torch.randn(50, 12, generator=g), torch.randn(80, 12, generator=g)
    exact = L.cosine_distance_matrix(x, y).argmin(1)
    assert torch.equal(L.NearestSearch(y, dims=12, generator=g)(x), exact)
    s = L.NearestSearch(y, dims=64, generator=g)  # dims >= C: no projection at all
    torch.testing.assert_close(L.remd(x, y, search=s), L.remd(x, y))


def test_nearest_search_finds_near_duplicates_in_high_dimensions():
    # the refiner's case: C large, each x close to one y sample; a 64-dim sketch + 8 exact candidates
    g = _gen(22)
    y = torch.rand(2000, 500, generator=g)
    perm = torch.randperm(2000, generator=g)[:300]
    x = y[perm] + 0.02 * torch.randn(300, 500, generator=g)
    idx = L.NearestSearch(y, dims=64, candidates=8, generator=g)(x)
    assert idx.dtype == torch.int64 and idx.shape == (300,)
    assert float((idx == perm).float().mean()) == 1.0


def test_nearest_search_approximation_is_never_below_the_exact_value():
    g = _gen(23)
    x, y = torch.rand(200, 300, generator=g), torch.rand(400, 300, generator=g)
    # the hard case for a sketch (no structure: every point about equally far from all others)
    approx = L.remd(x, y, search=L.NearestSearch(y, dims=128, candidates=8, generator=g))
    exact = L.remd(x, y)
    assert exact.item() <= approx.item() <= exact.item() * 1.05  # nearly the true minimum (1.027 here)


def test_nearest_search_misuse_raises():
    g = _gen(24)
    x, y = torch.rand(5, 6, generator=g), torch.rand(7, 6, generator=g)
    s = L.NearestSearch(y, dims=3, generator=g)
    with pytest.raises(ValueError, match="another y"):
        L.remd(x, y.clone(), search=s)
    with pytest.raises(ValueError, match="cosine"):
        L.remd(x, y, metric="euclidean", search=s)
    with pytest.raises(ShapeError):
        s(torch.rand(5, 4))
    with pytest.raises(ValueError):
        L.NearestSearch(y, dims=0)


def test_moment_loss_channel_subset():
    g = _gen(25)
    x, y = torch.rand(30, 6, generator=g), torch.rand(40, 6, generator=g)
    full = L.moment_loss(x, y)
    torch.testing.assert_close(L.moment_loss(x, y, channels=torch.arange(6)), full)
    ch = torch.tensor([4, 1, 2])
    mu_term = (x.mean(0) - y.mean(0)).abs().mean()  # all channels
    xc, yc = x[:, ch] - x[:, ch].mean(0), y[:, ch] - y[:, ch].mean(0)
    cov_term = (xc.T @ xc / 29 - yc.T @ yc / 39).abs().mean()  # the 3 x 3 block
    torch.testing.assert_close(L.moment_loss(x, y, channels=ch), mu_term + cov_term)
    torch.testing.assert_close(L.moment_loss(x, y_moments=L.feature_moments(y), channels=ch), mu_term + cov_term)


def test_moment_loss_channel_subset_gradcheck():
    g = _gen(26)
    x = torch.rand(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(7, 5, generator=g, dtype=torch.float64)
    ch = torch.tensor([0, 3, 4])
    assert torch.autograd.gradcheck(lambda a: L.moment_loss(a, y, channels=ch), (x,))


def test_style_loss_passes_the_approximations_through():
    g = _gen(27)
    x, y = torch.rand(40, 9, generator=g), torch.rand(60, 9, generator=g)
    s = L.NearestSearch(y, dims=9, generator=g)
    ch = torch.tensor([0, 5, 7, 8])
    total, parts = L.style_loss(x, y, 8.0, 1.7, search=s, moment_channels=ch)
    expect = (L.remd(x, y) + L.moment_loss(x, y, channels=ch) + L.color_loss(x[:, :3], y[:, :3]) / 8.0) * 1.7
    torch.testing.assert_close(total, expect)


# ------------------------------------------------------------------ content


def _natural_image(h=16, w=16):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    r = 0.3 + 0.5 * xx
    gch = 0.2 + 0.4 * yy + 0.2 * torch.exp(-((xx - 0.6) ** 2 + (yy - 0.4) ** 2) / 0.05)
    b = 0.5 + 0.3 * torch.sin(3 * xx + 2 * yy)
    return torch.stack([r, gch, b])[None]  # (1, 3, h, w)


def _hypercolumns(img):
    """RGB + 3x3 local mean + 5x5 local mean: (H*W, 9)."""
    m3 = F.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
    m5 = F.avg_pool2d(img, 5, stride=1, padding=2, count_include_pad=False)
    return torch.cat([img, m3, m5], 1)[0].flatten(1).T.contiguous()


def test_content_loss_identical_is_zero():
    c = _hypercolumns(_natural_image())
    assert L.content_loss(c, c.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert L.content_loss(2.0 * c, c).item() == pytest.approx(0.0, abs=1e-4)  # blind to scaling


def test_content_loss_shuffled_worse_than_brightened():
    img = _natural_image()
    c = _hypercolumns(img)
    bright = _hypercolumns((img + 0.05).clamp(0, 1))
    perm = torch.randperm(16 * 16, generator=_gen(12))
    shuffled_img = img.flatten(2)[:, :, perm].view_as(img)
    shuffled = _hypercolumns(shuffled_img)
    l_bright = L.content_loss(bright, c).item()
    l_shuf = L.content_loss(shuffled, c).item()
    assert 0 < l_bright < l_shuf
    assert l_shuf > 5 * l_bright


def test_content_loss_gradcheck():
    g = _gen(13)
    x = torch.rand(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.rand(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(L.content_loss, (x, c))


def test_gram_backward_gradcheck():
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True, generator=_gen(14))
    assert torch.autograd.gradcheck(L._gram_rows, (a,))
    assert torch.autograd.gradcheck(lambda t: L._gram_rows(t.T), (a,))


# ------------------------------------------------------------------ gradients flow


def test_all_losses_give_nonzero_gradients():
    g = _gen(15)
    x = torch.rand(30, 6, generator=g, requires_grad=True)
    y = torch.rand(50, 6, generator=g)
    c = torch.rand(30, 6, generator=g)
    fns = {
        "remd_cos": lambda: L.remd(x, y),
        "remd_euc": lambda: L.remd(x, y, metric="euclidean"),
        "moment": lambda: L.moment_loss(x, y),
        "color": lambda: L.color_loss(x[:, :3], y[:, :3]),
        "style": lambda: L.style_loss(x, y, 8.0, 1.7)[0],
        "content": lambda: L.content_loss(x, c),
    }
    for name, fn in fns.items():
        x.grad = None
        fn().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
        assert x.grad.abs().sum() > 0, name
    r = torch.rand(1, 3, 4, 4, generator=g, requires_grad=True)
    L.render_loss(r, torch.rand(1, 3, 4, 4, generator=g), torch.ones(1, 1, 4, 4)).backward()
    assert r.grad.abs().sum() > 0


def test_dtype_and_device_follow_inputs():
    x = torch.rand(10, 5, dtype=torch.float64)
    y = torch.rand(12, 5, dtype=torch.float64)
    total, _ = L.style_loss(x, y, 8.0, 1.7)
    assert total.dtype == torch.float64
    assert L.content_loss(x, x).dtype == torch.float64
    assert L.rgb_to_yuv(x[:, :3]).dtype == torch.float64


# ------------------------------------------------------------------ render loss and mask


def test_render_loss_hand_value():
    r = torch.tensor([[[[0.0, 1.0], [0.5, 0.2]]]]).repeat(1, 3, 1, 1)
    p = torch.zeros(1, 3, 2, 2)
    p[:, 1] = 0.5  # green channel
    m = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # masked pixels (0,0): |0-0|+|0-.5|+|0-0| = 0.5 ; (0,1): |1|+|.5|+|1| = 2.5  -> 3.0 / (2*3)
    assert L.render_loss(r, p, m).item() == pytest.approx(0.5)
    assert L.render_loss(r, p, m.bool()).item() == pytest.approx(0.5)


def test_render_loss_empty_mask_is_zero_without_nan():
    r = torch.rand(2, 3, 3, 3, requires_grad=True)
    loss = L.render_loss(r, torch.rand(2, 3, 3, 3), torch.zeros(2, 1, 3, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(r.grad).all() and (r.grad == 0).all()


def test_erode_mask_hand_case():
    m = torch.zeros(1, 1, 5, 6, dtype=torch.bool)
    m[0, 0, 1:4, 1:5] = True  # 3x4 block
    e = L.erode_mask(m, 3)
    expect = torch.zeros_like(m)
    expect[0, 0, 2, 2:4] = True  # only the inner 1x2 survives
    assert e.dtype == torch.bool and e.shape == m.shape
    assert torch.equal(e, expect)
    ef = L.erode_mask(m.float(), 3)
    assert ef.dtype == torch.float32 and torch.equal(ef, expect.float())
    assert torch.equal(L.erode_mask(m, 1), m)
    # the image border does not erode: a full mask stays full
    full = torch.ones(1, 1, 4, 4)
    assert torch.equal(L.erode_mask(full, 3), full)
    with pytest.raises(ValueError):
        L.erode_mask(m, 4)


def test_render_mask_kernel():
    assert L.render_mask_kernel(256) == 13
    assert L.render_mask_kernel(512) == 25
    assert L.render_mask_kernel(224) == 11
    assert L.render_mask_kernel(10) == 1
    assert all(L.render_mask_kernel(s) % 2 == 1 for s in range(1, 700, 7))


@pytest.mark.parametrize("kernel", [3, 7, 25])
def test_erode_mask_equals_scipys_square_erosion(kernel):
    """Against scipy's grey erosion with a square footprint (border values ignored: scipy's mode
    'nearest' on a mask whose border is kept by replication gives the same as ignoring it), on a
    random soft mask and its binary version."""
    import numpy as np
    from scipy import ndimage

    g = torch.Generator().manual_seed(kernel)
    soft = torch.rand(2, 1, 40, 53, generator=g)
    ref = ndimage.grey_erosion(soft.numpy(), size=(1, 1, kernel, kernel), mode="nearest")
    assert np.allclose(L.erode_mask(soft, kernel).numpy(), ref)
    hard = soft > 0.2
    ref_b = ndimage.grey_erosion(hard.numpy().astype(np.uint8), size=(1, 1, kernel, kernel), mode="nearest") > 0
    assert torch.equal(L.erode_mask(hard, kernel), torch.from_numpy(ref_b))
