import pytest
import torch

from facerefiner import pyramid as P
from facerefiner.errors import ShapeError


@pytest.mark.parametrize("hw", [(64, 64), (37, 51), (5, 3), (1, 1)])
def test_build_collapse_round_trip_float64(hw):
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pyr = P.build(x, levels=5)
    assert len(pyr) == 6
    assert all(t.dtype == torch.float64 for t in pyr)
    torch.testing.assert_close(P.collapse(pyr), x, atol=1e-12, rtol=0)


def test_level_sizes():
    x = torch.rand(1, 3, 37, 51)
    sizes = [tuple(t.shape[-2:]) for t in P.build(x, 5)]
    assert sizes == [(37, 51), (18, 25), (9, 12), (4, 6), (2, 3), (1, 1)]
    assert [tuple(t.shape[-2:]) for t in P.build(torch.rand(1, 1, 3, 8), 4)] == [(3, 8), (1, 4), (1, 2), (1, 1), (1, 1)]


def test_levels_zero_is_identity():
    x = torch.rand(1, 3, 8, 8)
    pyr = P.build(x, 0)
    assert len(pyr) == 1 and torch.equal(pyr[0], x)
    assert torch.equal(P.collapse(pyr), x)


def test_constant_image_has_zero_bands():
    x = torch.full((1, 3, 32, 32), 0.25, dtype=torch.float64)
    pyr = P.build(x, 3)
    for band in pyr[:-1]:
        assert band.abs().max() < 1e-12
    torch.testing.assert_close(pyr[-1], torch.full((1, 3, 4, 4), 0.25, dtype=torch.float64))


def test_shape_error():
    with pytest.raises(ShapeError):
        P.build(torch.rand(3, 8, 8))


def test_texture_forward_and_gradients_reach_every_level():
    x = torch.rand(1, 3, 32, 24, dtype=torch.float64)
    tex = P.LaplacianTexture(x, levels=5)
    params = list(tex.parameters())
    assert len(params) == 6 and all(p.requires_grad for p in params)
    out = tex()
    assert out.shape == x.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, x, atol=1e-12, rtol=0)
    (out * torch.rand_like(out)).sum().backward()
    for i, p in enumerate(params):
        assert p.grad is not None and p.grad.abs().sum() > 0, i


def test_set_trainable_freezes_fine_levels():
    tex = P.LaplacianTexture(torch.rand(1, 3, 32, 32), levels=5)
    tex.set_trainable(levels_from=3)
    assert tex.trainable_from == 3
    (tex() ** 2).sum().backward()
    for i, p in enumerate(tex.pyramid):
        if i < 3:
            assert not p.requires_grad and p.grad is None, i
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, i
    opt = torch.optim.SGD([p for p in tex.parameters() if p.requires_grad], lr=0.3, momentum=0.9)
    before = [p.detach().clone() for p in tex.pyramid]
    opt.step()
    for i, (b, p) in enumerate(zip(before, tex.pyramid)):
        assert torch.equal(b, p) == (i < 3), i
    with pytest.raises(ValueError):
        tex.set_trainable(6)
    tex.set_trainable(0)
    assert all(p.requires_grad for p in tex.parameters())


def test_resize_rebuilds_at_new_size():
    x = torch.rand(1, 3, 16, 16)
    tex = P.LaplacianTexture(x, levels=3)
    tex.set_trainable(2)
    tex.resize((32, 40))
    assert tex.image_size == (32, 40)
    assert len(tex.pyramid) == 4 and tuple(tex.pyramid[0].shape) == (1, 3, 32, 40)
    assert [p.requires_grad for p in tex.pyramid] == [False, False, True, True]
    up = torch.nn.functional.interpolate(x, size=(32, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(tex().detach(), up, atol=1e-5, rtol=0)
    tex.resize((8, 8))
    assert tex().shape == (1, 3, 8, 8)


def test_set_image_replaces_parameters():
    tex = P.LaplacianTexture(torch.zeros(1, 3, 8, 8), levels=2)
    y = torch.rand(1, 3, 8, 8)
    tex.set_image(y)
    torch.testing.assert_close(tex().detach(), y, atol=1e-6, rtol=0)
