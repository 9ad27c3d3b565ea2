import pytest
import torch

from facerefiner import sampling as S
from facerefiner.errors import ShapeError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _texels(pos, h, w):
    """Integer (row, col) of texel-centre positions; asserts they are exactly centres."""
    col = pos[:, 0].double() * w - 0.5
    row = pos[:, 1].double() * h - 0.5
    assert torch.allclose(col, col.round(), atol=1e-4) and torch.allclose(row, row.round(), atol=1e-4)
    return row.round().long(), col.round().long()


def _ellipse_mask(h, w):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # off-centre so that the mirrored mask differs from the mask
    return ((xx - 0.35 * w) / (0.3 * w)) ** 2 + ((yy - 0.5 * h) / (0.4 * h)) ** 2 <= 1


# ------------------------------------------------------------------ grid positions


def test_grid_positions_count_range_and_centres():
    pos = S.grid_positions((256, 256), n=2048, generator=_gen())
    assert pos.shape == (2048, 2) and pos.dtype == torch.float32
    assert (pos > 0).all() and (pos < 1).all()
    r, c = _texels(pos, 256, 256)
    assert len(set(zip(r.tolist(), c.tolist()))) == 2048  # no repeats when the grid is large enough
    # stride floor(sqrt(65536 / 2048)) = 5: all rows/cols share one residue mod 5
    assert len(set((r % 5).tolist())) == 1 and len(set((c % 5).tolist())) == 1


def test_grid_positions_inside_mask():
    h, w = 128, 96
    mask = _ellipse_mask(h, w)
    pos = S.grid_positions((h, w), n=500, generator=_gen(1), mask=mask)
    assert pos.shape == (500, 2)
    r, c = _texels(pos, h, w)
    assert mask[r, c].all()


def test_grid_positions_batch_mask_uses_intersection():
    h, w = 64, 64
    m = torch.zeros(2, h, w, dtype=torch.bool)
    m[0, :, :40] = True
    m[1, :, 20:] = True
    pos = S.grid_positions((h, w), n=300, generator=_gen(2), mask=m)
    r, c = _texels(pos, h, w)
    assert ((c >= 20) & (c < 40)).all()


def test_grid_positions_deterministic_and_offsets_vary():
    a = S.grid_positions((200, 300), n=1000, generator=_gen(3))
    b = S.grid_positions((200, 300), n=1000, generator=_gen(3))
    assert torch.equal(a, b)
    g = _gen(4)
    offsets = set()
    for _ in range(8):
        r, c = _texels(S.grid_positions((200, 300), n=1000, generator=g), 200, 300)
        offsets.add((int(r[0] % 7), int(c[0] % 7)))  # stride floor(sqrt(60)) = 7
    assert len(offsets) > 1


def test_grid_positions_repeats_when_mask_small():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:4, 5:8] = True  # 6 texels
    pos = S.grid_positions((10, 10), n=20, generator=_gen(5), mask=mask)
    assert pos.shape == (20, 2)
    r, c = _texels(pos, 10, 10)
    assert mask[r, c].all()
    counts = torch.unique(r * 10 + c, return_counts=True)[1]
    assert len(counts) == 6 and set(counts.tolist()) <= {3, 4}


def test_grid_positions_errors_and_dtype():
    with pytest.raises(ValueError):
        S.grid_positions((8, 8), n=4, mask=torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ShapeError):
        S.grid_positions((8, 8), n=4, mask=torch.ones(8, 9, dtype=torch.bool))
    pos = S.grid_positions((8, 8), n=4, generator=_gen(), dtype=torch.float64)
    assert pos.dtype == torch.float64


# ------------------------------------------------------------------ style positions


def test_style_positions_sets_counts_and_masks():
    h, w = 64, 80
    mask = _ellipse_mask(h, w)
    flipped = mask.flip(-1)
    assert not torch.equal(mask, flipped)
    out = S.style_positions(mask, n_per_set=300, sets=5, generator=_gen(6))
    assert [m for _, m in out] == [False, True, False, True, False]
    for pos, mirrored in out:
        assert pos.shape == (300, 2)
        r, c = _texels(pos, h, w)
        assert (flipped if mirrored else mask)[r, c].all()
        assert len(set(zip(r.tolist(), c.tolist()))) == 300  # distinct texels
        # the mirror of a mirrored set lies in the original mask
        if mirrored:
            r2, c2 = _texels(S.mirror_positions(pos), h, w)
            assert torch.equal(r2, r) and torch.equal(c2, w - 1 - c)
            assert mask[r2, c2].all()


def test_style_positions_deterministic():
    mask = _ellipse_mask(32, 32)
    a = S.style_positions(mask, 50, 4, generator=_gen(7))
    b = S.style_positions(mask, 50, 4, generator=_gen(7))
    for (pa, ma), (pb, mb) in zip(a, b):
        assert ma == mb and torch.equal(pa, pb)
    assert not torch.equal(a[0][0], a[2][0])  # different sets draw different texels


def test_style_positions_small_mask_and_errors():
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[1, 1] = True
    out = S.style_positions(mask, n_per_set=5, sets=2, generator=_gen(8))
    assert torch.equal(out[0][0], torch.tensor([[1.5 / 6, 1.5 / 6]] * 5))
    assert torch.allclose(out[1][0], torch.tensor([[4.5 / 6, 1.5 / 6]] * 5))
    with pytest.raises(ValueError):
        S.style_positions(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ShapeError):
        S.style_positions(torch.ones(1, 4, 4, dtype=torch.bool))


# ------------------------------------------------------------------ sampling features


def test_sample_features_at_texel_centres_and_mirror():
    img = torch.rand(2, 3, 6, 8, generator=_gen(9))
    mask = torch.ones(6, 8, dtype=torch.bool)
    (pos, _), (pos_m, mirrored) = S.style_positions(mask, n_per_set=10, sets=2, generator=_gen(10))
    r, c = _texels(pos, 6, 8)
    vals = S.sample_features(img, pos)
    assert vals.shape == (2, 10, 3)
    torch.testing.assert_close(vals, img[:, :, r, c].transpose(1, 2))
    # a mirrored set sampled in the flipped image = the mirrored positions in the original (RGB)
    assert mirrored
    torch.testing.assert_close(
        S.sample_features(torch.flip(img, dims=[-1]), pos_m), S.sample_features(img, S.mirror_positions(pos_m))
    )
    # a half-resolution map of a linear ramp is sampled at the matching sub-pixel location
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 1, 6, 8)
    half = torch.nn.functional.interpolate(ramp, size=(3, 4), mode="bilinear", align_corners=False)
    p = torch.tensor([[0.5, 0.5]])
    torch.testing.assert_close(S.sample_features(half, p)[0, 0, 0], S.sample_features(ramp, p)[0, 0, 0])
