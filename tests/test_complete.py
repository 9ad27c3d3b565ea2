"""facerefiner.complete: the Poisson completion, the detail synthesis and the prior-guided fill;
facerefiner.prior: building, saving, loading and fitting a face-texture prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import importlib

C = importlib.import_module("facerefiner.complete")
P = importlib.import_module("facerefiner.prior")
from facerefiner.errors import InputError, NothingVisibleError
from facerefiner.layout import default_layout, feature_mask, feature_vertices
from facerefiner.unwrap import uv_raster

from conftest import FACES, need


def _grain(S: int, seed: int, amp: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + amp * torch.randn(3, S, S, generator=g)


def test_synthesize_detail_keeps_the_sources_amplitude_and_only_fills_the_target():
    S = 256
    tex = _grain(S, 0)
    vis = torch.zeros(S, S, dtype=torch.bool)
    vis[:, :140] = True
    target = ~vis
    target[:, 240:] = False
    d = C.synthesize_detail(tex, vis, target, seed=1)
    src = C.detail_layer(tex, vis, C.DETAIL_SIGMA * S if C.DETAIL_SIGMA * S >= 1 else 1.0)[:, vis]
    assert d.shape == tex.shape and d.dtype == torch.float32
    assert torch.count_nonzero(d[:, ~target]) == 0
    # white-noise source: the blended squares keep its std within 10 % (no fading where they overlap)
    ratio = float(d[:, target].std() / src.std())
    assert 0.9 < ratio < 1.1, ratio
    assert abs(float(d[:, target].mean())) < 0.005  # zero-mean: no colour shift
    assert torch.equal(d, C.synthesize_detail(tex, vis, target, seed=1))  # same seed, same detail
    assert not torch.equal(d, C.synthesize_detail(tex, vis, target, seed=2))
    # no square fits in a source thinner than the square: nothing is made up
    thin = torch.zeros(S, S, dtype=torch.bool)
    thin[:, :4] = True
    assert torch.count_nonzero(C.synthesize_detail(tex, thin, ~thin)) == 0


def test_complete_with_detail_adds_grain_only_where_the_mirror_cannot_fill():
    S = 128
    lay = default_layout()
    uvr = uv_raster(lay, S)
    tex = _grain(S, 3)
    vis = uvr.valid.clone()
    vis[: S // 2] = False                      # the upper half (both sides): no mirror there
    smooth = C.complete(tex, vis, lay, uvr=uvr)
    grainy = C.complete(tex, vis, lay, uvr=uvr, detail=True, seed=0)
    hid = uvr.valid & ~vis
    assert torch.equal(smooth[:, vis], tex[:, vis].clamp(0, 1)) or torch.allclose(smooth[:, vis], tex[:, vis].clamp(0, 1))
    assert torch.allclose(grainy[:, vis], smooth[:, vis])
    d_smooth = C.detail_layer(smooth, hid, 2.0)[:, hid].std()
    d_grainy = C.detail_layer(grainy, hid, 2.0)[:, hid].std()
    d_truth = C.detail_layer(tex, uvr.valid, 2.0)[:, uvr.valid].std()
    assert d_smooth < 0.2 * d_truth and 0.6 * d_truth < d_grainy < 1.4 * d_truth, (d_smooth, d_grainy, d_truth)


def test_an_all_hidden_texture_is_a_typed_error():
    S = 64
    with pytest.raises(NothingVisibleError, match="no texel of the face is visible"):
        C.complete(torch.zeros(3, S, S), torch.zeros(S, S, dtype=torch.bool))


def _brow_face(S: int, lay) -> tuple[torch.Tensor, torch.Tensor]:
    """A skin-grey face texture with dark brows (at the layout's brow vertices), and the brows' texels."""
    import cv2

    brow = np.zeros((S, S), np.uint8)
    fv = feature_vertices()
    for name in ("LEFT_EYEBROW", "RIGHT_EYEBROW"):
        hull = cv2.convexHull(np.round(lay.uv[fv[name]] * S - 0.5).astype(np.int32))
        cv2.fillConvexPoly(brow, hull, 1)
    brow_t = torch.from_numpy(brow.astype(bool))
    tex = torch.full((3, S, S), 0.7)
    tex[:, brow_t] = 0.25
    return tex, brow_t


def test_a_hidden_brow_comes_back_darker_than_the_skin_with_a_prior():
    """Both brows hidden (no mirror can fill them): without a prior the fill is skin; with a prior
    whose faces have brows there, the synthesised brows are darker than the skin around them."""
    S = 128
    lay = default_layout()
    uvr = uv_raster(lay, S)
    tex, brow = _brow_face(S, lay)
    import cv2

    hide = torch.from_numpy(cv2.dilate(brow.numpy().astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool))
    vis = uvr.valid & ~hide
    ring = torch.from_numpy(cv2.dilate(hide.numpy().astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)) & vis
    # a prior of two other "faces": same brows, other skin tones and exposure
    entries = [(tex * 0.8).clamp(0, 1), (tex * 1.2).clamp(0, 1)]
    prior = P.TexturePrior(textures=np.stack([(e.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for e in entries]),
                           masks=np.stack([uvr.valid.numpy()] * 2), digests=("a", "b"), sources=("a.png", "b.png"),
                           layout=lay.name)
    img, where, info = P.fit(prior, tex, vis, uvr.valid)
    assert len(info["entries"]) == 2 and abs(sum(e["weight"] for e in info["entries"]) - 1) < 1e-6
    assert bool(where[brow].all())
    plain = C.complete(tex, vis, lay, uvr=uvr)
    guided = C.complete(tex, vis, lay, uvr=uvr, guide=(img, where))
    skin = float(tex[:, ring].mean())
    assert abs(float(plain[:, brow].mean()) - skin) < 0.05           # a smooth skin fill: no brow
    assert float(guided[:, brow].mean()) < skin - 0.15                # the brow is back, darker
    # the photo being completed never completes itself
    _, where_none, info_none = P.fit(prior, tex, vis, uvr.valid, exclude=["a", "b"])
    assert info_none["excluded"] == 2 and not bool(where_none.any())


def test_prior_fit_keeps_the_entries_fine_detail_and_their_common_structure(monkeypatch):
    """Three entries: one shared smooth structure plus each its own fine noise. Their plain average
    has the structure and about 1/sqrt(3) of the noise's amplitude; the fit restores the fine
    detail's amplitude (RESTORE_DETAIL) and keeps the structure."""
    S = 64
    lay = default_layout()
    yy, xx = np.mgrid[:S, :S] / S
    structure = 0.5 + 0.2 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)
    rng = np.random.default_rng(0)
    entries = [np.clip(structure + rng.normal(0, 0.05, (S, S)), 0, 1) for _ in range(3)]
    tex8 = np.stack([np.repeat((e * 255).round()[..., None], 3, 2).astype(np.uint8) for e in entries])
    prior = P.TexturePrior(textures=tex8, masks=np.ones((3, S, S), bool), digests=("a", "b", "c"),
                           sources=("a", "b", "c"), layout=lay.name)
    photo = torch.from_numpy(np.repeat(structure[None], 3, 0).astype(np.float32))
    valid = torch.ones((S, S), dtype=torch.bool)

    def fine(img):
        t = img[0].double()
        return float((t - C.lowpass(t[None], valid, max(1.0, P.PRIOR_DETAIL_SIGMA * S))[0]).std())

    single = fine(torch.from_numpy(tex8[0]).permute(2, 0, 1).float() / 255)
    monkeypatch.setattr(P, "RESTORE_DETAIL", False)
    plain, _, info = P.fit(prior, photo, valid, valid)
    assert len(info["entries"]) == 3
    monkeypatch.setattr(P, "RESTORE_DETAIL", True)
    restored, _, _ = P.fit(prior, photo, valid, valid)
    assert fine(plain) < 0.75 * single                 # averaging three entries lost detail
    assert 0.85 * single < fine(restored) < 1.15 * single
    low = lambda t: C.lowpass(t[:1].double(), valid, 4.0)[0]
    assert float((low(restored) - low(plain)).abs().max()) < 0.01  # the structure is unchanged


def test_feature_mask_covers_the_features_and_not_the_cheeks():
    lay = default_layout()
    m = feature_mask(lay, 256)
    fv = feature_vertices()
    for name, idx in fv.items():
        xy = np.clip((lay.uv[idx] * 256).astype(int), 0, 255)
        assert m[xy[:, 1], xy[:, 0]].all(), name
    cheeks = np.clip((lay.uv[[50, 280, 205, 425]] * 256).astype(int), 0, 255)
    assert not m[cheeks[:, 1], cheeks[:, 0]].any()
    assert m.mean() < 0.25


def test_prior_build_save_load_and_errors(tmp_path):
    photos = [need(FACES / "deca_exp_1.jpg"), need(FACES / "ffhq_00128.png")]
    prior = P.build_prior(photos + [photos[0]], size=64)
    assert len(prior) == 2 and prior.textures.shape == (2, 64, 64, 3) and prior.masks.mean() > 0.3
    f = P.save_prior(prior, tmp_path / "prior.npz")
    back = P.load_prior(f)
    assert np.array_equal(back.textures, prior.textures) and back.digests == prior.digests
    (tmp_path / "bad.npz").write_bytes(b"not a prior")
    with pytest.raises(InputError, match="bad.npz: not a facerefiner prior"):
        P.load_prior(tmp_path / "bad.npz")
    (tmp_path / "cut.npz").write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # a truncated download
    with pytest.raises(InputError, match="cut.npz: not a facerefiner prior"):
        P.load_prior(tmp_path / "cut.npz")
    with pytest.raises(InputError, match="no such file"):
        P.load_prior(tmp_path / "none.npz")


def test_extend_outside_keeps_the_edge_colour_then_fades_smoothly():
    from facerefiner.complete import EDGE_BAND, extend_outside, pull_push

    S = 64
    yy, xx = np.mgrid[:S, :S]
    valid = (yy - 32) ** 2 + (xx - 32) ** 2 < 14 ** 2
    rng = np.random.default_rng(0)
    image = np.where(valid[..., None], rng.uniform(0, 1, (S, S, 3)), np.nan)
    out = extend_outside(np.nan_to_num(image), valid)
    assert np.array_equal(out[valid], np.nan_to_num(image)[valid])
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    from scipy import ndimage

    dist, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    band = (~valid) & (dist <= EDGE_BAND)
    assert np.allclose(out[band], np.nan_to_num(image)[iy[band], ix[band]])
    # far from the edge: smooth (no streaks of single edge texels): neighbours differ little
    far = dist > 3 * EDGE_BAND
    step = np.abs(np.diff(out, axis=1))[far[:, 1:] & far[:, :-1]]
    edge_step = np.abs(np.diff(out, axis=1))[band[:, 1:] & band[:, :-1]]
    assert step.mean() < 0.2 * edge_step.mean()
    # pull-push of a constant is the constant
    const = pull_push(np.full((S, S, 3), 0.3), valid)
    assert np.allclose(const, 0.3)
    # the dtype is kept (float32 textures stay float32)
    assert extend_outside(np.zeros((S, S, 3), np.float32), valid).dtype == np.float32


def test_seam_links_join_the_atlas_charts_of_the_skin_and_the_fill_crosses_them():
    """On the ICT head's atlas, the seam links make every skin texel one neighbourhood (the back
    of the head, the neck and the scalp are charts of their own in UV space), and a constant
    colour on the face chart fills every skin texel with that colour (before: a chart without a
    visible texel came out grey); a hand-made two-chart layout links the texels along the seam."""
    import scipy.sparse as sp
    import scipy.sparse.csgraph as cg

    from facerefiner.complete import complete, part_map, seam_links
    from facerefiner.heads import get_head
    from facerefiner.layout import UVLayout

    lay = get_head("ict").layout(None)
    S = 128
    valid = uv_raster(lay, S).valid.numpy()
    skin = valid & (part_map(lay, S) <= 1)
    links = seam_links(lay, S)
    assert len(links[0]) > 0 and skin[links[0], links[1]].any()
    idx = -np.ones((S, S), np.int64)
    idx[valid] = np.arange(valid.sum())
    r, c = [idx[links[0], links[1]]], [idx[links[2], links[3]]]
    for dy, dx in ((0, 1), (1, 0)):
        ys, xs = np.nonzero(valid[: S - dy, : S - dx] & valid[dy:, dx:])
        r.append(idx[ys, xs])
        c.append(idx[ys + dy, xs + dx])
    r, c = np.concatenate(r), np.concatenate(c)
    _, lab = cg.connected_components(sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(idx.max() + 1,) * 2), directed=False)
    assert len(np.unique(lab[idx[skin]])) == 1  # one piece of skin

    vis = torch.zeros(S, S, dtype=torch.bool)
    ys, xs = np.nonzero(skin)
    centre = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    vis[max(0, ys[centre] - 8): ys[centre] + 8, max(0, xs[centre] - 8): xs[centre] + 8] = True
    vis &= torch.from_numpy(skin)
    colour = torch.tensor([0.8, 0.5, 0.3])
    tex = colour[:, None, None].expand(3, S, S).clone()
    # the mouth and eye sockets (part 1) seen, and dark: they touch the back of the head in its
    # chart and the lips across the seams, and their colour must not flow into the skin (it did,
    # as a maroon patch on deca_ex_alfw2's neck)
    sockets = torch.from_numpy(valid & (part_map(lay, S) == 1))
    vis |= sockets
    tex[:, sockets] = 0.05
    out = complete(tex * vis, vis, lay)
    skin0 = torch.from_numpy(skin & (part_map(lay, S) == 0))
    assert float((out[:, skin0] - colour[:, None]).abs().max()) < 0.02

    # two unit squares side by side in 3D, their charts apart in UV: the shared edge is a seam
    uv = np.array([[0.05, 0.05], [0.45, 0.05], [0.45, 0.45], [0.05, 0.45],     # chart A
                   [0.55, 0.55], [0.95, 0.55], [0.95, 0.95], [0.55, 0.95]])    # chart B
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    weld = np.array([0, 1, 2, 3, 1, 8, 9, 2])  # B's left edge (4, 7) is A's right edge (1, 2)
    two = UVLayout(uv=uv, faces=faces, mirror=None, symmetric=False, closed_eyes=True, name="two", weld=weld)
    ys, xs, yt, xt = seam_links(two, 64)
    assert len(ys) >= 20
    # one end on A's right edge (x ~ 0.45 * 64), the other on B's left edge (x ~ 0.55 * 64), same height order
    a_x, b_x = np.where(xs < 32, xs, xt), np.where(xs < 32, xt, xs)
    assert (np.abs(a_x - 0.45 * 64 + 0.5) <= 1.5).all() and (np.abs(b_x - 0.55 * 64 + 0.5) <= 1.5).all()
    assert np.corrcoef(np.where(xs < 32, ys, yt), np.where(xs < 32, yt, ys))[0, 1] > 0.99


def test_fill_parts_gives_an_unseen_eye_the_other_eyes_texels():
    """An eye the photo hides (or an occluder covers) takes its mirror's seen texels; the unseen
    texels with no seen mirror take the part's colour."""
    from facerefiner.complete import fill_parts, mirror_texture, mirror_uv, part_map
    from facerefiner.heads import get_head

    head = get_head("ict")
    lay = head.layout(None)
    S = 128
    labels = part_map(lay, S)
    right = head.materials.index("M_ScleraRight") + 10
    left = head.materials.index("M_ScleraLeft") + 10
    iris = head.materials.index("M_IrisLeft") + 10
    vis = torch.from_numpy(labels == right)
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(3, S, S, generator=g)
    cols = head.part_colours()
    out = fill_parts(tex, vis, lay, cols)
    mirrored = mirror_texture(vis.float()[None], mirror_uv(lay, S))[0] > 0.999
    there = torch.from_numpy(labels == left) & mirrored
    assert there.sum() > 0.5 * (labels == left).sum()
    torch.testing.assert_close(out[:, there], mirror_texture(tex, mirror_uv(lay, S))[:, there])
    torch.testing.assert_close(out[:, vis], tex[:, vis])  # the seen eye is kept
    # the left iris: not seen, its mirror (the right iris) not seen either: one colour (the darkest
    # fifth of its sclera's seen texels), the same on every texel
    where = torch.from_numpy(labels == iris) & ~mirrored
    assert where.any() and float(out[:, where].std(1).max()) == 0.0


def test_prior_fit_clips_what_one_entry_alone_has(monkeypatch):
    """Three aligned entries, one with a bright spot (a highlight): the combination stays within
    PRIOR_OUTLIER of the others there (ffhq_00145's nose highlight had come out as an orange blob
    on another face's hidden nose side); without the clipping it would not."""
    S = 64
    lay = default_layout()
    yy, xx = np.mgrid[0:S, 0:S] / S
    base = 0.45 + 0.1 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)
    rng = np.random.default_rng(1)
    entries = [base + rng.normal(0, 0.01, (S, S)) for _ in range(3)]  # three other faces: none exact
    entries[0][30:36, 44:50] += 0.45
    tex8 = np.stack([np.repeat((e * 255).round()[..., None], 3, 2).astype(np.uint8) for e in entries])
    prior = P.TexturePrior(textures=tex8, masks=np.ones((3, S, S), bool), digests=("a", "b", "c"),
                           sources=("a", "b", "c"), layout=lay.name)
    photo = torch.from_numpy(np.repeat(base[None], 3, 0).astype(np.float32))
    valid = torch.ones((S, S), dtype=torch.bool)
    vis = valid.clone()
    vis[:, S // 2:] = False
    spot = (slice(None), slice(30, 36), slice(44, 50))

    def excess():
        img, _, _ = P.fit(prior, photo, vis, valid)
        return float((img - photo)[spot].abs().max())

    assert excess() < 0.1
    monkeypatch.setattr(P, "PRIOR_OUTLIER", 1.0)
    assert excess() > 0.15
