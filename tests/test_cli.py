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
    assert names == ["camera.json", "mesh.glb", "mesh.mtl", "mesh.obj", "render.png", "report.json", "texture.png",
                     "thumb.jpg", "visibility.png"]
    # no temporary leftovers; the run's summary and gallery beside the face folder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ffhq_00128", "index.html", "summary.csv",
                                                                     "summary.json"]
    assert Image.open(folder / "texture.png").size == (256, 256)
    assert Image.open(folder / "render.png").size == (1024, 1024)
    rep = json.loads((folder / "report.json").read_text())
    assert set(rep["head_pose_deg"]) == {"yaw", "pitch", "roll"}
    assert {"load", "reconstruct", "unwrap", "render"} <= set(rep["timings_s"])
    assert rep["versions"]["mediapipe"] == "0.10.21"
    obj = (folder / "mesh.obj").read_text().splitlines()
    assert sum(ln.startswith("v ") for ln in obj) == 468 and sum(ln.startswith("vt ") for ln in obj) == 468
    assert "map_Kd texture.png" in (folder / "mesh.mtl").read_text()
    v = read_obj_vertices(folder / "mesh.obj")
    # y up, cm: the forehead (10) above the chin (152), a face 15-25 cm tall
    assert v[10, 1] > v[152, 1] and 12 < v[10, 1] - v[152, 1] < 25
    vt = np.array([list(map(float, ln.split()[1:3])) for ln in obj if ln.startswith("vt ")])
    assert vt[10, 1] > vt[152, 1]  # OBJ convention: v = 0 at the bottom row, forehead above the chin


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
    assert r.exit_code == 1 and "no photos" in r.output
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "out", "--size", 4)
    assert r.exit_code == 1 and "--size" in r.output
    r = run("unwrap", ffhq_photo, "-o", tmp_path / "out", "--mask", tmp_path / "nomask.png")
    assert r.exit_code == 1 and "--mask" in r.output


def test_console_script_reports_one_line_without_traceback(tmp_path):
    from pathlib import Path

    exe = Path(sys.executable).with_name("facerefiner")
    if not exe.exists():
        exe = shutil.which("facerefiner") or pytest.skip("the facerefiner console script is not installed")
    p = subprocess.run([str(exe), "unwrap", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "missing.jpg" in ln]
    assert len(lines) == 1 and "no such file" in lines[0]


def test_console_script_usage_errors_exit_1(tmp_path):
    from pathlib import Path

    exe = Path(sys.executable).with_name("facerefiner")
    if not exe.exists():
        exe = shutil.which("facerefiner") or pytest.skip("the facerefiner console script is not installed")
    p = subprocess.run([str(exe), "unwrap", "x.jpg", "--no-such-option"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "no-such-option" in p.stderr
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "facerefiner" in p.stdout
    p = subprocess.run([str(exe), "unwrap", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o"), "--size", "8"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "--size" in p.stderr
