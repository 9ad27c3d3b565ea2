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
