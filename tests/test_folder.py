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
