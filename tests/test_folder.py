"""The output folder of one face (facerefiner.folder): finding, reading and writing report.json."""

from __future__ import annotations

import json

import pytest

from facerefiner.errors import InputError
from facerefiner.folder import FILES, REPORT, face_folders, is_face_folder, read_report, report_or_none, write_report


def test_face_folders_are_the_subfolders_with_a_report_hidden_ones_left_out(tmp_path):
    for name in ("b", "a", ".tmp-c", "empty"):
        (tmp_path / name).mkdir()
    for name in ("b", "a", ".tmp-c"):
        (tmp_path / name / REPORT).write_text("{}")
    (tmp_path / "file.txt").write_text("x")
    assert [p.name for p in face_folders(tmp_path)] == ["a", "b"]
    assert face_folders(tmp_path / "a") == [] and face_folders(tmp_path / "a", itself=True) == [tmp_path / "a"]
    assert face_folders(tmp_path / "missing") == []
    assert is_face_folder(tmp_path / "a") and not is_face_folder(tmp_path / "empty")


@pytest.mark.parametrize("content, reason", [(None, "no report.json"), ("{not json", "unreadable .JSONDecodeError"),
                                             ("[1, 2]", "not a JSON object")])
def test_read_report_names_the_file_and_the_reason(tmp_path, content, reason):
    f = tmp_path / "face"
    f.mkdir()
    if content is not None:
        (f / REPORT).write_text(content)
    with pytest.raises(InputError, match=reason) as e:
        read_report(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    assert report_or_none(f) is None
    with pytest.raises(InputError, match="no such folder"):
        read_report(tmp_path / "missing")


def test_write_report_round_trips_and_refuses_nan_leaving_the_old_one(tmp_path):
    write_report(tmp_path, {"head": "ict", "timings_s": {"load": 0.5}})
    assert read_report(tmp_path) == {"head": "ict", "timings_s": {"load": 0.5}}
    with pytest.raises(ValueError):
        write_report(tmp_path, {"psnr": float("nan")})
    assert json.loads((tmp_path / REPORT).read_text()) == {"head": "ict", "timings_s": {"load": 0.5}}
    assert not [p for p in tmp_path.iterdir() if p.name != REPORT]  # no temporary file left behind
    assert len(set(FILES)) == len(FILES) and REPORT in FILES


def test_face_report_reads_each_key_typed_and_treats_a_wrong_type_as_absent():
    from pathlib import Path

    from facerefiner.folder import FaceReport
    from facerefiner.heads import DEFAULT_HEAD

    d = {"input": "photos/me.jpg", "head": "ict", "uv_layout": "ict-facekit-2", "texture_size": 512,
         "export_size": 1024, "visible_fraction": 0.25, "cos_threshold": 0.4,
         "head_pose_deg": {"yaw": 10.0, "pitch": -2.0, "roll": 0.5}, "timings_s": {"load": 0.5, "refine": 40, "x": "?"},
         "faces_in_photo": 2, "photo_faces": 1, "occlusion": {"face_share": {"total": 0.031}},
         "refine": {"device": "cpu"}, "settings": {"mask": "m.png"}, "metrics": {"fidelity": {"psnr": 50.0}}}
    r = FaceReport(d)
    assert r.input == Path("photos/me.jpg") and r.head == "ict" and r.uv_layout == "ict-facekit-2"
    assert (r.texture_size, r.export_size, r.visible_fraction, r.cos_threshold) == (512, 1024, 0.25, 0.4)
    assert r.head_pose_deg["yaw"] == 10.0 and r.timings_s == {"load": 0.5, "refine": 40}
    assert (r.faces_in_photo, r.photo_faces, r.occlusion_share) == (2, 1, 0.031)
    assert r.refine == {"device": "cpu"} and r.mask == "m.png" and r.metrics["fidelity"]["psnr"] == 50.0
    # an older or hand-edited report: absent keys read as their defaults, wrong types as absent
    old = FaceReport({"texture_size": "512", "visible_fraction": True, "timings_s": [1, 2], "refine": "yes",
                      "occlusion": {"face_share": 0.5}, "input": ""})
    assert old.head == DEFAULT_HEAD and old.input is None and old.texture_size is None and old.visible_fraction is None
    assert old.timings_s == {} and old.refine is None and old.occlusion_share is None and old.mask is None
    assert FaceReport(None).data == {} and FaceReport(None).head_pose_deg == {}
