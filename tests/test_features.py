"""Tests of facerefiner.features: hypercolumn extractors, VGG16 checkpoint conventions, weight resolution."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facerefiner import features as FE
from facerefiner.features import vgg as FV, weights as FW  # the private parts the tests look into
from facerefiner.errors import ShapeError, WeightsError

from conftest import FACES, VGG_CAFFE as CAFFE_VGG

FACE = FACES / "ffhq_00128.png"

needs_caffe = pytest.mark.skipif(not CAFFE_VGG.is_file(), reason=f"shared VGG16 weights not found at {CAFFE_VGG}")
needs_face = pytest.mark.skipif(not FACE.is_file(), reason=f"shared face photo not found at {FACE}")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


# ------------------------------------------------------------------------------------------------
# helpers and fixtures
# ------------------------------------------------------------------------------------------------


def random_vgg_state_dict(seed: int = 0, classifier: bool = False) -> dict[str, torch.Tensor]:
    """A full set of VGG16 conv tensors (He-initialised, small positive biases)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in FV._VGG16_CONV_SHAPES.items():
        if k.endswith("weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            sd[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            sd[k] = torch.rand(shape, generator=g) * 0.1
    if classifier:
        sd["classifier.0.weight"] = torch.zeros(8, 4)
        sd["classifier.0.bias"] = torch.zeros(8)
    return sd


def caffe_to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert Caffe-convention VGG16 weights (BGR, 0..255, minus mean) to torchvision's convention
    (RGB in [0, 1], (x - m) / s) by editing only the first conv layer.

    Caffe net input for an RGB image x in [0, 1]: c[j] = 255 x[2 - j] - mean_bgr[j]. With
    x[k] = s[k] t[k] + m[k] (t the torchvision input) and W'[:, k] = W[:, 2 - k] (RGB order):
        conv_W(c) = sum_k W'[:, k] * (255 s[k] t[k] + 255 m[k] - mean_rgb[k])
    so W_tv[:, k] = 255 s[k] W'[:, k] and b_tv = b + sum_k (255 m[k] - mean_rgb[k]) * sum_taps W'[:, k].
    """
    out = dict(sd)
    w = sd["features.0.weight"].double().flip(1)  # BGR -> RGB input channels
    b = sd["features.0.bias"].double()
    m = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    s = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1], dtype=torch.float64)
    out["features.0.weight"] = (w * (255.0 * s).view(1, 3, 1, 1)).float()
    out["features.0.bias"] = (b + (w.sum((2, 3)) * (255.0 * m - mean_rgb)).sum(1)).float()
    return out


def load_face(size: int) -> torch.Tensor:
    from PIL import Image

    img = Image.open(FACE).convert("RGB").resize((size, size), Image.BILINEAR)
    arr = np.asarray(img).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def natural_ish(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth, coloured test image in [0, 1] (1/f-like noise) when no photo is available."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, 3, size, size)
    for lvl, amp in ((4, 0.5), (8, 0.25), (16, 0.12), (32, 0.06)):
        n = torch.rand(1, 3, lvl, lvl, generator=g)
        out += amp * F.interpolate(n, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)


@pytest.fixture(scope="module")
def caffe_sd() -> dict[str, torch.Tensor]:
    if not CAFFE_VGG.is_file():
        pytest.skip(f"shared VGG16 weights not found at {CAFFE_VGG}")
    return FE.load_vgg16_state_dict(CAFFE_VGG)


@pytest.fixture(scope="module")
def tv_file(caffe_sd, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("vgg") / "vgg16_converted_tv.pth"
    torch.save(caffe_to_torchvision(caffe_sd), p)
    return p


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """Isolated torch hub dir, no env weights, offline."""
    old = torch.hub.get_dir()
    d = tmp_path / "hub"
    torch.hub.set_dir(str(d))
    monkeypatch.delenv(FE.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv(FE.ENV_OFFLINE, "1")
    yield d
    torch.hub.set_dir(old)


# ------------------------------------------------------------------------------------------------
# shapes and sampling
# ------------------------------------------------------------------------------------------------


def test_vgg16_hypercolumn_channels_and_shapes():
    ext = FE.VGG16Extractor(random_vgg_state_dict(), "torchvision")
    assert ext.channels == 2179 == 3 + 64 * 2 + 128 * 2 + 256 * 3 + 512 * 2
    assert ext.layer_names == ("rgb",) + FE.PAPER_LAYERS
    x = torch.rand(2, 3, 48, 64)
    maps = ext.forward(x)
    assert maps[0] is x
    expected = [(3, 48, 64), (64, 48, 64), (64, 48, 64), (128, 24, 32), (128, 24, 32),
                (256, 12, 16), (256, 12, 16), (256, 12, 16), (512, 6, 8), (512, 3, 4)]
    assert [tuple(m.shape[1:]) for m in maps] == expected
    assert all(m.shape[0] == 2 for m in maps)
    h = ext.features(x, torch.rand(37, 2))
    assert h.shape == (2, 37, 2179) and h.dtype == torch.float32
    assert ext(x, torch.rand(5, 2)).shape == (2, 5, 2179)  # __call__ = features


def test_vgg16_layer_subset_truncates_network():
    ext = FE.VGG16Extractor(random_vgg_state_dict(), "caffe", layers=["relu2_1", "relu1_1"])
    assert ext.layer_names == ("rgb", "relu1_1", "relu2_1")
    assert ext.channels == 3 + 64 + 128
    assert len(ext._net.features) == 7  # conv1_1 .. relu2_1, nothing deeper is run
    maps = ext.forward(torch.rand(1, 3, 20, 20))
    assert [m.shape[1] for m in maps] == [3, 64, 128]
    with pytest.raises(ValueError):
        FE.VGG16Extractor(random_vgg_state_dict(), "caffe", layers=["relu9_9"])


def test_vgg16_input_checks():
    ext = FE.VGG16Extractor(random_vgg_state_dict(), "torchvision")
    with pytest.raises(ShapeError):
        ext.forward(torch.rand(3, 32, 32))
    with pytest.raises(ShapeError):
        ext.forward(torch.rand(1, 4, 32, 32))
    with pytest.raises(ShapeError):
        ext.forward(torch.rand(1, 3, 8, 8))  # too small for relu5_3 (4 max-pools)
    with pytest.raises(ShapeError):
        ext.sample(ext.forward(torch.rand(1, 3, 32, 32)), torch.rand(5, 3))


def test_sample_exact_at_texel_centres():
    g = torch.Generator().manual_seed(1)
    fine = torch.randn(2, 4, 6, 8, generator=g, dtype=torch.float64)
    coarse = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    # texel centres of the coarse map: (j + 0.5) / W, (i + 0.5) / H
    ii, jj = torch.meshgrid(torch.arange(3.0, dtype=torch.float64), torch.arange(4.0, dtype=torch.float64), indexing="ij")
    pos = torch.stack([(jj.flatten() + 0.5) / 4, (ii.flatten() + 0.5) / 3], dim=1)
    h = FE.sample_maps([fine, coarse], pos)
    assert h.shape == (2, 12, 9)
    expect_coarse = coarse.flatten(2).transpose(1, 2)  # (B, H*W, C), row-major = same order as pos
    torch.testing.assert_close(h[..., 4:], expect_coarse, rtol=0, atol=1e-12)
    # the same positions are centres of 2x2 blocks of the fine map -> the block average there
    expect_fine = F.avg_pool2d(fine, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(h[..., :4], expect_fine, rtol=0, atol=1e-12)
    # a single texel, x right / y down: texel (row 1, col 5) of the fine map
    p = torch.tensor([[(5 + 0.5) / 8, (1 + 0.5) / 6]], dtype=torch.float64)
    torch.testing.assert_close(FE.sample_maps([fine], p)[:, 0], fine[:, :, 1, 5], rtol=0, atol=1e-12)
    # the corner (0, 0) lies outside the first texel centre: border padding -> the corner texel
    p0 = torch.zeros(1, 2, dtype=torch.float64)
    torch.testing.assert_close(FE.sample_maps([fine], p0)[:, 0], fine[:, :, 0, 0], rtol=0, atol=1e-12)
    # per-batch positions (B, N, 2)
    pb = torch.stack([pos[:3], pos[3:6]])
    hb = FE.sample_maps([coarse], pb)
    torch.testing.assert_close(hb[0], expect_coarse[0, :3], rtol=0, atol=1e-12)
    torch.testing.assert_close(hb[1], expect_coarse[1, 3:6], rtol=0, atol=1e-12)


def test_hypercolumn_rgb_part_is_the_image():
    ext = FE.VGG16Extractor(random_vgg_state_dict(), "caffe")
    x = torch.rand(1, 3, 32, 32)
    ii, jj = torch.tensor([3, 17, 31]), torch.tensor([0, 9, 30])
    pos = torch.stack([(jj + 0.5) / 32, (ii + 0.5) / 32], dim=1)
    h = ext.features(x, pos)
    torch.testing.assert_close(h[0, :, :3], x[0, :, ii, jj].t(), rtol=0, atol=1e-6)


def test_vgg16_gradients_reach_image_only_and_network_is_reused():
    ext = FE.VGG16Extractor(random_vgg_state_dict(), "torchvision")
    assert not any(p.requires_grad for p in ext._net.parameters())
    assert not ext._net.training
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    for _ in range(3):
        x.grad = None
        ext.features(x, torch.rand(64, 2)).square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert len(ext._cache) == 1 and all(p.grad is None for p in ext._net.parameters())
    # another dtype: one cached copy, same features
    x64 = x.detach().double()
    pos = torch.rand(16, 2)
    h64 = ext.features(x64, pos)
    assert h64.dtype == torch.float64 and len(ext._cache) == 2
    ext.features(x64, pos)
    assert len(ext._cache) == 2
    torch.testing.assert_close(h64.float(), ext.features(x.detach(), pos), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# checkpoint conventions
# ------------------------------------------------------------------------------------------------


@needs_caffe
def test_preprocess_matches_documented_conventions(caffe_sd):
    x = torch.rand(1, 3, 16, 16)
    c = FE.VGG16Extractor(caffe_sd, "caffe").preprocess(x)
    ref_c = x.flip(1) * 255.0 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    torch.testing.assert_close(c, ref_c, rtol=1e-6, atol=1e-4)
    t = FE.VGG16Extractor(caffe_sd, "torchvision").preprocess(x)
    ref_t = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(t, ref_t, rtol=1e-6, atol=1e-5)


@needs_caffe
def test_both_conventions_give_the_same_features(caffe_sd, tv_file):
    """The Caffe file (caffe convention) and its conversion (torchvision convention) are the same
    network. Only zero padding differs: a padded 0 of conv1_1 stands for the caffe mean in one
    convention and for 255 * (0.485, 0.456, 0.406) in the other (differences 0.005, 0.5, 0.4 grey
    levels), so border pixels of relu1_1 differ by ~0.3 % of the map's maximum and the difference
    spreads one receptive field inwards per layer. Inside the image, away from the border, the maps
    agree to float32 rounding."""
    x = load_face(64) if FACE.is_file() else natural_ish(64)
    e_caffe, i_caffe = FE.get_extractor("vgg16", weights=CAFFE_VGG)
    e_auto, i_auto = FE.get_extractor("vgg16", weights=tv_file)
    e_forced, i_forced = FE.get_extractor("vgg16", weights=tv_file, weights_format="torchvision")
    assert i_caffe["convention"] == "caffe" and i_auto["convention"] == "torchvision"
    assert i_forced["convention"] == "torchvision" and i_forced["convention_reason"] == "weights_format given"
    with torch.no_grad():
        mc = e_caffe.forward(x)
        for e in (e_auto, e_forced):
            mt = e.forward(x)
            for name, a, b in zip(e.layer_names, mc, mt):
                scale = a.abs().max()
                assert (a - b).abs().max() <= 5e-3 * scale, name
                # interior: up to relu2_2 the receptive field is 16 px (border effect <= 8 px deep)
                if name in ("rgb", "relu1_1", "relu1_2", "relu2_1", "relu2_2"):
                    k = 10 * a.shape[-1] // 64
                    d = (a - b)[..., k:-k, k:-k].abs().max()
                    assert d <= 1e-5 * scale, name
    pos = torch.rand(256, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    hc = e_caffe.features(x, pos)
    ht = e_auto.features(x, pos)
    cos = F.cosine_similarity(hc, ht, dim=-1)
    assert cos.min() > 0.9999


@needs_caffe
def test_forcing_the_wrong_convention_changes_features(caffe_sd):
    x = natural_ish(32)
    a = FE.VGG16Extractor(caffe_sd, "caffe").features(x, torch.rand(8, 2))
    b = FE.VGG16Extractor(caffe_sd, "torchvision").features(x, torch.rand(8, 2))
    assert not torch.allclose(a, b, rtol=0.1)


@needs_caffe
def test_autodetect_both_files(caffe_sd, tv_file, tmp_path):
    # 1. known file hash / name
    conv, why = FE.detect_convention(caffe_sd, CAFFE_VGG)
    assert conv == "caffe" and "sha256" in why
    tv_named = tmp_path / FE.TORCHVISION_VGG16_FILE
    tv_named.write_bytes(b"")  # the name alone identifies torchvision's file (content not read)
    assert FE.detect_convention(caffe_sd, tv_named)[0] == "torchvision"
    # 2. unknown files: value fingerprint (re-saved, wrapped, renamed, half precision)
    tv_sd = FE.load_vgg16_state_dict(tv_file)
    conv, why = FE.detect_convention(tv_sd, tv_file)
    assert conv == "torchvision" and "converted" in why
    wrapped = tmp_path / "wrapped_caffe.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v.half() for k, v in caffe_sd.items()}}, wrapped)
    ext, info = FE.get_extractor("vgg16", weights=wrapped)
    assert info["convention"] == "caffe" and "published caffe" in info["convention_reason"]
    # 3. the scale heuristic alone (no fingerprint): decides folded conversions ...
    w0, b0 = tv_sd["features.0.weight"], tv_sd["features.0.bias"]
    assert FV._scale_heuristic(w0, b0)[0] == "torchvision"
    unfolded = w0.double().flip(1) / (255 * torch.tensor(IMAGENET_STD[::-1], dtype=torch.float64)).view(1, 3, 1, 1)
    assert FV._scale_heuristic(unfolded / 58, b0)[0] == "caffe"
    # ... and declares natively trained weights (the original Caffe file, rho ~0.53) ambiguous
    assert FV._scale_heuristic(caffe_sd["features.0.weight"], caffe_sd["features.0.bias"]) is None


def test_fingerprint_of_torchvision_weights_and_unknown_weights(caplog):
    sd = random_vgg_state_dict()
    sd["features.0.weight"] = sd["features.0.weight"].clone()
    sd["features.0.weight"][:3] = FV._FP_TORCHVISION.float()
    assert FE.detect_convention(sd)[0] == "torchvision"
    # torchvision weights unfolded into the caffe convention (BGR, 0..255)
    w = FV._FP_TORCHVISION.flip(1) / (255 * torch.tensor(IMAGENET_STD[::-1], dtype=torch.float64)).view(1, 3, 1, 1)
    sd["features.0.weight"][:3] = w.float()
    assert FE.detect_convention(sd)[0] == "caffe"
    # unrelated weights with native-looking statistics: torchvision assumed, with a warning
    sd = random_vgg_state_dict(seed=5)
    sd["features.0.bias"] = torch.full((64,), 0.3)
    with caplog.at_level(logging.WARNING, logger="facerefiner.features"):
        conv, why = FE.detect_convention(sd)
    assert conv == "torchvision" and "ambiguous" in why
    assert any("weights_format" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------
# weight resolution
# ------------------------------------------------------------------------------------------------


def _touch_weights(path: Path, valid: bool = False) -> Path:
    """A weights file: a loadable random VGG16 state dict when ``valid``, else a placeholder
    (resolution only checks that the file exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if valid:
        torch.save(random_vgg_state_dict(), path)
    else:
        path.write_bytes(b"placeholder")
    return path


def test_resolution_order(hub_dir, tmp_path, monkeypatch):
    explicit = _touch_weights(tmp_path / "explicit.pth")
    env = _touch_weights(tmp_path / "env.pth")
    cached = _touch_weights(hub_dir / "checkpoints" / FE.TORCHVISION_VGG16_FILE)
    monkeypatch.setenv(FE.ENV_WEIGHTS, str(env))
    assert FE.resolve_vgg16_weights(explicit) == explicit
    assert FE.resolve_vgg16_weights() == env
    monkeypatch.delenv(FE.ENV_WEIGHTS)
    assert FE.resolve_vgg16_weights() == cached
    cached.unlink()
    with pytest.raises(WeightsError) as err:
        FE.resolve_vgg16_weights()
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("--vgg-weights", FE.ENV_WEIGHTS, FE.TORCHVISION_VGG16_FILE, "download disabled"):
        assert part in msg


def test_resolution_configured_but_missing_is_an_error(hub_dir, tmp_path, monkeypatch):
    _touch_weights(hub_dir / "checkpoints" / FE.TORCHVISION_VGG16_FILE)
    with pytest.raises(WeightsError, match="nope.pth"):
        FE.resolve_vgg16_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(FE.ENV_WEIGHTS, str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match=f"{FE.ENV_WEIGHTS}=.*gone.pth"):
        FE.resolve_vgg16_weights()
    with pytest.raises(WeightsError):
        FE.get_extractor("auto")  # a configured but broken path is reported, not replaced


def test_download_step_offline_and_online_without_network(hub_dir, monkeypatch):
    calls = []

    def no_probe(*a, **k):
        calls.append(a)
        return False

    monkeypatch.setattr(FW, "_reachable", no_probe)
    # FACEREFINER_OFFLINE=1: no probe, no download
    with pytest.raises(WeightsError, match="download disabled"):
        FE.resolve_vgg16_weights()
    assert calls == []
    # online allowed but unreachable: probe once, fail cleanly
    monkeypatch.delenv(FE.ENV_OFFLINE)
    with pytest.raises(WeightsError, match="unreachable"):
        FE.resolve_vgg16_weights()
    assert len(calls) == 1
    # reachable: load_state_dict_from_url(check_hash=True) into the hub cache
    monkeypatch.setattr(FW, "_reachable", lambda *a, **k: True)
    seen = {}

    def fake_download(url, model_dir=None, check_hash=False, file_name=None, **kw):
        seen.update(url=url, check_hash=check_hash)
        _touch_weights(Path(model_dir) / file_name)
        return {}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    p = FE.resolve_vgg16_weights()
    assert p == hub_dir / "checkpoints" / FE.TORCHVISION_VGG16_FILE and p.is_file()
    assert seen == {"url": FE.TORCHVISION_VGG16_URL, "check_hash": True}
    # a failing download is reported, not raised as a network exception
    p.unlink()

    def broken(*a, **k):
        raise OSError("connection reset")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", broken)
    with pytest.raises(WeightsError, match="download failed"):
        FE.resolve_vgg16_weights()


def test_reachable_probe_fails_fast():
    import time

    t0 = time.perf_counter()
    assert FW._reachable("nonexistent.invalid", 443, timeout=1.0) is False
    assert time.perf_counter() - t0 < 3.0


def test_auto_falls_back_to_patches_with_notice(hub_dir):
    ext, info = FE.get_extractor("auto")
    assert info["extractor"] == "patches" and isinstance(ext, FE.PatchExtractor)
    notice = info["notice"]
    assert notice and "\n" not in notice
    assert "--vgg-weights" in notice and FE.ENV_WEIGHTS in notice
    with pytest.raises(WeightsError):
        FE.get_extractor("vgg16")


def test_auto_uses_vgg16_when_weights_resolve(hub_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(FE.ENV_WEIGHTS, str(_touch_weights(tmp_path / "w.pth", valid=True)))
    ext, info = FE.get_extractor("auto", weights_format="caffe")
    assert info["extractor"] == "vgg16" and info["notice"] is None and info["convention"] == "caffe"
    assert ext.channels == 2179 and info["channels"] == 2179
    with pytest.raises(ValueError):
        FE.get_extractor("resnet")
    with pytest.raises(ValueError):
        FE.get_extractor("vgg16", weights_format="bgr")


# ------------------------------------------------------------------------------------------------
# bad files
# ------------------------------------------------------------------------------------------------


def test_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt_vgg.pth"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match="corrupt_vgg.pth") as err:
        FE.get_extractor("vgg16", weights=bad)
    assert "\n" not in str(err.value)
    # a truncated real checkpoint
    good = _touch_weights(tmp_path / "good.pth", valid=True)
    trunc = tmp_path / "truncated_vgg.pth"
    trunc.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="truncated_vgg.pth"):
        FE.load_vgg16_state_dict(trunc)


def test_missing_keys_and_wrong_shapes(tmp_path):
    sd = random_vgg_state_dict()
    del sd["features.28.bias"], sd["features.26.weight"]
    p = tmp_path / "incomplete_vgg.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=r"incomplete_vgg.pth.*features.26.weight"):
        FE.load_vgg16_state_dict(p)
    sd = random_vgg_state_dict()
    sd["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=r"features.5.weight"):
        FE.load_vgg16_state_dict(p)
    torch.save({"conv1.weight": torch.zeros(3)}, p)
    with pytest.raises(WeightsError, match="no VGG16 conv weights"):
        FE.load_vgg16_state_dict(p)
    torch.save(torch.zeros(3), p)
    with pytest.raises(WeightsError, match="incomplete_vgg.pth"):
        FE.load_vgg16_state_dict(p)


def test_wrapped_and_prefixed_checkpoints_with_classifier(tmp_path):
    sd = random_vgg_state_dict(classifier=True)
    for i, obj in enumerate([
        sd,
        {"state_dict": sd},
        {"model": {"module." + k: v for k, v in sd.items()}},
        {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")},
    ]):
        p = tmp_path / f"w{i}.pth"
        torch.save(obj, p)
        loaded = FE.load_vgg16_state_dict(p)
        assert sorted(loaded) == sorted(FV._VGG16_CONV_KEYS)
        torch.testing.assert_close(loaded["features.28.weight"], sd["features.28.weight"])


# ------------------------------------------------------------------------------------------------
# patches
# ------------------------------------------------------------------------------------------------


def test_patches_shapes_and_channels():
    ext, info = FE.get_extractor("patches")
    assert info["extractor"] == "patches" and info["weights"] is None
    assert ext.channels == 3 + 4 * (3 + 16 + 2 * 4) == 111
    x = torch.rand(2, 3, 40, 56)
    maps = ext.forward(x)
    assert maps[0] is x
    assert [tuple(m.shape) for m in maps[1:]] == [(2, 27, 40, 56), (2, 27, 20, 28), (2, 27, 10, 14), (2, 27, 5, 7)]
    h = ext.features(x, torch.rand(33, 2))
    assert h.shape == (2, 33, 111)
    small = FE.PatchExtractor(levels=2, kernel_size=3, luma=8, chroma=2)
    assert small.channels == 3 + 2 * (3 + 8 + 4)
    with pytest.raises(ValueError):
        FE.PatchExtractor(kernel_size=3, luma=9)  # at most 8 zero-mean 3x3 filters


def test_patches_deterministic():
    x = natural_ish(32)
    pos = torch.rand(50, 2, generator=torch.Generator().manual_seed(3))
    a = FE.PatchExtractor(seed=7).features(x, pos)
    b = FE.PatchExtractor(seed=7).features(x, pos)
    c = FE.PatchExtractor(seed=8).features(x, pos)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # colour part: local (Y - 0.5, U, V) at level 0 at texel centres
    ext = FE.PatchExtractor()
    ii, jj = torch.tensor([4, 20]), torch.tensor([7, 30])
    p = torch.stack([(jj + 0.5) / 32, (ii + 0.5) / 32], dim=1)
    h = ext.features(x, p)
    rgb = x[0, :, ii, jj].t()
    y = rgb @ torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close(h[0, :, 3], y - 0.5, rtol=0, atol=1e-6)
    # filters are zero-mean: a flat image has no texture response
    flat = ext.forward(torch.full((1, 3, 16, 16), 0.3))
    assert all(m[:, 3:].abs().max() < 1e-6 for m in flat[1:])


def test_patches_gradcheck():
    ext = FE.PatchExtractor(levels=2, kernel_size=3, luma=4, chroma=1)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([[0.3, 0.4], [0.71, 0.22], [0.5, 0.9]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda im: ext.features(im, pos), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_patches_gradient_nonzero_and_texture_sensitive():
    ext = FE.PatchExtractor()
    x = natural_ish(64).requires_grad_(True)
    h = ext.features(x, torch.rand(128, 2))
    h.square().sum().backward()
    assert x.grad.abs().sum() > 0
    # level-0 texture channels separate a smooth image from a noisy one of the same colour
    smooth = F.interpolate(torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1)), size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    noisy = (smooth + 0.1 * torch.randn(smooth.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    pos = torch.rand(64, 2)
    ts = ext.features(smooth, pos)[0, :, 6:22].norm(dim=1).mean()
    tn = ext.features(noisy, pos)[0, :, 6:22].norm(dim=1).mean()
    assert tn > 1.5 * ts


# ------------------------------------------------------------------------------------------------
# sanity of the real network
# ------------------------------------------------------------------------------------------------


@needs_caffe
@needs_face
def test_caffe_vgg16_separates_photo_from_noise(caffe_sd):
    """ImageNet-trained features: a face photo and uniform noise give very different deep features,
    a photo and the same photo with slight noise nearly the same; random weights fail the first."""
    x = load_face(128)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(x.shape, generator=g)
    noisy = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ii, jj = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    pos = torch.stack([(jj.flatten() + 0.5) / 8, (ii.flatten() + 0.5) / 8], dim=1)

    def stats(ext):
        with torch.no_grad():
            mp, mn, mq = ext.forward(x), ext.forward(noise), ext.forward(noisy)
        hp, hn, hq = ext.sample(mp, pos), ext.sample(mn, pos), ext.sample(mq, pos)
        per_pos_noise = F.cosine_similarity(hp, hn, dim=-1).mean()
        per_pos_noisy = F.cosine_similarity(hp, hq, dim=-1).mean()
        deep = F.cosine_similarity(mp[-1].mean((2, 3)), mn[-1].mean((2, 3)), dim=-1).item()
        return per_pos_noise, per_pos_noisy, deep

    noise_cos, noisy_cos, deep_cos = stats(FE.VGG16Extractor(caffe_sd, "caffe"))
    assert noise_cos < 0.5 and deep_cos < 0.3
    assert noisy_cos > 0.9
    rnd_noise_cos, _, rnd_deep = stats(FE.VGG16Extractor(random_vgg_state_dict(), "caffe"))
    assert rnd_noise_cos > noise_cos + 0.2 and rnd_deep > 0.8
