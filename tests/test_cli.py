"""``facerefiner unwrap`` end to end: output files, camera convention, bad input and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import FACES, need

from facerefiner.cli.main import app
from facerefiner.export import read_obj_vertices
from facerefiner.camera import Camera

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def project(folder):
    cam = Camera.from_json(json.loads((folder / "camera.json").read_text()))
    return cam.project(read_obj_vertices(folder / "mesh.obj"))[:, :2], cam


def test_unwrap_writes_a_complete_folder(tmp_path, ffhq_photo):
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "out", "--size", 256)
    assert r.exit_code == 0, r.output
    folder = tmp_path / "out" / "ffhq_00128"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["camera.json", "mesh.glb", "mesh.mtl", "mesh.obj", "occlusion.png", "render.png", "report.json",
                     "texture.png", "thumb.jpg", "visibility.png"]
    # no temporary leftovers; the run's summary and gallery beside the face folder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ffhq_00128", "index.html", "summary.csv",
                                                                     "summary.json"]
    assert Image.open(folder / "texture.png").size == (256, 256)
    assert Image.open(folder / "render.png").size == (1024, 1024)
    rep = json.loads((folder / "report.json").read_text())
    assert set(rep["head_pose_deg"]) == {"yaw", "pitch", "roll"}
    assert {"load", "reconstruct", "occlusion", "unwrap", "render"} <= set(rep["timings_s"])
    # the occlusion found by default: the photo's pixels, and what each source found
    occ = np.asarray(Image.open(folder / "occlusion.png"))
    assert occ.shape == (1024, 1024) and set(np.unique(occ)) <= {0, 255}
    assert rep["occlusion"]["mode"] == "auto"
    assert set(rep["occlusion"]["face_share"]) == {"hands", "background", "skin", "highlights", "total"}
    # a clean frontal photo (its curls at the cheek: 5 % of the face; the visible texels it costs
    # are measured in test_occlusion)
    assert rep["occlusion"]["face_share"]["total"] < 0.08
    assert rep["versions"]["mediapipe"] == "0.10.21"
    obj = (folder / "mesh.obj").read_text().splitlines()
    assert sum(ln.startswith("v ") for ln in obj) == 468 and sum(ln.startswith("vt ") for ln in obj) == 468
    assert "map_Kd texture.png" in (folder / "mesh.mtl").read_text()
    v = read_obj_vertices(folder / "mesh.obj")
    # y up, cm: the forehead (10) above the chin (152), a face 15-25 cm tall
    assert v[10, 1] > v[152, 1] and 12 < v[10, 1] - v[152, 1] < 25
    vt = np.array([list(map(float, ln.split()[1:3])) for ln in obj if ln.startswith("vt ")])
    assert vt[10, 1] > vt[152, 1]  # OBJ convention: v = 0 at the bottom row, forehead above the chin


def test_occlusion_off_and_bad_value(tmp_path, ffhq_photo):
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "bad", "--occlusion", "sometimes")
    assert r.exit_code == 1 and "--occlusion must be auto or off" in r.output and not (tmp_path / "bad").exists()
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "out", "--size", 128, "--occlusion", "off")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "out" / "ffhq_00128"
    assert not np.asarray(Image.open(folder / "occlusion.png")).any()
    assert json.loads((folder / "report.json").read_text())["occlusion"] == {"mode": "off"}


def test_camera_json_lands_on_landmarks_in_an_exif_rotated_photo(tmp_path, detector):
    src = need(FACES / "deca_exp_2.jpg")
    upright = np.asarray(Image.open(src).convert("RGB"))
    # Store the pixels rotated 90 degrees counter-clockwise with EXIF orientation 6 (display: rotate
    # 90 clockwise), so that the displayed photo is upright again.
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=98)
    r = run("unwrap", tmp_path / "rotated.jpg", "-o", tmp_path / "out", "--size", 128)
    assert r.exit_code == 0, r.output
    xy, cam = project(tmp_path / "out" / "rotated")
    # Independent reference: the stored pixels turned upright by hand, then MediaPipe's landmarks.
    raw = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB"))  # Pillow ignores EXIF here
    shown = np.ascontiguousarray(np.rot90(raw, -1))
    assert cam.image_size == (shown.shape[1], shown.shape[0]) == (upright.shape[1], upright.shape[0])
    lm = detector.detect(shown)[0][:468, :2]
    err = np.linalg.norm(xy - lm, axis=1)
    assert err.max() < 1.0, err.max()


def test_all_faces_and_largest_face(tmp_path):
    photo = need(FACES / "3ddfa_two_faces.jpg")
    r = run("unwrap", photo, "-o", tmp_path / "all", "--all-faces", "--size", 128)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if p.is_dir()) == ["3ddfa_two_faces_face0",
                                                                                  "3ddfa_two_faces_face1"]
    r = run("unwrap", photo, "-o", tmp_path / "one", "--size", 128)
    assert sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir()) == ["3ddfa_two_faces"]
    a = json.loads((tmp_path / "all" / "3ddfa_two_faces_face0" / "report.json").read_text())["face_box"]
    b = json.loads((tmp_path / "all" / "3ddfa_two_faces_face1" / "report.json").read_text())["face_box"]
    assert (a[2] - a[0]) * (a[3] - a[1]) >= (b[2] - b[0]) * (b[3] - b[1])  # largest first


def test_bad_photos_do_not_stop_the_batch(tmp_path, ffhq_photo):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(ffhq_photo, d / "good photo ü顔.png")  # spaces and non-ASCII characters
    y, x = np.mgrid[0:200, 0:300]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(d / "noface.png")
    (d / "text.jpg").write_text("not a photo")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:300])
    Image.new("RGB", (1, 1)).save(d / "tiny.png")
    (d / "full.jpg").unlink()
    r = run("unwrap", d, "-o", tmp_path / "out", "--size", 128)
    assert r.exit_code == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["good photo ü顔"]
    failed = [ln for ln in r.output.splitlines() if ln.startswith("failed")]
    assert len(failed) == 4, r.output
    for name, reason in [("noface.png", "no face"), ("text.jpg", "not an image"),
                         ("truncated.jpg", "corrupt or truncated"), ("tiny.png", "too small")]:
        assert any(name in ln and reason in ln for ln in failed), (name, r.output)
    assert "Traceback" not in r.output


def test_usage_errors(tmp_path, ffhq_photo):
    (tmp_path / "file").write_text("x")
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "file" / "out")
    assert r.exit_code == 1 and "not writable" in r.output
    r = run("unwrap", tmp_path / "nothing*.jpg", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "no file matches" in r.output
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "out", "--size", 4)
    assert r.exit_code == 1 and "--size" in r.output
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "out", "--mask", tmp_path / "nomask.png")
    assert r.exit_code == 1 and "--mask" in r.output


def _exe():
    from pathlib import Path

    exe = Path(sys.executable).with_name("facerefiner")
    if not exe.exists():
        exe = shutil.which("facerefiner") or pytest.skip("the facerefiner console script is not installed")
    return str(exe)


def test_console_script_reports_one_line_without_traceback(tmp_path):
    p = subprocess.run([_exe(), "unwrap", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1  # a path that does not exist is a usage error, not a failed photo
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "missing.jpg" in ln]
    assert len(lines) == 1 and "no such file" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["unwrap", "{missing}", "-o", "{out}"],                     # no such photo
    ["unwrap", "{photo}", "{missing}", "-o", "{out}"],          # one of several
    ["unwrap", "{tmp}/nothing*.jpg", "-o", "{out}"],            # a pattern matching nothing
    ["unwrap", "{photo}", "-o", "{out}", "--size", "8"],        # a bad value
    ["unwrap", "{photo}", "-o", "{out}", "--mask", "{missing}"],
    ["refine", "{photo}", "-o", "{out}", "--preset", "fast"],
    ["refine", "{photo}", "-o", "{out}", "--content", "{missing}"],
    ["refine", "{photo}", "-o", "{out}", "--features", "patches", "--device", "cuda"],
    ["refine", "{photo}", "-o", "{out}", "--features", "vgg16", "--vgg-weights", "{missing}"],
])
def test_usage_errors_write_nothing(tmp_path, args):
    """A usage error (bad flag or value, no such path, no GPU for --device cuda) exits 1 with one
    line and leaves no OUT folder behind (not even an empty one or its summary files)."""
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is not an error here")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    subs = {"missing": str(tmp_path / "missing.jpg"), "out": str(tmp_path / "out" / "nested"), "photo": str(photo),
            "tmp": str(tmp_path)}
    r = run(*[a.format(**subs) for a in args])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.output.strip().count("\n") <= 1, r.output
    assert not (tmp_path / "out").exists(), list((tmp_path / "out").rglob("*"))


def test_memory_refusal_names_the_flag_and_writes_nothing(tmp_path, monkeypatch):
    """A size whose estimated peak memory exceeds what is available is refused before anything is
    written, with the flag, both amounts and a size that fits; FACEREFINER_MEMORY_CHECK=off skips
    the check."""
    from facerefiner import resources

    monkeypatch.setattr(resources, "available_memory_mb", lambda: 3000.0)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    need_4096 = resources.refine_memory_mb(__import__("facerefiner.refine", fromlist=["x"]).preset("default", size=4096))
    assert need_4096 > 0.9 * 3000.0  # (the measured table says a 4096 refinement needs more than 3 GB)
    r = run("refine", photo, "-o", tmp_path / "out", "--size", 4096, "--features", "patches")
    assert r.exit_code == 1
    line = r.output.strip()
    assert "--size 4096" in line and "18.3 GB" in line and "use --size 1024 or less" in line and "\n" not in line, line
    assert not (tmp_path / "out").exists()
    r = run("unwrap", photo, "-o", tmp_path / "out", "--size", 8192)
    assert r.exit_code == 1 and "--size 8192" in r.output and not (tmp_path / "out").exists(), r.output
    monkeypatch.setenv(resources.CHECK_ENV, "off")
    r = run("unwrap", photo, "-o", tmp_path / "out", "--size", 8192)
    assert r.exit_code == 2 and "no face" in r.output  # it ran (and found no face in a grey square)


def test_two_faces_says_one_of_two(tmp_path):
    """Only the largest face is processed without --all-faces, and the console line and report.json
    say so."""
    photo = need(FACES / "3ddfa_two_faces.jpg")
    r = run("unwrap", photo, "-o", tmp_path / "one", "--size", 64)
    assert r.exit_code == 0, r.output
    ok = [ln for ln in r.output.splitlines() if ln.startswith("ok ")]
    assert len(ok) == 1 and "1 of 2 faces (use --all-faces for every face)" in ok[0], r.output
    rep = json.loads((tmp_path / "one" / "3ddfa_two_faces" / "report.json").read_text())
    assert rep["faces_in_photo"] == 2 and rep["photo_faces"] == 1
    r = run("unwrap", photo, "-o", tmp_path / "all", "--size", 64, "--all-faces")
    assert "of 2 faces" not in r.output
    rep = json.loads((tmp_path / "all" / "3ddfa_two_faces_face1" / "report.json").read_text())
    assert rep["faces_in_photo"] == 2 and rep["photo_faces"] == 2


def test_no_native_log_noise_on_stderr_without_verbose(tmp_path, ffhq_photo):
    """MediaPipe's C++ lines (TensorFlow Lite's delegate notice, absl's W0000 warnings) stay off the
    console; with -v they are let through."""
    p = subprocess.run([_exe(), "unwrap", str(ffhq_photo), "-o", str(tmp_path / "out"), "--size", "64"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert not any(w in p.stderr for w in ("TensorFlow Lite", "W0000", "absl", "inference_feedback")), p.stderr
    assert lines[0].startswith("ok ") and len(lines) == 3, lines  # ok, the counts, the files written
    p = subprocess.run([_exe(), "-v", "unwrap", str(ffhq_photo), "-o", str(tmp_path / "out2"), "--size", "64"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "TensorFlow Lite" in p.stderr


@pytest.mark.parametrize("verb", ["unwrap", "refine", "eval", "serve"])
def test_help_paragraphs_are_not_broken(verb):
    """Each paragraph of a verb's help is rendered as one flowing text: at a wide terminal it is one
    line (a line break inside a docstring paragraph used to show as a broken wrap, "OUT/summary.json,"
    then "OUT/summary.csv" on the next line)."""
    import inspect

    from typer.main import get_command

    cmd = get_command(app).commands[verb]
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(cmd.callback.__doc__).split("\n\n")]
    r = CliRunner(env={"COLUMNS": "400"}).invoke(app, [verb, "--help"], catch_exceptions=False)
    shown = [" ".join(ln.split()) for ln in r.output.splitlines()]
    for para in paragraphs:
        assert para in shown, (para, r.output)


def test_console_script_usage_errors_exit_1(tmp_path):
    exe = _exe()
    p = subprocess.run([str(exe), "unwrap", "x.jpg", "--no-such-option"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "no-such-option" in p.stderr
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "facerefiner" in p.stdout
    p = subprocess.run([str(exe), "unwrap", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o"), "--size", "8"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "--size" in p.stderr


def test_an_all_covering_mask_is_a_one_line_user_error(tmp_path, ffhq_photo):
    """A mask that hides the whole face leaves nothing to complete from: the photo fails with one line
    naming the mask file and the reason (not "unexpected error ValueError"), and a batch goes on."""
    mask = tmp_path / "all.png"
    Image.fromarray(np.full((1024, 1024), 255, np.uint8)).save(mask)
    r = run("refine", ffhq_photo, "-o", tmp_path / "out", "--preset", "quick", "--features", "patches",
            "--mask", mask)
    assert r.exit_code == 2, r.output
    failed = [ln for ln in r.output.splitlines() if ln.startswith("failed")]
    assert len(failed) == 1 and str(mask) in failed[0] and "no texel of the face is visible" in failed[0], r.output
    assert "unexpected" not in r.output and "ValueError" not in r.output and "Traceback" not in r.output


def test_refine_says_hidden_features_need_a_prior_and_uses_one(tmp_path, ffhq_photo):
    """Both eyes under a sunglasses mask: without a prior the run says they were filled as skin; a
    prior built with `facerefiner prior build` gives them structure, and leaves out the photo itself."""
    from facerefiner.io import load_image
    from facerefiner.metrics import probe_mask
    from facerefiner.reconstruct import reconstruct

    rgb = load_image(ffhq_photo)
    mask = tmp_path / "sunglasses.png"
    Image.fromarray(probe_mask(reconstruct(rgb), "sunglasses").astype(np.uint8) * 255).save(mask)
    common = ["--preset", "quick", "--features", "patches", "--mask", mask]
    r = run("refine", ffhq_photo, "-o", tmp_path / "plain", *common)
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.output.splitlines() if ln.startswith("notice:")]
    assert len(notes) == 1 and "without a prior" in notes[0] and "--prior" in notes[0], r.output
    syn = json.loads((tmp_path / "plain" / "ffhq_00128" / "report.json").read_text())["synthesis"]
    assert syn["detail"] is True and syn["hidden_features"]["LEFT_EYE"] > 0.5 and "prior" not in syn
    others = [need(FACES / "deca_exp_1.jpg"), need(FACES / "deca_vox_id04657.jpg")]
    r = run("prior", "build", *others, ffhq_photo, "-o", tmp_path / "prior.npz", "--size", 64)
    assert r.exit_code == 0 and "3 faces" in r.output, r.output
    r = run("refine", ffhq_photo, "-o", tmp_path / "with", *common, "--prior", tmp_path / "prior.npz")
    assert r.exit_code == 0 and "notice:" not in r.output, r.output
    syn = json.loads((tmp_path / "with" / "ffhq_00128" / "report.json").read_text())["synthesis"]
    assert syn["prior"]["excluded"] == 1 and len(syn["prior"]["entries"]) == 2
    assert "ffhq_00128.png" not in {e["source"] for e in syn["prior"]["entries"]}
    r = run("refine", ffhq_photo, "-o", tmp_path / "bad", *common, "--prior", tmp_path / "sunglasses.png")
    assert r.exit_code == 1 and "not a facerefiner prior" in r.output and not (tmp_path / "bad").exists()
