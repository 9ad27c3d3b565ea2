"""Quality metrics: PSNR/SSIM, seam, identity, completion, evaluate_folder and ``facerefiner eval``."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import FACES, need

from facerefiner import metrics as M
from facerefiner.cli.main import app

runner = CliRunner()


def smooth_image(h=96, w=80, seed=0) -> np.ndarray:
    """(h, w, 3) float in [0.1, 0.9] with structure at several scales."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3))
    for sigma, amp in ((8, 0.5), (2, 0.3), (0.7, 0.2)):
        n = cv2.GaussianBlur(rng.standard_normal((h, w, 3)), (0, 0), sigma)
        out += amp * n / (n.std() + 1e-12)
    return 0.5 + 0.4 * out / np.abs(out).max()


# --------------------------------------------------------------------------------------------
# PSNR / SSIM


def test_identical_images_give_infinite_psnr_and_ssim_one():
    a = smooth_image()
    assert M.psnr(a, a) == float("inf")
    assert M.ssim(a, a) == pytest.approx(1.0)
    m = np.zeros(a.shape[:2], bool)
    m[20:60, 10:50] = True
    assert M.psnr(a, a.copy(), m) == float("inf")
    assert M.ssim(a, a.copy(), m) == pytest.approx(1.0)
    # uint8 arrays and channel-first tensors are the same images
    u8 = (a * 255 + 0.5).astype(np.uint8)
    t = torch.from_numpy(u8).permute(2, 0, 1).double() / 255
    assert M.psnr(u8, t) == float("inf") and M.ssim(u8, t) == pytest.approx(1.0)


def test_psnr_of_a_known_error():
    a = smooth_image()
    assert M.psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    m = np.zeros(a.shape[:2], bool)
    m[:10] = True
    b = a.copy()
    b[m] += 0.01
    b[~m] += 0.3  # outside the mask: not counted
    assert M.psnr(a, b, m) == pytest.approx(40.0, abs=1e-9)
    assert np.isnan(M.psnr(a, b, np.zeros_like(m)))


def test_gaussian_blur_lowers_psnr_and_ssim():
    import cv2

    a = smooth_image()
    p, s = [], []
    for sigma in (0.8, 1.5, 3.0):
        b = cv2.GaussianBlur(a, (0, 0), sigma)
        p.append(M.psnr(a, b))
        s.append(M.ssim(a, b))
    assert all(np.isfinite(p)) and p[0] < 45 and s[0] < 0.99
    assert p[0] > p[1] > p[2] and s[0] > s[1] > s[2]


def test_ssim_inside_a_mask_ignores_what_lies_outside():
    import cv2

    a = smooth_image()
    m = np.zeros(a.shape[:2], bool)
    m[30:70, 20:60] = True
    b = a.copy()
    b[~m] = 0.0  # e.g. a render's background
    assert M.ssim(a, b, m) == pytest.approx(1.0)
    assert M.ssim(a, b) < 0.9
    c = np.where(m[..., None], cv2.GaussianBlur(a, (0, 0), 2.0), a)
    assert M.ssim(a, c, m) < 0.95


# --------------------------------------------------------------------------------------------
# detail ratio


def face_like_texture(S=512, seed=0) -> np.ndarray:
    """(S, S, 3) float in [0.15, 0.85]: broad shading, blotches and texel-scale grain (pores)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((S, S, 3))
    for sigma, amp in ((S / 16, 0.5), (S / 64, 0.3), (S / 512 * 1.5, 0.2)):
        n = cv2.GaussianBlur(rng.standard_normal((S, S, 3)), (0, 0), sigma)
        out += amp * n / (n.std() + 1e-12)
    return 0.5 + 0.35 * out / np.abs(out).max()


def centre_box(S, lo=0.2, hi=0.8) -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[int(lo * S):int(hi * S), int(lo * S):int(hi * S)] = True
    return m


def test_detail_ratio_on_hand_made_textures():
    """Flat = 0, the truth = exactly 1; noise gives a ratio above 1 but a clearly lower PSNR (the
    noise-only case is flagged by PSNR), and a blur a ratio well below 1 while its PSNR stays high
    (the blur is flagged by the detail ratio): a good completion needs both numbers."""
    import cv2

    S = 512
    truth = face_like_texture(S)
    hidden = centre_box(S)
    assert M.detail_ratio(np.full_like(truth, 0.5), truth, hidden) == pytest.approx(0.0, abs=1e-12)
    assert M.detail_ratio(truth, truth, hidden) == 1.0
    t = torch.from_numpy(truth).permute(2, 0, 1).float()  # tensors (C, H, W) alike
    assert M.detail_ratio(t, t, torch.from_numpy(hidden)) == 1.0
    noisy = np.clip(truth + np.random.default_rng(1).normal(0, 0.08, truth.shape), 0, 1)
    blurred = cv2.GaussianBlur(truth, (0, 0), 2.0)
    d_noise, p_noise = M.detail_ratio(noisy, truth, hidden), M.psnr(truth, noisy, hidden)
    d_blur, p_blur = M.detail_ratio(blurred, truth, hidden), M.psnr(truth, blurred, hidden)
    assert d_noise > 1.4 and p_noise < 24, (d_noise, p_noise)
    assert d_blur < 0.6 and p_blur > 32 and p_blur > p_noise + 6, (d_blur, p_blur)
    # the truth's own detail at half the contrast: half the ratio
    half = truth.mean((0, 1)) + 0.5 * (truth - truth.mean((0, 1)))
    assert M.detail_ratio(half, truth, hidden) == pytest.approx(0.5, rel=1e-9)
    # completion_score reports it
    c = M.completion_score(torch.from_numpy(blurred).permute(2, 0, 1).float(), t, torch.from_numpy(hidden))
    assert set(c) == {"psnr", "ssim", "detail", "texels"} and c["detail"] == pytest.approx(d_blur, rel=1e-3)


def test_detail_ratio_counts_only_the_eroded_hidden_texels_and_the_valid_support():
    S = 512
    truth = face_like_texture(S)
    hidden = centre_box(S, 0.3, 0.7)
    other = truth.copy()
    other[:100] = 0.0  # 54 texels and more from the hidden box: beyond the band-pass's reach
    assert M.detail_ratio(other, truth, hidden) == M.detail_ratio(truth, truth, hidden) == 1.0
    # a change in the hidden ring that the 3-texel erosion drops does count... through the DoG only
    ring = truth.copy()
    ring[int(0.3 * S):int(0.3 * S) + 2] += 0.2
    assert M.detail_ratio(ring, truth, hidden) != 1.0
    # black outside the valid texels (the truth outside V) does not leak into the band-pass
    valid = centre_box(S, 0.25, 0.75)
    ref = truth * valid[..., None]
    assert M.detail_ratio(truth, ref, hidden, valid=valid) == pytest.approx(1.0, abs=1e-12)
    assert M.detail_ratio(truth, ref, centre_box(S, 0.25, 0.75)) < 0.9  # without it, the edge does
    # too small a region after the erosion, or a flat truth: nan
    tiny = np.zeros((S, S), bool)
    tiny[100:104, 100:104] = True
    assert np.isnan(M.detail_ratio(truth, truth, tiny))
    assert np.isnan(M.detail_ratio(truth, np.full_like(truth, 0.3), hidden))
    with pytest.raises(ValueError, match="sigma"):
        M.detail_ratio(truth, truth, hidden, sigma=(3, 1))


def test_dog_of_a_sine_matches_the_analytic_value_and_scipy():
    """A sine of 1/16 cycle per texel: each Gaussian scales it by exp(-2 pi^2 f^2 sigma^2), so the DoG's
    std is A / sqrt 2 |g(1) - g(3)|; scipy's gaussian_filter is an independent implementation."""
    from scipy.ndimage import gaussian_filter

    S, f, A = 512, 1 / 16, 0.2
    x = np.mgrid[0:S, 0:S][1].astype(np.float64)
    lum = 0.5 + A * np.sin(2 * np.pi * f * x)
    sel = centre_box(S)
    g = [np.exp(-2 * np.pi ** 2 * f ** 2 * s ** 2) for s in (1.0, 3.0)]
    analytic = A / np.sqrt(2) * (g[0] - g[1])
    dog = M.dog_luma(np.repeat(lum[..., None], 3, 2), (1.0, 3.0))  # grey RGB: the luma is the image
    assert dog[sel].std() == pytest.approx(analytic, rel=0.01)
    ref = gaussian_filter(lum, 1.0, mode="reflect") - gaussian_filter(lum, 3.0, mode="reflect")
    assert np.abs(dog - ref)[sel].max() < 1e-4
    # the scales follow S: the same sine at half the resolution gives the same ratio to itself
    # stretched (its frequency in texels doubles, the sigmas halve)
    small = 0.5 + A * np.sin(2 * np.pi * 2 * f * x[:256, :256])
    half = 0.5 + 0.5 * A * np.sin(2 * np.pi * 2 * f * x[:256, :256])
    assert M.detail_ratio(half, small, centre_box(256)) == pytest.approx(0.5, rel=1e-9)


# --------------------------------------------------------------------------------------------
# seam


@pytest.fixture(scope="module")
def layout_valid():
    from facerefiner.unwrap import uv_raster

    return uv_raster(None, 256).valid


def test_seam_of_a_smooth_texture_is_about_one_and_a_step_raises_it(layout_valid):
    S = 256
    y, x = np.mgrid[0:S, 0:S] / S
    smooth = 0.3 + 0.25 * (x + y) + 0.005 * np.sin(2 * np.pi * 3 * x) * np.cos(2 * np.pi * 2 * y)
    tex = torch.from_numpy(np.repeat(smooth[None], 3, 0)).float()
    vis = layout_valid & torch.from_numpy(np.hypot(x - 0.35, y - 0.5) < 0.3)
    r = M.seam_ratio(tex, vis, layout_valid)
    assert r["boundary_texels"] > 200 and r["interior_texels"] > 2000
    assert 0.85 < r["ratio"] < 1.15 and 0.85 < r["local_ratio"] < 1.15, r
    stepped = tex + 0.08 * vis[None].float()
    r2 = M.seam_ratio(stepped, vis, layout_valid)
    assert r2["ratio"] > 5 and r2["local_ratio"] > 5, r2
    # channel-last numpy input gives the same
    assert M.seam_ratio(stepped.permute(1, 2, 0).numpy(), vis.numpy(), layout_valid.numpy())["ratio"] == \
        pytest.approx(r2["ratio"])


def test_cost_sums_the_timings_and_finds_peak_rss():
    rep = {"timings_s": {"load": 1.0, "unwrap": 2.5, "note": "x"}, "resources": {"peak_rss_mb": 812.3}}
    assert M.cost(rep) == {"wall_s": 3.5, "peak_rss_mb": 812.3}
    assert M.cost({}) == {"wall_s": 0.0}


# --------------------------------------------------------------------------------------------
# real photos


@pytest.fixture(scope="module")
def ffhq_geo(detector):
    from facerefiner import load_image, reconstruct

    rgb = load_image(need(FACES / "ffhq_00128.png"))
    return rgb, reconstruct(rgb, detector=detector)


def need_dlib():
    pytest.importorskip("dlib", reason='dlib is not installed (pip install "facerefiner[eval]")')
    if not M.identity_available():
        pytest.skip('face_recognition_models is not installed (pip install "facerefiner[eval]")')
    return M.identity_model()


def test_identity_distance_to_itself_is_zero_and_to_another_person_is_large(ffhq_geo, detector):
    from facerefiner import load_image, reconstruct

    model = need_dlib()
    rgb, geo = ffhq_geo
    box = M.bounding_box(geo.projected())
    d = model.descriptor(rgb, box)
    assert d.shape == (128,)
    assert model.distance(d, model.descriptor(rgb.copy(), box)) == pytest.approx(0.0, abs=1e-6)
    other = load_image(need(FACES / "ffhq_00145.png"))
    g2 = reconstruct(other, detector=detector)
    assert model.distance(d, model.descriptor(other, M.bounding_box(g2.projected()))) > M.SAME_PERSON


def test_face_texels_of_a_head_are_its_face_and_of_a_face_mask_all():
    """The ICT head's face texels lie inside the layout: its eyes and mouth, and the skin triangles
    around the face's own vertices (the nose tip, the cheeks), not its ears, neck or scalp far from
    them; for the face mask they are every texel of the layout."""
    from facerefiner.heads import get_head
    from facerefiner.layout import default_layout
    from facerefiner.unwrap import uv_raster

    lay = default_layout()
    assert torch.equal(M.face_texels(lay, 64), uv_raster(lay, 64).valid)
    ict = get_head("ict").layout(None)
    S = 512
    ft, valid = M.face_texels(ict, S), uv_raster(ict, S).valid
    assert (ft <= valid).all() and 0.2 < ft.sum() / valid.sum() < 0.8
    centre = ict.uv[ict.faces].mean(1)                  # each triangle's centroid in the atlas
    t = np.clip((centre * S).astype(int), 0, S - 1)
    hit = ft.numpy()[t[:, 1], t[:, 0]]
    assert hit[np.asarray(ict.parts) != 0].mean() > 0.95          # eyes, sockets, mouth
    keep = np.zeros(ict.num_vertices, bool)
    keep[ict.face] = True
    assert hit[keep[ict.faces].all(1)].mean() > 0.95                 # triangles of the face's vertices
    # skin far from the face's vertices on the head (more than a third of the face's width away,
    # on the neutral head): the ears, the neck, the scalp; not face
    pts = get_head("ict").neutral[ict.weld]            # (V, 3) per atlas vertex
    face_pts = pts[ict.face]
    width = np.ptp(face_pts[:, 0])
    tri = pts[ict.faces].mean(1)
    d = np.full(len(tri), np.inf)
    for k in range(0, len(face_pts), 256):
        d = np.minimum(d, np.linalg.norm(tri[:, None] - face_pts[None, k:k + 256], axis=-1).min(1))
    far = (d > width / 3) & (np.asarray(ict.parts) == 0)
    assert far.sum() > 1000 and hit[far].mean() < 0.05


def test_cheek_mask_lies_on_the_cheek_facing_the_camera(ffhq_geo):
    from facerefiner.render import coverage_mask, face_raster

    _, geo = ffhq_geo
    center = geo.vertices.mean(0)
    sides = {}
    for yaw in (35.0, -35.0):
        g = dataclasses.replace(geo, camera=geo.camera.turned(yaw - geo.yaw, center=center))
        _, cache = face_raster(g.vertices, g.camera, M.default_layout())
        face = coverage_mask(cache)[0].numpy()
        m, side = M.cheek_mask(g)
        other, _ = M.cheek_mask(g, "left" if side == "right" else "right")
        assert m.shape == face.shape and m.sum() > 0.01 * face.sum()
        assert (m & face).sum() == m.sum()  # all on the face
        assert m.sum() > 1.5 * other.sum()  # the cheek facing the camera shows larger
        sides[yaw] = side
    assert sides[35.0] != sides[-35.0]


def test_probe_masks_of_a_real_photo(ffhq_geo):
    """Each kind of probe mask on a real photo: on the face, covering what it is named after."""
    rgb, geo = ffhq_geo
    lm = geo.landmarks
    x0, y0, x1, y1 = geo.box
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    in_box = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)

    def covers(m, i):
        x, y = lm[i, :2]
        return bool(m[int(y), int(x)])

    masks = {}
    for kind in M.PROBE_KINDS:
        m, side = M._probe(geo, kind)
        assert m.shape == (h, w) and m.dtype == bool and m.any(), kind
        assert np.array_equal(M.probe_mask(geo, kind), m)
        assert (m & in_box).sum() >= 0.95 * m.sum(), kind
        assert m.sum() < 0.4 * in_box.sum(), kind
        masks[kind] = (m, side)
    brows = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
    eyes = (468, 473, 33, 133, 362, 263)  # iris centres, eye corners
    m, side = masks["fringe"]
    assert all(covers(m, i) for i in brows)
    assert [covers(m, i) for i in (468, 473)] == ([True, False] if side == "right" else [False, True])
    m, _ = masks["sunglasses"]
    assert all(covers(m, i) for i in (468, 473, 33, 133, 362, 263, 159, 145, 386, 374))
    m, _ = masks["hand"]
    assert all(covers(m, i) for i in (61, 291, 0, 17, 152))
    m, _ = masks["cheeks"]
    assert all(covers(m, i) for i in (50, 280, 205, 425)) and not any(covers(m, i) for i in eyes)
    assert np.array_equal(masks["cheek"][0], M.cheek_mask(geo)[0])
    # the other side, fixed
    m = M.probe_mask(geo, "fringe", side="left" if masks["fringe"][1] == "right" else "right")
    assert covers(m, 468) != covers(masks["fringe"][0], 468) and all(covers(m, i) for i in brows)
    # drawn from the 468 mesh landmarks only: the same without the iris points (a folder's geometry)
    g468 = dataclasses.replace(geo, landmarks=geo.landmarks[:468])
    for kind in M.PROBE_KINDS:
        assert np.array_equal(M.probe_mask(g468, kind), masks[kind][0]), kind
    with pytest.raises(ValueError, match="probe kind"):
        M.probe_mask(geo, "scarf")
    with pytest.raises(ValueError, match="side"):
        M.probe_mask(geo, "fringe", side="up")


def test_completion_probe_of_every_kind(ffhq_geo):
    rgb, geo = ffhq_geo
    for kind in M.PROBE_KINDS:
        p = M.completion_probe(rgb, geo, 128, kind=kind)
        assert p.kind == kind and np.array_equal(p.mask, M.probe_mask(geo, kind))
        assert int(p.hidden.sum()) > 100, kind
        assert not bool((p.hidden & ~p.visibility).any())
        same = M.completion_score(p.reference, p.reference, p.hidden, p.visibility)
        assert same["detail"] == 1.0 and same["psnr"] == float("inf")
        grey = M.completion_score(torch.full_like(p.reference, 0.5), p.reference, p.hidden, p.visibility)
        assert grey["detail"] == pytest.approx(0.0, abs=1e-9)
    given = M.completion_probe(rgb, geo, 64, mask=M.probe_mask(geo, "hand"))
    assert given.kind == "given" and given.side == "given"


def test_completion_probe_hides_visible_cheek_texels(ffhq_geo):
    rgb, geo = ffhq_geo
    p = M.completion_probe(rgb, geo, 128)
    assert p.mask.shape == rgb.shape[:2] and p.mask.any() and p.side in ("left", "right")
    assert int(p.hidden.sum()) > 100
    assert not bool((p.hidden & ~p.visibility).any())  # inside V of the unmasked unwrap
    same = M.completion_score(p.reference, p.reference, p.hidden)
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0) and same["texels"] == int(p.hidden.sum())
    grey = M.completion_score(torch.full_like(p.reference, 0.5), p.reference, p.hidden)
    assert grey["psnr"] < 25 and grey["ssim"] < 0.9


# --------------------------------------------------------------------------------------------
# evaluate_folder and the CLI


@pytest.fixture(scope="module")
def unwrap_folder(tmp_path_factory, detector):
    """A real ``facerefiner unwrap`` output (S = 256) of ffhq_00128."""
    from facerefiner.pipeline import UnwrapConfig, unwrap_photo

    photo = need(FACES / "ffhq_00128.png")
    out = tmp_path_factory.mktemp("metrics_out")
    r = unwrap_photo(photo, out, UnwrapConfig(size=256), detector=detector)
    assert r.ok, r.error
    return r.faces[0].folder


def copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def strict_json(path):
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_geometry_from_folder_matches_the_report(unwrap_folder, ffhq_geo):
    _, geo = ffhq_geo
    g = M.geometry_from_folder(unwrap_folder)
    rep = json.loads((unwrap_folder / "report.json").read_text())
    assert g.yaw == pytest.approx(rep["head_pose_deg"]["yaw"], abs=0.01)
    assert g.pitch == pytest.approx(rep["head_pose_deg"]["pitch"], abs=0.01)
    assert np.abs(g.projected()[:, :2] - geo.projected()[:, :2]).max() < 0.01


def test_evaluate_folder_writes_metrics_into_report_json(unwrap_folder, tmp_path):
    folder = copy_folder(unwrap_folder, tmp_path / "face")
    before = strict_json(folder / "report.json")
    m = M.evaluate_folder(folder)
    rep = strict_json(folder / "report.json")
    assert {k: v for k, v in rep.items() if k != "metrics"} == before
    assert rep["metrics"]["version"] == M.METRICS_VERSION and rep["metrics"]["texture_complete"] is False
    fid = rep["metrics"]["fidelity"]
    assert fid["psnr"] > 30 and 0.9 < fid["ssim"] <= 1 and fid["pixels"] > 10000
    assert rep["metrics"]["seam"] == {"skipped": m["seam"]["skipped"]}
    assert "skipped" in rep["metrics"]["completion"]
    assert rep["metrics"]["cost"]["wall_s"] == pytest.approx(sum(before["timings_s"].values()), abs=1e-3)
    if M.identity_available():
        assert rep["metrics"]["identity"]["render"] < M.SAME_PERSON
    else:
        assert "facerefiner[eval]" in rep["metrics"]["identity"]["skipped"]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temp files


@pytest.mark.parametrize("kind", ["cheek", "sunglasses"])
def test_evaluate_folder_on_a_completed_texture_made_with_a_probe_mask(tmp_path, ffhq_geo, detector, kind):
    """An unwrap with a probe mask, its texture completed by facerefiner.complete: every metric.
    I_C copies the mirror's gradients where the mirror is visible (one cheek: about the photo's
    own detail) and is a smooth harmonic fill where it is not (sunglasses hide both eyes: flat)."""
    from facerefiner.complete import complete
    from facerefiner.io import save_png
    from facerefiner.pipeline import UnwrapConfig, texture_to_uint8, unwrap_photo

    _, geo = ffhq_geo
    mask = M.probe_mask(geo, kind)
    save_png(tmp_path / "mask.png", mask.astype(np.uint8) * 255)
    r = unwrap_photo(need(FACES / "ffhq_00128.png"), tmp_path / "out",
                     UnwrapConfig(size=128, mask=tmp_path / "mask.png"), detector=detector)
    assert r.ok, r.error
    face = r.faces[0]
    save_png(face.folder / "texture.png", texture_to_uint8(complete(face.unwrapped.texture, face.unwrapped.visibility)))
    m = M.evaluate_folder(face.folder, identity=False)
    assert m["texture_complete"] is True
    assert m["identity"] == {"skipped": "disabled (--no-identity)"}
    c = m["completion"]
    assert c["texels"] > 100 and 10 < c["psnr"] < 60 and 0 < c["ssim"] < 1, c
    assert 0.5 < c["detail"] < 1.5 if kind == "cheek" else 0 <= c["detail"] < 0.2, c
    assert c["mask"].endswith("mask.png")
    assert 0.3 < m["seam"]["local_ratio"] < 3 and m["seam"]["boundary_texels"] > 0
    assert strict_json(face.folder / "report.json")["metrics"]["completion"]["texels"] == c["texels"]


def test_identity_is_skipped_with_a_notice_without_the_extra(unwrap_folder, tmp_path, monkeypatch, caplog):
    def missing():
        raise M.EvalExtraMissing(f"dlib is not installed ({M.EVAL_INSTALL_HINT})")

    monkeypatch.setattr(M, "identity_model", missing)
    monkeypatch.setattr(M, "_warned_identity", False)
    folder = copy_folder(unwrap_folder, tmp_path / "face")
    with caplog.at_level(logging.INFO, logger="facerefiner.metrics"):
        m = M.evaluate_folder(folder, write=False)
    assert m["identity"]["skipped"] == 'dlib is not installed (pip install "facerefiner[eval]")'
    assert any('pip install "facerefiner[eval]"' in r.getMessage() for r in caplog.records)
    assert "metrics" not in json.loads((folder / "report.json").read_text())


def test_missing_photo_is_a_one_line_input_error(unwrap_folder, tmp_path):
    folder = copy_folder(unwrap_folder, tmp_path / "face")
    rep = json.loads((folder / "report.json").read_text())
    rep["input"] = str(tmp_path / "moved.png")
    (folder / "report.json").write_text(json.dumps(rep))
    with pytest.raises(M.InputError, match="moved.png"):
        M.evaluate_folder(folder)


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_eval_missing_folder_and_usage_errors(tmp_path):
    r = run("eval", tmp_path / "nothing")
    assert r.exit_code == 2
    failed = [ln for ln in r.output.splitlines() if ln.startswith("failed")]
    assert failed == [f"failed {tmp_path / 'nothing'}: no such folder"], r.output
    assert "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = run("eval", tmp_path / "empty")
    assert r.exit_code == 2 and "no facerefiner output" in r.output
    r = run("eval")
    assert r.exit_code == 1 and r.output.startswith("error: no folders given")


def test_cli_eval_on_an_output_root(unwrap_folder, tmp_path):
    root = tmp_path / "out"
    copy_folder(unwrap_folder, root / "a")
    (root / "b").mkdir()  # not a face folder: ignored inside a root
    r = run("eval", root, "--no-identity")
    assert r.exit_code == 0, r.output
    assert f"ok {root / 'a'}/report.json" in r.output and "PSNR" in r.output and "fill detail" in r.output
    m = strict_json(root / "a" / "report.json")["metrics"]
    assert m["identity"] == {"skipped": "disabled (--no-identity)"} and m["fidelity"]["psnr"] > 30


def test_chroma_drift_on_constructed_cases():
    from facerefiner.losses import YUV_MATRIX

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 64, 64, generator=g) * 0.5 + 0.25
    mask = torch.ones(64, 64, dtype=torch.bool)
    assert M.chroma_drift(ref, ref, mask, 4.0) == 0.0
    # a uniform shift along the U axis of the colour space: |dU| = 0.05 everywhere, dV = 0
    u = torch.tensor(YUV_MATRIX[1], dtype=torch.float32)
    shifted = ref + 0.05 * u[:, None, None] / float(u.norm() ** 2)
    assert M.chroma_drift(shifted, ref, mask, 4.0, q=100) == pytest.approx(0.05, abs=1e-4)
    # a brightness change is not colour
    assert M.chroma_drift(ref + 0.1, ref, mask, 4.0) < 1e-3
    # a blotch counts where the mask is, and grain finer than sigma is blurred away
    blotch = ref.clone()
    blotch[:, 16:48, 16:48] += 0.05 * u[:, None, None] / float(u.norm() ** 2)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[28:36, 28:36] = True
    assert M.chroma_drift(blotch, ref, inside, 2.0) == pytest.approx(0.05, abs=2e-3)
    far = torch.zeros(64, 64, dtype=torch.bool)
    far[:6] = True  # 10 texels (5 sigma) and more from the blotch
    assert M.chroma_drift(blotch, ref, far, 2.0) < 1e-3
    grain = ref + (torch.rand(3, 64, 64, generator=g) - 0.5) * 0.05
    assert M.chroma_drift(grain, ref, mask, 8.0) < 0.01
    with pytest.raises(ValueError, match="expected shape"):
        M.chroma_drift(ref, ref, mask[:32], 4.0)


class _BoxRecorder:
    """An identity model that records the boxes it is given (descriptor = the box)."""

    name = "boxes"

    def __init__(self) -> None:
        self.boxes: list[tuple[float, ...]] = []

    def descriptor(self, rgb, box):
        self.boxes.append(tuple(float(v) for v in box))
        return np.asarray(box, dtype=np.float64)

    @staticmethod
    def distance(a, b):
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def test_identity_reference_box_is_the_detectors_for_every_head():
    """The photo's reference descriptor is taken on the detector's landmark box, so the face mask
    and the ICT head fitted to one photo are measured against the same reference (on their own
    projected faces the two boxes differed by a few pixels, and the reference descriptors by 0.01
    to 0.06, as much as the heads' difference on some photos), on the same crop (one grown to the
    whole head's box had the face at a lower resolution); turned, each render is boxed by the
    head's points that correspond to MediaPipe's landmarks."""
    from facerefiner.heads import get_head
    from facerefiner.io import load_image
    from facerefiner.reconstruct import reconstruct

    rgb = load_image(need(FACES / "ffhq_00128.png"))
    tex = torch.full((3, 64, 64), 0.5)
    refs = []
    for name in ("mediapipe", "ict"):
        head = get_head(name)
        geo = reconstruct(rgb, head=head)
        lay = head.layout(None)
        model = _BoxRecorder()
        marks = head.landmark_points(geo.vertices)
        M.identity_distances(rgb, tex, geo, lay, yaws=(30.0,), model=model, landmarks=marks)
        crop = M._face_crop(rgb, geo, lay, M.FIDELITY_MAX_SIDE, to_mesh=False)
        x0, y0, x1, y1 = geo.box
        expect = M.bounding_box(crop.region.to_region(np.array([[x0, y0], [x1, y1]])))
        assert model.boxes[0] == pytest.approx(expect) and model.boxes[1] == pytest.approx(expect)
        # the crop and the reference box in photo pixels
        r = crop.region
        refs.append(np.array([r.x0, r.y0, r.x1, r.y1, r.scale, *(np.array(model.boxes[0]) / r.scale + [r.x0, r.y0] * 2)]))
        turned = model.boxes[-1]
        assert turned[2] - turned[0] > 20 and turned[3] - turned[1] > 20
    assert np.allclose(refs[0], refs[1], atol=1e-6)  # the same crop and box for both heads


def test_face_report_face_box():
    from facerefiner.folder import FaceReport

    assert FaceReport({"face_box": [1, 2.5, 30, 40]}).face_box == (1.0, 2.5, 30.0, 40.0)
    for bad in ([1, 2, 3], [5, 5, 1, 1], ["a", 1, 2, 3], [True, 0, 3, 4], "box", None):
        assert FaceReport({"face_box": bad}).face_box is None
