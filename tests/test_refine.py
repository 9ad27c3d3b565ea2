"""Refinement end to end on real photos (quick schedule, network-free features so that CI is fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import FACES, need, psnr

from facerefiner.cli.main import app
from facerefiner.features import get_extractor
from facerefiner.io import load_image
from facerefiner.layout import default_layout
from facerefiner.pipeline import photo_to_tensor
from facerefiner.reconstruct import reconstruct
from facerefiner.refine import PRESETS, RefineConfig, preset, refine
from facerefiner.render import render_face
from facerefiner.unwrap import uv_raster

PATCHES = get_extractor("patches")


def visible_psnr(rgb, geo, tex, vis):
    import cv2

    layout = default_layout()
    img, mask = render_face(tex, geo.vertices, geo.camera, layout)
    a, _ = render_face(vis[None].float(), geo.vertices, geo.camera, layout)
    m = cv2.erode((mask & (a[0] > 0.999)).numpy().astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return psnr(img.permute(1, 2, 0).numpy()[m], photo_to_tensor(rgb).permute(1, 2, 0).numpy()[m])


@pytest.fixture(scope="module")
def photo(detector):
    rgb = load_image(need(FACES / "deca_exp_1.jpg"))  # head turned: a large hidden region
    return rgb, reconstruct(rgb, detector=detector)


def test_presets():
    p = PRESETS["paper"]
    assert p.scales == (256, 512) and p.steps == (150, 150) and p.passes == 5
    assert (p.content_weight, p.style_weight, p.render_weight) == (8.0, 1.7, 20.0)
    assert (p.optimizer, p.momentum, p.levels) == ("sgd", 0.9, 5)
    assert preset("default", size=256).scales == (128, 256)
    with pytest.raises(ValueError):
        RefineConfig(steps=())
    with pytest.raises(ValueError):
        preset("nope")


def test_refine_completes_keeps_the_visible_region_and_changes_the_hidden(photo):
    rgb, geo = photo
    cfg = preset("quick")
    r = refine(rgb, geo, config=cfg, extractor=PATCHES, device="cpu")
    S = cfg.size
    valid = uv_raster(default_layout(), S).valid
    assert r.texture.shape == (3, S, S) and r.texture.dtype == torch.float32
    assert float(r.texture.min()) >= 0 and float(r.texture.max()) <= 1
    hidden = valid & ~r.visibility
    # complete: the hidden texels, black in the sampled texture, are filled (this photo's far
    # cheek is genuinely near-black hair, so the check is on exact zeros, not on darkness)
    assert float(r.sampled.amax(0)[hidden].max()) == 0.0
    assert float((r.texture.amax(0)[hidden] == 0).float().mean()) < 0.005
    assert float((r.texture.amax(0)[hidden] < 0.02).float().mean()) <= float(
        (r.initial.amax(0)[hidden] < 0.02).float().mean()) + 0.01
    assert hidden.sum() > 0.2 * valid.sum()
    assert float((r.texture - r.initial)[:, hidden].abs().mean()) > 1e-3  # refinement did something there
    p_init = visible_psnr(rgb, geo, r.initial, r.visibility)
    p_ref = visible_psnr(rgb, geo, r.texture, r.visibility)
    assert p_ref > 36.0 and p_ref > p_init - 1.0, (p_init, p_ref)
    assert set(r.history) >= {"content", "style", "render", "total"} and len(r.history["total"]) > 2
    assert r.features["extractor"] == "patches"


def test_same_seed_same_texture_other_seed_other_texture(photo):
    rgb, geo = photo
    cfg = preset("quick", steps=(4, 2))
    a = refine(rgb, geo, config=cfg, extractor=PATCHES, device="cpu").texture
    b = refine(rgb, geo, config=cfg, extractor=PATCHES, device="cpu").texture
    c = refine(rgb, geo, config=preset("quick", steps=(4, 2), seed=1), extractor=PATCHES, device="cpu").texture
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_blurred_content_is_sharpened_where_the_photo_shows(photo):
    """The paper's setting: a detail-poor content texture (a stand-in for a 3DMM albedo); the
    rendering term brings the photo's detail back into the visible region."""
    import cv2

    rgb, geo = photo
    cfg = preset("quick", steps=(30, 30))
    base = refine(rgb, geo, config=preset("quick", steps=(0, 0)), extractor=PATCHES, device="cpu")
    blurred = torch.from_numpy(cv2.GaussianBlur(base.initial.permute(1, 2, 0).numpy(), (0, 0), 6)).permute(2, 0, 1)
    r = refine(rgb, geo, config=cfg, content=blurred, extractor=PATCHES, device="cpu")
    p_blur = visible_psnr(rgb, geo, blurred, r.visibility)
    p_ref = visible_psnr(rgb, geo, r.texture, r.visibility)
    assert p_ref > p_blur + 2.0, (p_blur, p_ref)


def test_cli_refine_writes_everything(tmp_path):
    photo = need(FACES / "deca_vox_id04657.jpg")
    content = tmp_path / "content.jpg"  # wrong size and mode: resampled and converted
    Image.fromarray(np.full((100, 80), 128, np.uint8)).save(content)
    r = CliRunner().invoke(app, ["refine", str(photo), "-o", str(tmp_path / "out"), "--preset", "quick",
                                 "--features", "patches", "--content", str(content), "--seed", "3"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    folder = tmp_path / "out" / "deca_vox_id04657"
    names = {p.name for p in folder.iterdir()}
    assert names >= {"texture.png", "texture_sampled.png", "texture_initial.png", "render.png", "views.png",
                     "visibility.png", "mesh.obj", "mesh.mtl", "camera.json", "report.json"}
    assert Image.open(folder / "texture_sampled.png").mode == "RGBA"
    assert Image.open(folder / "views.png").size == (9 * 256, 256)
    rep = json.loads((folder / "report.json").read_text())
    assert rep["refine"]["config"]["seed"] == 3 and rep["refine"]["features"]["extractor"] == "patches"
    assert len(rep["refine"]["loss_history"]["render"]) > 2


def test_cli_refine_usage_errors(tmp_path, ffhq_photo):
    (tmp_path / "bad.png").write_text("not an image")
    run = lambda *a: CliRunner().invoke(app, ["refine", str(ffhq_photo), "-o", str(tmp_path / "o"), *a])
    r = run("--content", str(tmp_path / "bad.png"))
    assert r.exit_code == 1 and "bad.png" in r.output
    r = run("--preset", "fastest")
    assert r.exit_code == 1 and "--preset" in r.output
    r = run("--vgg-weights", str(tmp_path / "missing.pth"), "--features", "vgg16")
    assert r.exit_code == 1 and "missing.pth" in r.output
    if not torch.cuda.is_available():
        r = run("--device", "cuda")
        assert r.exit_code == 1 and "cuda" in r.output.lower()
