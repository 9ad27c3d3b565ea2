import numpy as np
import pytest
from PIL import Image

from facerefiner.errors import InputError, OutputError
from facerefiner.io import atomic_dir, ensure_writable_dir, load_image, load_mask, load_png_float, save_png, save_png16


def _grad(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1"])
def test_modes_give_rgb_uint8(tmp_path, mode):
    img = Image.fromarray(_grad()).convert(mode) if mode not in ("L", "I;16", "I", "F") else None
    if mode == "L":
        img = Image.fromarray(_grad()[..., 0])
    elif mode == "I;16":
        img = Image.fromarray(_grad()[..., 0].astype(np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(_grad()[..., 0].astype(np.int32) * 257)
    elif mode == "F":
        img = Image.fromarray(_grad()[..., 0].astype(np.float32) / 255.0)
    ext = {"CMYK": ".jpg", "F": ".tif", "I": ".tif"}.get(mode, ".png")
    p = tmp_path / f"x{ext}"
    img.save(p)
    a = load_image(p)
    assert a.dtype == np.uint8 and a.shape == (40, 60, 3)
    if mode in ("L", "I;16", "I", "F"):
        # grey levels survive the conversion (16-bit scaled down to 8-bit)
        np.testing.assert_allclose(a[..., 0].astype(int), _grad()[..., 0].astype(int), atol=1)


def test_rgba_composited_over_white(tmp_path):
    a = np.zeros((20, 20, 4), np.uint8)
    a[..., 0] = 200
    a[:, :10, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert tuple(out[5, 2]) == (200, 0, 0)
    assert tuple(out[5, 15]) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path):
    g = _grad(30, 50)
    img = Image.fromarray(g)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (50, 30, 3)


@pytest.mark.parametrize("name", ["with space.png", "ünïcödé 顔.png"])
def test_odd_paths(tmp_path, name):
    Image.fromarray(_grad()).save(tmp_path / name)
    assert load_image(tmp_path / name).shape == (40, 60, 3)


def test_missing_corrupt_truncated_tiny_text(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "text.jpg").write_text("this is not a photo\n")
    with pytest.raises(InputError, match="text.jpg: not an image"):
        load_image(tmp_path / "text.jpg")
    Image.fromarray(_grad(200, 200)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.jpg: corrupt or truncated"):
        load_image(tmp_path / "trunc.jpg")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(InputError, match="garbage.png"):
        load_image(tmp_path / "garbage.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    with pytest.raises(InputError, match="too small"):
        load_image(tmp_path / "one.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "v.jpg").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # an MP4 renamed .jpg
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "v.jpg")
    assert "\n" not in str(e.value) and "v.jpg" in str(e.value)


def test_mask_must_match_photo(tmp_path):
    Image.fromarray(np.full((40, 60), 255, np.uint8)).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png", (60, 40)).all()
    with pytest.raises(InputError, match="must match"):
        load_mask(tmp_path / "m.png", (61, 40))


def test_atomic_dir(tmp_path):
    dest = tmp_path / "face"
    with atomic_dir(dest) as t:
        (t / "a.txt").write_text("1")
        assert not dest.exists()
    assert (dest / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as t:
            (t / "a.txt").write_text("2")
            raise RuntimeError("boom")
    assert (dest / "a.txt").read_text() == "1"  # old result intact
    assert [p.name for p in tmp_path.iterdir()] == ["face"]  # no leftovers
    with atomic_dir(dest) as t:
        (t / "b.txt").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]


def test_unwritable_output(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        ensure_writable_dir(tmp_path / "file" / "out")


def test_png16_round_trip_keeps_16_bits(tmp_path):
    """save_png16 then load_png_float: every value within half a 16-bit step (an 8-bit PNG would be
    off by up to half an 8-bit step, 257 times more), channels in RGB order."""
    rng = np.random.default_rng(0)
    a = rng.random((17, 23, 3))
    a[0, 0] = (1.0, 0.0, 0.5)
    save_png16(tmp_path / "a.png", a)
    b = load_png_float(tmp_path / "a.png")
    assert b.shape == (17, 23, 3) and b.dtype == np.float32
    assert np.abs(b - a).max() <= 0.5 / 65535 + 1e-7
    assert tuple(np.round(b[0, 0], 4)) == (1.0, 0.0, 0.5)
    # a (3, H, W) tensor as refine passes it
    import torch

    save_png16(tmp_path / "t.png", torch.from_numpy(a).permute(2, 0, 1).float())
    assert np.abs(load_png_float(tmp_path / "t.png") - a).max() <= 0.5 / 65535 + 1e-6


def test_load_png_float_reads_8_bit_grey_and_rgba_and_refuses_junk(tmp_path):
    rgb = np.array([[[255, 0, 51]]], np.uint8)
    save_png(tmp_path / "rgb.png", rgb)
    assert np.allclose(load_png_float(tmp_path / "rgb.png")[0, 0], (1.0, 0.0, 0.2))
    Image.fromarray(np.array([[128]], np.uint8)).save(tmp_path / "grey.png")
    assert np.allclose(load_png_float(tmp_path / "grey.png")[0, 0], 128 / 255)
    Image.fromarray(np.array([[[10, 20, 30, 0]]], np.uint8), "RGBA").save(tmp_path / "rgba.png")
    assert np.allclose(load_png_float(tmp_path / "rgba.png")[0, 0], np.array([10, 20, 30]) / 255)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="junk.png"):
        load_png_float(tmp_path / "junk.png")
    with pytest.raises(InputError, match="missing.png"):
        load_png_float(tmp_path / "missing.png")
