"""OUT/index.html (facerefiner.gallery): every face folder, relative links that resolve, escaped
names, metrics from report.json, the last run's failures, thumbnails."""

from __future__ import annotations

import html
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from facerefiner.cli.main import app
from facerefiner.gallery import THUMB_BOX, face_folders, write_index

runner = CliRunner()

VOID = {"img", "meta", "br", "link", "hr", "input"}


class Page(HTMLParser):
    """Collects href/src values and checks that elements nest properly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src"):
                self.refs.append(v)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(out: Path) -> Page:
    p = Page()
    p.feed((out / "index.html").read_text(encoding="utf-8"))
    p.close()
    assert p.errors == [] and p.stack == [], (p.errors, p.stack)
    return p


def assert_links_resolve(out: Path, page: Page) -> None:
    assert page.refs
    for ref in page.refs:
        u = urlsplit(ref)
        assert not u.scheme and not u.netloc and not ref.startswith("/"), ref  # relative, no server
        assert (out / unquote(u.path)).is_file(), ref


def test_index_from_the_cli_links_every_face_and_lists_failures(tmp_path, ffhq_photo):
    d = tmp_path / "in"
    d.mkdir()
    odd = 'a&b <x> "q" #1 ü'
    shutil.copy(ffhq_photo, d / f"{odd}.png")
    (d / "text.jpg").write_text("not a photo")
    out = tmp_path / "out"
    r = runner.invoke(app, ["unwrap", str(d), "-o", str(out), "--size", "64"], catch_exceptions=False)
    assert r.exit_code == 2, r.output
    src = (out / "index.html").read_text(encoding="utf-8")
    assert html.escape(odd) in src and odd not in src  # escaped, never raw
    page = parse(out)
    assert_links_resolve(out, page)
    text = "".join(page.text)
    assert odd in text and "text.jpg" in text and "not an image" in text
    for f in ("texture.png", "mesh.glb", "mesh.obj", "report.json"):
        assert any(unquote(ref) == f"{odd}/{f}" for ref in page.refs), f
    thumb = out / odd / "thumb.jpg"
    assert any(unquote(ref) == f"{odd}/thumb.jpg" for ref in page.refs)
    assert thumb.stat().st_size < 100_000 and max(Image.open(thumb).size) <= max(THUMB_BOX)
    assert "<script" not in src and "http://" not in src and "https://" not in src

    # A later run into the same OUT: the page covers the earlier run's folder too.
    r = runner.invoke(app, ["unwrap", str(ffhq_photo), "-o", str(out), "--size", "64"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    page = parse(out)
    assert_links_resolve(out, page)
    text = "".join(page.text)
    assert odd in text and "ffhq_00128" in text and "text.jpg" not in text  # failures: the last run's only


def face(folder: Path, report, views: bool = True) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    if views:
        Image.fromarray(rng.integers(0, 255, (256, 2304, 3), dtype=np.uint8)).save(folder / "views.png")
    Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(folder / "render.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "texture.png")
    (folder / "report.json").write_text(report if isinstance(report, str) else json.dumps(report))


def test_index_shows_metrics_skips_temporary_folders_and_survives_bad_reports(tmp_path):
    out = tmp_path
    metrics = {"fidelity": {"psnr": 31.234, "ssim": 0.9}, "identity": {"render": 0.41, "turned": {"+30": 0.5}},
               "completion": {"skipped": "made without --mask"}, "seam": {"ratio": 2.0, "local_ratio": 1.2}}
    face(out / "refined", {"texture_size": 64, "metrics": metrics,
                            "refine": {"features": {"extractor": "patches", "channels": 111}, "device": "cpu"}})
    face(out / "broken", "{not json", views=False)
    face(out / ".refined.x1.partial", {})  # a temporary folder
    (out / "nothing").mkdir()  # not a face folder
    (out / "summary.json").write_text(json.dumps({
        "command": "refine", "counts": {"done": 1, "failed": 1, "not run": 1}, "photos": [
            {"photo": "/p/refined.jpg", "status": "done", "error": None},
            {"photo": "/p/x<y>.jpg", "status": "failed", "error": "/p/x<y>.jpg: no face found"},
            {"photo": "/p/z.jpg", "status": "not run", "error": "interrupted"}]}))
    assert [p.name for p in face_folders(out)] == ["broken", "refined"]
    write_index(out)
    page = parse(out)
    assert_links_resolve(out, page)
    text = "".join(page.text)
    for v in ("31.23", "0.9000", "0.410", "0.500", "1.200"):
        assert v in text, v
    assert "x<y>.jpg" in text and "no face found" in text and "z.jpg" in text
    assert "partial" not in text and "nothing" not in text
    assert "report.json unreadable" in text and "refine · features patches · cpu · 64 px" in text
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".refined.x1.partial"]  # no temp files

    # thumbnails: from views.png (a strip), else render.png; remade when the source is newer
    t = Image.open(out / "refined" / "thumb.jpg")
    assert t.size[0] <= THUMB_BOX[0] and t.size[1] <= THUMB_BOX[1] and t.size[0] > 4 * t.size[1]
    assert Image.open(out / "broken" / "thumb.jpg").size == (240, 240)
    thumb = out / "refined" / "thumb.jpg"
    st = (out / "refined" / "views.png").stat()
    os.utime(thumb, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    old = thumb.stat().st_mtime_ns
    write_index(out)
    assert thumb.stat().st_mtime_ns != old


def small_face(folder: Path, i: int = 0) -> None:
    """A face folder with a report.json and a small render.png (no thumb.jpg)."""
    folder.mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 10 * i % 255, np.uint8)).save(folder / "render.png")
    (folder / "report.json").write_text(json.dumps({"texture_size": 64}))


def parse_file(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert p.errors == [] and p.stack == [], (path, p.errors, p.stack)
    return p


def test_more_faces_than_a_page_make_pages_linked_from_the_index_and_to_each_other(tmp_path, monkeypatch):
    from facerefiner.gallery import page_name

    out = tmp_path
    names = [f"f{i:02d}" for i in range(7)]
    for i, n in enumerate(reversed(names)):
        small_face(out / n, i)
    fails = [{"photo": f"/p/bad{i}.jpg", "status": "failed", "error": f"/p/bad{i}.jpg: no face found"}
             for i in range(12)]
    summary = {"command": "unwrap", "counts": {"done": 7, "failed": 12}, "photos": iter(fails)}  # any iterable
    monkeypatch.setattr("facerefiner.gallery.FAILED_SHOWN", 10)
    write_index(out, summary, per_page=3)
    pages = sorted(p.name for p in out.glob("faces-*.html"))
    assert pages == [page_name(k) for k in (1, 2, 3)]
    index = parse(out)
    assert_links_resolve(out, index)
    text = "".join(index.text)
    assert "7 face folders on 3 pages of 3" in text and "bad9.jpg" in text and "bad10.jpg" not in text
    assert "and 2 more" in text
    assert [r for r in index.refs if r.startswith("faces-")] == pages
    assert not any("/" in r for r in index.refs)  # the index holds no face entries, only the pages
    seen: list[str] = []
    for k, name in enumerate(pages, 1):
        page = parse_file(out / name)
        assert_links_resolve(out, page)
        nav = [r for r in page.refs if r.endswith(".html")]
        # index, previous (not on the first), next (not on the last): top and bottom
        want = ["index.html"] + ([page_name(k - 1)] if k > 1 else []) + ([page_name(k + 1)] if k < 3 else [])
        assert nav == want * 2, (name, nav)
        faces = sorted({unquote(r).split("/")[0] for r in page.refs if "/" in r})
        assert f"{faces[0]}/thumb.jpg" in [unquote(r) for r in page.refs]
        seen += faces
    assert seen == names  # every face on exactly one page, in name order, 3 + 3 + 1

    # fewer faces again: the old pages go; one page: the index holds the faces itself
    for n in names[2:]:
        shutil.rmtree(out / n)
    write_index(out, {}, per_page=3)
    assert list(out.glob("faces-*.html")) == []
    index = parse(out)
    assert_links_resolve(out, index)
    assert sorted({unquote(r).split("/")[0] for r in index.refs if "/" in r}) == names[:2]


def test_a_rerun_does_not_remake_the_thumbnails_it_has(tmp_path, monkeypatch):
    import facerefiner.folder as F

    out = tmp_path
    for i in range(5):
        small_face(out / f"f{i}", i)
    (out / "f4" / "thumb.jpg").write_bytes(b"\xff\xd8 made by the worker")  # newer than its render.png
    calls: list[Path] = []
    real = F.write_thumb

    def counted(folder, image):
        calls.append(Path(folder))
        return real(folder, image)

    monkeypatch.setattr(F, "write_thumb", counted)
    write_index(out, per_page=2)
    assert sorted(p.name for p in calls) == ["f0", "f1", "f2", "f3"]  # f4's thumbnail is used as it is
    assert (out / "f4" / "thumb.jpg").read_bytes() == b"\xff\xd8 made by the worker"
    mtimes = {p: (p / "thumb.jpg").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    calls.clear()
    write_index(out, per_page=2)
    assert calls == [] and mtimes == {p: (p / "thumb.jpg").stat().st_mtime_ns for p in mtimes}
    # a source replaced since: that one thumbnail is remade
    render = out / "f2" / "render.png"
    t = (out / "f2" / "thumb.jpg").stat().st_mtime_ns + 10**9
    os.utime(render, ns=(t, t))
    write_index(out, per_page=2)
    assert [p.name for p in calls] == ["f2"]


def test_the_writer_of_a_face_folder_makes_its_thumbnail(tmp_path):
    """write_refined_files (refine) makes thumb.jpg from views.png, inside the folder being
    written; the gallery then only reads it."""
    import torch

    from facerefiner.folder import THUMB, write_refined_files

    views = np.random.default_rng(1).integers(0, 255, (200, 1800, 3), dtype=np.uint8)
    write_refined_files(tmp_path, sampled=torch.rand(3, 8, 8), visibility=torch.ones(8, 8, dtype=torch.bool),
                        initial=torch.rand(3, 8, 8), views=views)
    t = Image.open(tmp_path / THUMB)
    assert t.size[0] <= THUMB_BOX[0] and t.size[1] <= THUMB_BOX[1] and t.size[0] > 4 * t.size[1]
    assert (tmp_path / THUMB).stat().st_mtime_ns >= (tmp_path / "views.png").stat().st_mtime_ns
