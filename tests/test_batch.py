"""Batches (facerefiner.batch and the verbs' shared batch handling): summary files, resume,
--overwrite, Ctrl-C, bad files. Real photos from ../shared (skipped when absent), ``unwrap`` at 64 px."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import FACES, need

from facerefiner import batch as B
from facerefiner.cli.main import app
from facerefiner.errors import InputError
from facerefiner.io import atomic_dir
from facerefiner.pipeline import FaceOutput, PhotoResult

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def by_name(s: dict) -> dict[str, dict]:
    return {Path(p["photo"]).name: p for p in s["photos"]}


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith(".")]


def write_video(path: Path) -> None:
    """A small MP4 (OpenCV's mp4v writer; a bare MP4 header when that codec is missing)."""
    import cv2

    tmp = path.with_name("clip.mp4")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for i in range(5):
        w.write(np.full((64, 64, 3), 40 * i, np.uint8))
    w.release()
    if tmp.is_file() and tmp.stat().st_size > 0:
        tmp.replace(path)
    else:
        path.write_bytes(b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41" + b"\x00\x00\x00\x08free" * 8)


def bad_files(d: Path) -> dict[str, str]:
    """Bad inputs in ``d`` -> the reason each must fail with."""
    (d / "text.jpg").write_text("not a photo")
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:300])
    (d / "full.jpg").unlink()
    write_video(d / "video.png")
    (d / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))  # not in IMAGE_SUFFIXES
    return {"text.jpg": "not an image", "empty.jpg": "not an image", "truncated.jpg": "corrupt or truncated",
            "video.png": "not an image", "photo.heic": "not an image"}


# --- the CLI, end to end --------------------------------------------------------------------------

def test_summary_lists_every_photo_and_each_bad_file_fails_in_one_line(tmp_path, ffhq_photo):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(ffhq_photo, d / "good.png")
    reasons = bad_files(d)
    out = tmp_path / "out"
    # the folder (its image files) and the .heic named explicitly (a folder's other files are not photos)
    r = run("unwrap", d, d / "photo.heic", "-o", out, "--size", 64)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    s = summary(out)
    assert s["command"] == "unwrap" and s["interrupted"] is False
    assert s["counts"] == {"done": 1, "skipped": 0, "failed": 5, "not run": 0}
    rows = by_name(s)
    assert set(rows) == {"good.png", *reasons}
    good = rows["good.png"]
    assert good["status"] == "done" and good["faces"] == 1 and good["folders"] == ["good"] and good["error"] is None
    assert good["seconds"] > 0
    failed_lines = [ln for ln in r.output.splitlines() if ln.startswith("failed")]
    for name, reason in reasons.items():
        assert rows[name]["status"] == "failed" and rows[name]["faces"] == 0 and rows[name]["folders"] == []
        assert name in rows[name]["error"] and reason in rows[name]["error"], rows[name]
        assert sum(name in ln for ln in failed_lines) == 1, (name, r.output)  # one line each as it happens
    assert len(failed_lines) == 5
    # printed again at the end with the counts
    assert "1 done (1 face), 0 skipped, 5 failed of 6 photos" in r.output
    tail = r.output[r.output.index("failures:"):]
    assert all(name in tail for name in reasons)
    # summary.csv: the same rows
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["photo", "status", "faces", "folders", "seconds", "error"]
    assert [(Path(t["photo"]).name, t["status"], int(t["faces"]), t["folders"], t["error"]) for t in table] == \
           [(Path(p["photo"]).name, p["status"], p["faces"], ";".join(p["folders"]), p["error"] or "")
            for p in s["photos"]]
    assert sorted(p.name for p in out.iterdir()) == ["good", "index.html", "summary.csv", "summary.json"]


def test_rerun_skips_finished_photos_and_overwrite_redoes_them(tmp_path, ffhq_photo):
    out = tmp_path / "out"
    assert run("unwrap", ffhq_photo, "-o", out, "--size", 64).exit_code == 0
    tex = out / "ffhq_00128" / "texture.png"
    t0, ino0 = tex.stat().st_mtime_ns, (out / "ffhq_00128").stat().st_ino

    r = run("unwrap", ffhq_photo, "-o", out, "--size", 64)
    assert r.exit_code == 0, r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("skipped")] == \
           [f"skipped {ffhq_photo}: ffhq_00128 already done (--overwrite redoes it)"]
    assert "0 done (0 faces), 1 skipped, 0 failed" in r.output
    s = summary(out)
    assert s["counts"]["skipped"] == 1 and s["photos"][0]["status"] == "skipped"
    assert s["photos"][0]["folders"] == ["ffhq_00128"] and s["photos"][0]["faces"] == 1
    assert tex.stat().st_mtime_ns == t0  # not rewritten

    r = run("unwrap", ffhq_photo, "-o", out, "--size", 64, "--overwrite")
    assert r.exit_code == 0, r.output
    assert summary(out)["photos"][0]["status"] == "done" and summary(out)["overwrite"] is True
    assert tex.stat().st_mtime_ns != t0 and (out / "ffhq_00128").stat().st_ino != ino0  # a new folder
    assert leftovers(out) == []  # the replaced folder is gone, no temporary folders


def test_all_faces_photo_is_finished_only_with_all_its_folders(tmp_path):
    photo = need(FACES / "3ddfa_two_faces.jpg")
    out = tmp_path / "out"
    names = ["3ddfa_two_faces_face0", "3ddfa_two_faces_face1"]
    assert run("unwrap", photo, "-o", out, "--all-faces", "--size", 64).exit_code == 0
    assert json.loads((out / names[0] / "report.json").read_text())["photo_faces"] == 2
    r = run("unwrap", photo, "-o", out, "--all-faces", "--size", 64)
    assert by_name(summary(out))[photo.name]["status"] == "skipped"
    assert by_name(summary(out))[photo.name]["folders"] == names
    # as if a Ctrl-C had come between the two faces: the photo is redone
    shutil.rmtree(out / names[1])
    r = run("unwrap", photo, "-o", out, "--all-faces", "--size", 64)
    assert r.exit_code == 0, r.output
    row = by_name(summary(out))[photo.name]
    assert row["status"] == "done" and row["folders"] == names
    assert all((out / n / "report.json").is_file() for n in names) and leftovers(out) == []


def test_ctrl_c_keeps_finished_photos_and_writes_the_summary(tmp_path, ffhq_photo, monkeypatch, capsys):
    import facerefiner.pipeline as P
    from facerefiner.cli.main import main

    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(ffhq_photo, d / name)
    real = P.write_face_folder

    def ctrl_c_on_b(folder, path, *args, **kw):
        if Path(path).stem == "b":
            (folder / "texture.png").write_bytes(b"half written")
            raise KeyboardInterrupt
        return real(folder, path, *args, **kw)

    monkeypatch.setattr(P, "write_face_folder", ctrl_c_on_b)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["facerefiner", "unwrap", str(d), "-o", str(out), "--size", "64"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if "interrupted" == ln.strip()] == ["interrupted"], err
    assert "Traceback" not in err
    s = summary(out)
    assert s["interrupted"] is True
    assert s["counts"] == {"done": 1, "skipped": 0, "failed": 0, "not run": 2}
    assert [(Path(p["photo"]).name, p["status"]) for p in s["photos"]] == \
           [("a.png", "done"), ("b.png", "not run"), ("c.png", "not run")]
    assert s["photos"][1]["error"] == "interrupted during write"
    assert sorted(p.name for p in out.iterdir()) == ["a", "index.html", "summary.csv", "summary.json"]
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["done", "not run", "not run"]
    # the next run resumes: a is skipped, b and c are done
    monkeypatch.setattr(P, "write_face_folder", real)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0
    assert [p["status"] for p in summary(out)["photos"]] == ["skipped", "done", "done"]


def test_refine_skips_refined_folders_and_records_failures(tmp_path, ffhq_photo):
    """The refine verb goes through the same batch code (no optimisation runs here: the one good
    photo is already done, the other input is not a photo)."""
    out = tmp_path / "out"
    assert run("unwrap", ffhq_photo, "-o", out, "--size", 64).exit_code == 0
    rep_path = out / "ffhq_00128" / "report.json"
    rep = json.loads(rep_path.read_text())
    rep["refine"] = {"features": "patches"}  # as if refine had made it
    rep_path.write_text(json.dumps(rep))
    (tmp_path / "text.jpg").write_text("not a photo")
    r = run("refine", ffhq_photo, tmp_path / "text.jpg", "-o", out, "--preset", "quick", "--features", "patches",
            "--size", 64)
    assert r.exit_code == 2, r.output
    s = summary(out)
    assert s["command"] == "refine"
    assert [(Path(p["photo"]).name, p["status"]) for p in s["photos"]] == [("ffhq_00128.png", "skipped"),
                                                                          ("text.jpg", "failed")]
    assert (out / "index.html").is_file()


# --- the library: finished_folders, run_batch ----------------------------------------------------

def fake_work(out: Path, boom: dict[str, BaseException] | None = None):
    """A per-photo function writing OUT/<stem>/report.json; raises ``boom[stem]`` when given."""
    calls: list[str] = []

    def work(photo: Path, stage) -> PhotoResult:
        calls.append(photo.name)
        stage("load")
        if boom and photo.stem in boom:
            raise boom[photo.stem]
        if photo.stem.startswith("bad"):
            return PhotoResult(path=photo, error=f"{photo}: not an image")
        stage("write")
        with atomic_dir(out / photo.stem) as tmp:
            (tmp / "report.json").write_text("{}")
        return PhotoResult(path=photo, faces=[FaceOutput(folder=out / photo.stem, geometry=None, unwrapped=None)])

    return work, calls


def test_run_batch_records_skips_and_goes_on_after_a_bug(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    photos = [Path(f"/x/{n}.jpg") for n in ("a", "bad", "bug", "c")]
    work, calls = fake_work(out, {"bug": TypeError("unsupported operand")})
    res = B.run_batch(photos + [photos[0]], out, work)  # a repeated photo is run once
    assert [(r.photo.name, r.status) for r in res.records] == [("a.jpg", "done"), ("bad.jpg", "failed"),
                                                               ("bug.jpg", "failed"), ("c.jpg", "done")]
    assert "unexpected error TypeError: unsupported operand" in res.records[2].error
    assert res.counts() == {"done": 2, "skipped": 0, "failed": 2, "not run": 0} and not res.interrupted
    work, calls = fake_work(out)
    res = B.run_batch(photos, out, work)
    assert calls == ["bad.jpg", "bug.jpg"]  # a and c skipped
    assert [r.status for r in res.records] == ["skipped", "failed", "done", "skipped"]
    res = B.run_batch(photos, out, work, overwrite=True)
    assert [r.status for r in res.records] == ["done", "failed", "done", "done"]


def test_run_batch_on_ctrl_c_lists_the_rest_as_not_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    photos = [Path(f"/x/{n}.jpg") for n in ("a", "b", "c")]
    work, calls = fake_work(out, {"b": KeyboardInterrupt()})
    res = B.run_batch(photos, out, work)
    assert res.interrupted and calls == ["a.jpg", "b.jpg"]
    assert [(r.status, r.error) for r in res.records] == [("done", None), ("not run", "interrupted during load"),
                                                          ("not run", "interrupted")]
    B.write_summary(out, res)
    assert summary(out)["counts"]["not run"] == 2


def test_finished_folders(tmp_path):
    out = tmp_path
    assert B.finished_folders(Path("p.jpg"), out) is None
    (out / "p").mkdir()
    assert B.finished_folders(Path("p.jpg"), out) is None  # no report.json: not a finished folder
    (out / "p" / "report.json").write_text(json.dumps({"input": "p.jpg"}))
    assert B.finished_folders(Path("/elsewhere/p.png"), out) == ["p"]
    assert B.finished_folders(Path("p.jpg"), out, command="refine") is None  # unwrap's, not refine's
    (out / "p" / "report.json").write_text(json.dumps({"refine": {}}))
    assert B.finished_folders(Path("p.jpg"), out, command="refine") == ["p"]
    assert B.finished_folders(Path("p.jpg"), out, all_faces=True) is None
    for i in range(2):
        (out / f"p_face{i}").mkdir()
        (out / f"p_face{i}" / "report.json").write_text(json.dumps({"photo_faces": 3}))
    assert B.finished_folders(Path("p.jpg"), out, all_faces=True) is None  # face2 missing
    (out / "p_face0" / "report.json").write_text(json.dumps({}))  # older report: what is there
    assert B.finished_folders(Path("p.jpg"), out, all_faces=True) == ["p_face0", "p_face1"]


def test_duplicate_stems_and_unique_photos(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    ps = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "sub" / ".." / "a.jpg"]
    assert B.unique_photos(ps) == ps[:3]
    assert B.duplicate_stems(B.unique_photos(ps)) == [[tmp_path / "a.jpg", tmp_path / "a.png"]]


def test_atomic_dir_replaces_and_cleans_up_on_ctrl_c(tmp_path):
    dest = tmp_path / "face"
    with atomic_dir(dest) as t:
        (t / "a.txt").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(dest) as t:
            (t / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (dest / "a.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["face"]
    with atomic_dir(dest) as t:
        (t / "b.txt").write_text("2")
    assert [p.name for p in dest.iterdir()] == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["face"]


def test_bad_files_raise_input_errors(tmp_path):
    from facerefiner.io import load_image

    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(InputError, match=reason):
            load_image(tmp_path / name)


def test_run_batch_pulls_the_photos_one_at_a_time_and_keeps_no_result(tmp_path):
    """The photos are an iterable pulled as the batch goes (a photo is not pulled before the one
    ahead of it is done); a photo's PhotoResult (textures, geometry) is not kept once its record
    is made; the summary written row by row reads back as the batch's own."""
    import gc
    import weakref

    out = tmp_path / "out"
    out.mkdir()
    pulled: list[str] = []

    def photos():
        for n in ("a", "b", "c", "d"):
            pulled.append(n)
            yield Path(f"/x/{n}.jpg")

    results: list = []
    ran_with: list[int] = []

    def work(photo: Path, stage) -> PhotoResult:
        ran_with.append(len(pulled))
        if photo.stem == "c":
            r = PhotoResult(path=photo, error=f'{photo}: not an image ("quoted", ü)', notes=["n1"])
        else:
            with atomic_dir(out / photo.stem) as tmp:
                (tmp / "report.json").write_text("{}")
            r = PhotoResult(path=photo, faces=[FaceOutput(folder=out / photo.stem, geometry=None, unwrapped=None)],
                            notes=[f"{photo.stem}: a notice"], faces_in_photo=2)
        results.append(weakref.ref(r))
        return r

    seen: list = []
    res = B.run_batch(photos(), out, work, on_record=seen.append)
    assert ran_with == [1, 2, 3, 4]  # lazily
    gc.collect()
    assert len(results) == 4 and all(w() is None for w in results)  # no result outlives its record
    assert not hasattr(res.records[0], "result") and not hasattr(res.records[0], "__dict__")  # slots: small
    a = res.records[0]
    assert (a.status, a.folders, a.faces_in_photo, a.notes) == ("done", ["a"], 2, ("a: a notice",))
    assert [r.status for r in res.records] == ["done", "done", "failed", "done"] and seen == res.records
    B.write_summary(out, res)
    assert summary(out) == res.to_json()
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        assert [row["error"] for row in csv.DictReader(f)][2] == res.records[2].error
    empty = B.BatchResult(out=out, records=[])
    B.write_summary(out, empty)
    assert summary(out)["photos"] == [] and summary(out)["counts"]["done"] == 0


def test_photo_source_lists_lazily_and_checks_the_inputs_first(tmp_path):
    from facerefiner.pipeline import PhotoSource, expand_inputs, photo_source

    d = tmp_path / "in"
    d.mkdir()
    for n in ("b.jpg", "a.PNG", "c.txt", "z.webp"):
        (d / n).write_bytes(b"not read")  # suffixes decide; nothing is opened
    (d / "sub.jpg").mkdir()  # a folder is not a photo
    one = tmp_path / "one.heic"
    one.write_bytes(b"")
    src = photo_source([d, one, str(tmp_path / "in" / "*.jpg")])
    assert isinstance(src, PhotoSource) and not isinstance(src, (list, tuple))
    it = iter(src)
    assert next(it) == d / "a.PNG"  # a generator: the first photo before the rest
    assert list(src) == [d / "a.PNG", d / "b.jpg", d / "z.webp", one, d / "b.jpg"]
    assert src.count() == 5 and src.first() == d / "a.PNG"
    (d / "y.jpg").write_bytes(b"")  # listed again by each pass
    assert src.count() == 7
    assert expand_inputs([d]) == [d / "a.PNG", d / "b.jpg", d / "y.jpg", d / "z.webp"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert photo_source([empty]).first() is None
    with pytest.raises(InputError, match="no such file or folder"):
        photo_source([d, tmp_path / "nope.jpg"])
    with pytest.raises(InputError, match="no file matches this pattern"):
        photo_source([str(tmp_path / "*.png")])


def test_unwrap_writes_the_thumbnail_with_the_face_folder(tmp_path, ffhq_photo):
    """The thumbnail is made by whoever writes the folder (here the local engine's unwrap, no
    gallery run), inside its temporary folder."""
    from facerefiner.pipeline import UnwrapConfig, unwrap_photo

    out = tmp_path / "out"
    res = B.run_batch([ffhq_photo], out, lambda p, stage: unwrap_photo(p, out, UnwrapConfig(size=64, occlusion="off")))
    assert [r.status for r in res.records] == ["done"]
    folder = out / "ffhq_00128"
    assert (folder / "thumb.jpg").is_file() and not (out / "index.html").exists()
    assert (folder / "thumb.jpg").stat().st_mtime_ns >= (folder / "render.png").stat().st_mtime_ns
    assert max(Image.open(folder / "thumb.jpg").size) <= 240


def test_two_photos_with_one_stem_are_warned_about_when_the_second_comes_up(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.jpg").write_text("not a photo")
    out = tmp_path / "out"
    r = run("unwrap", tmp_path / "x" / "same.jpg", tmp_path / "y" / "same.jpg", tmp_path / "x" / "same.jpg",
            "-o", out, "--size", 64)
    assert r.exit_code == 2, r.output
    warnings = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "both write" in warnings[0] and str(out / "same") in warnings[0], r.output
    assert [p["status"] for p in summary(out)["photos"]] == ["failed", "failed"]  # the repeat of x/same.jpg dropped
