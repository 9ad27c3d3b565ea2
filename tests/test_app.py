"""The web app (facerefiner.app, ``facerefiner serve``).

Helper tests run everywhere (the helpers do not import Gradio). The browser test drives headless
Chromium (Debian's /usr/bin/chromium, never a downloaded one) with Playwright through a real run:
it skips with the reason when Gradio, Playwright, Chromium or the shared photos are absent.

Every test keeps to its tmp_path: Gradio's temporary folder (GRADIO_TEMP_DIR) and the system's
(tempfile.tempdir, TMPDIR for the served subprocess) point into it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from facerefiner import app as fa
from facerefiner.errors import InputError

from conftest import FACES, need

CHROMIUM = Path("/usr/bin/chromium")
# (Gradio's own deprecation notices about Gradio 6 and numpy's about np.bool8 are not ours.)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _temp_in_tmp_path(tmp_path, monkeypatch):
    """Gradio's and the system's temporary folders inside this test's tmp_path."""
    (tmp_path / "gradio").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


# --- helpers, no browser, no Gradio ---------------------------------------------------------------


def test_run_folders_are_fresh_per_run_and_cleaned(tmp_path):
    runs = fa.RunFolders(tmp_path / "root", max_age_s=100)
    a1 = runs.new("alice")
    b1 = runs.new("bob")
    assert a1 != b1 and a1.parent == b1.parent == tmp_path / "root"
    assert not any(a1.iterdir()) and not any(b1.iterdir())
    (a1 / "x.png").write_bytes(b"a")
    (b1 / "y.png").write_bytes(b"b")
    a2 = runs.new("alice")  # alice's next run: her old folder goes, bob's stays
    assert a2 != a1 and not a1.exists() and b1.exists() and not any(a2.iterdir())
    runs.end_session("bob")  # bob closed his tab
    assert not b1.exists() and a2.exists()
    old = runs.new("carol")
    os.utime(old, (time.time() - 1000, time.time() - 1000))
    assert runs.sweep() == [old] and not old.exists() and a2.exists()
    runs.cleanup()
    assert not (tmp_path / "root").exists()


def test_run_folders_default_root_is_private_temp(tmp_path):
    runs = fa.RunFolders()
    try:
        assert runs.root.is_dir() and runs.root.name.startswith("facerefiner-app-")
        assert runs.root.parent == tmp_path / "tmp"  # (the system's temporary folder, here in tmp_path)
        assert (runs.root.stat().st_mode & 0o077) == 0  # mkdtemp: only this user
    finally:
        runs.cleanup()
    assert not runs.root.exists()


def test_check_photo_rejects_non_images_with_the_users_file_name(tmp_path):
    bad = tmp_path / "upload-3f9a" / "notes.jpg"
    bad.parent.mkdir()
    bad.write_text("not an image")
    with pytest.raises(InputError) as e:
        fa.check_photo(bad, "notes.jpg")
    msg = str(e.value)
    assert msg.startswith("notes.jpg: not an image") and "upload-3f9a" not in msg and "\n" not in msg
    ok = tmp_path / "ok.png"
    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(ok)
    assert fa.check_photo(ok).shape == (40, 30, 3)


def test_masks_scaled_to_the_photo(tmp_path):
    layer = np.zeros((50, 100, 4), np.uint8)
    layer[10:20, 30:40, 3] = 255  # painted
    m = fa.painted_mask([layer, np.zeros((50, 100, 4), np.uint8)], (200, 100))
    assert m.shape == (100, 200) and m[20:40, 60:80].all() and m.sum() == 20 * 20
    assert fa.painted_mask([np.zeros((50, 100, 4), np.uint8)], (200, 100)) is None
    assert fa.painted_mask(None, (200, 100)) is None
    with pytest.raises(InputError, match="shape"):
        fa.painted_mask([layer], (100, 100))
    p = tmp_path / "mask.png"
    Image.fromarray((np.arange(100)[None, :].repeat(50, 0) >= 50).astype(np.uint8) * 255).save(p)
    m = fa.uploaded_mask(p, (200, 100))
    assert m.shape == (100, 200) and m[:, 100:].all() and not m[:, :100].any()
    with pytest.raises(InputError, match="mask.png: mask is 100x50"):
        fa.uploaded_mask(p, (100, 100), "mask.png")


def test_stage_progress_and_names():
    seen = []
    p = fa.StageProgress(lambda f, t: seen.append((round(f, 3), t)), total_steps=4)
    # every stage the pipeline reports, in its order: the bar never goes back
    p.stage("load")
    p.stage("reconstruct")
    p.stage("occlusion")
    p.stage("refine")
    for i in range(4):
        p.step({"scale": 64, "step": i, "steps": 4})
    p.stage("light")
    p.stage("views")
    p.stage("export")
    p.stage("write")
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[0] == 0.0 and seen[-1][1].startswith("writing") and seen[-3][1].startswith("rendering")
    assert all(t != name for (_, t), name in zip(seen, ["load", "reconstruct", "occlusion"]))  # named stages
    assert fa.safe_stem("../../etc/pass wd.jpg") == "pass_wd" and fa.safe_stem("") == "photo"
    assert fa.clean_message("/tmp/x/abc.jpg: no face found\nmore", "/tmp/x/abc.jpg", "me.jpg") == "me.jpg: no face found"


def test_summary_names_the_faces_left_out():
    """A photo with several faces: the summary says which one the app did and how to get the rest;
    one face (or a report without the count) says nothing about it."""
    rep = {"head_pose_deg": {"yaw": 12.4, "pitch": -3.0}, "visible_fraction": 0.42, "face_index": 0}
    kw = {"size": 128, "preset": "quick", "features": "patches", "secs": 3.21}
    one = fa.summary_line("me.jpg", rep, **kw)
    assert one.startswith("**me.jpg**: 128 x 128 texture, preset `quick`") and "yaw +12°" in one and "42 %" in one
    assert "faces in the photo" not in one
    assert "faces in the photo" not in fa.summary_line("me.jpg", {**rep, "faces_in_photo": 1}, **kw)
    two = fa.summary_line("us.jpg", {**rep, "faces_in_photo": 2}, masked=True, **kw)
    assert "; 1 of 2 faces in the photo (the largest; the command line's `--all-faces` does every face)" in two
    assert two.endswith("; occlusion mask applied") and "\n" not in two


def test_summary_says_how_much_was_left_out_as_occluded():
    rep = {"head_pose_deg": {"yaw": 0.0, "pitch": 0.0}, "visible_fraction": 0.4,
           "occlusion": {"mode": "auto", "face_share": {"hands": 0.05, "total": 0.123}}}
    line = fa.summary_line("me.jpg", rep, size=128, preset="quick", features="patches", secs=1.0)
    assert "; 12 % of the face left out as occluded" in line
    assert "left out" not in fa.summary_line("me.jpg", {**rep, "occlusion": {"mode": "off"}}, size=128,
                                             preset="quick", features="patches", secs=1.0)


def test_find_occluders_paints_the_hand_into_the_editor_layer(tmp_path):
    """The hand photo: the layer is the editor's preview size, magenta and opaque where found (the
    fingers at the chin), transparent elsewhere, and painted_mask reads it back as the photo's mask."""
    from facerefiner.features import get_extractor

    src = need(FACES / "deca_vox_id06692.jpg")
    app = fa.FaceApp(preset="quick", features="patches", root=tmp_path / "runs",
                     extractor=get_extractor("patches"))
    value = app.find_occluders(src)
    layer = value["layers"][0]
    rgb = np.asarray(Image.open(src).convert("RGB"))
    assert (value["background"] == fa.preview(rgb)).all() and value["composite"].shape == value["background"].shape
    assert layer.shape == fa.preview(rgb).shape[:2] + (4,) and layer.dtype == np.uint8
    on = layer[..., 3] > 0
    assert 0.02 < on.mean() < 0.3
    assert (layer[on] == fa.MASK_RGBA).all()
    m = fa.painted_mask([layer], (rgb.shape[1], rgb.shape[0]))
    assert m[165:195, 120:170].mean() > 0.6   # the fingers (hand-checked box, see test_occlusion)
    with pytest.raises(InputError):
        app.find_occluders(tmp_path / "runs")  # not an image


def test_serve_without_gradio_prints_the_install_command(tmp_path):
    """`facerefiner serve` with Gradio not importable: one line with the install command, exit 1."""
    shim = tmp_path / "gradio.py"
    shim.write_text("raise ImportError('No module named gradio')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", "from facerefiner.cli.main import main; main()", "serve"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and 'pip install "facerefiner[app]"' in lines[0] and "Traceback" not in r.stderr


# --- the launched app, `facerefiner serve` and the browser test --------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_gradio():
    try:
        import gradio  # noqa: F401
    except ImportError:
        pytest.skip('gradio is not installed (pip install -e ".[app]")')


def _requirements():
    _need_gradio()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip('playwright is not installed (pip install -e ".[test]")')
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    return sync_playwright


@pytest.fixture
def served(tmp_path):
    _requirements()
    # (under the system's temporary folder: Gradio takes results only from there or the working folder)
    demo = fa.build_app(preset="default", features="patches", device="cpu", root=tmp_path / "tmp" / "runs")
    port = _free_port()
    fa.launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        fa.shutdown(demo)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_no_api_description(tmp_path):
    """The launched app answers 404 for the API descriptions (Gradio's /gradio_api/info and
    /gradio_api/openapi.json, FastAPI's /openapi.json, /docs, /redoc); the page and its config,
    which the browser needs, still answer."""
    _need_gradio()
    demo = fa.build_app(preset="quick", features="patches", device="cpu", root=tmp_path / "runs")
    port = _free_port()
    fa.launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        base = f"http://127.0.0.1:{port}"
        off = ["/gradio_api/info", "/gradio_api/info/", "/gradio_api/info?all_endpoints=true",
               "/gradio_api/openapi.json", "/openapi.json", "/docs", "/redoc"]
        assert {p: _status(base + p) for p in off} == {p: 404 for p in off}
        assert _status(base + "/") == 200 and _status(base + "/config") == 200
    finally:
        fa.shutdown(demo)


def test_gradio_files_go_with_the_server(tmp_path, monkeypatch):
    """GRADIO_TEMP_DIR unset: the app's uploads land in its private Gradio folder, and stopping the
    server (shutdown, as serve does) leaves nothing behind in the system's temporary folder; the
    variable is unset again."""
    _need_gradio()
    import httpx  # (a dependency of gradio)

    monkeypatch.delenv("GRADIO_TEMP_DIR")
    tmp = tmp_path / "tmp"  # (the system's temporary folder in this test)
    demo = fa.build_app(preset="quick", features="patches", device="cpu")
    port = _free_port()
    fa.launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        private = Path(os.environ["GRADIO_TEMP_DIR"])
        assert private.parent == tmp and private.name.startswith("facerefiner-gradio-")
        assert fa.use_private_gradio_temp() == private  # (the same folder for the whole process)
        r = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=30,
                       files={"files": ("face.png", b"\0" * 1000, "image/png")})
        assert r.status_code == 200 and Path(r.json()[0]).is_relative_to(private), r.text
        assert sorted(p.name for p in tmp.iterdir()) == sorted([private.name, demo.face_app.runs.root.name])
    finally:
        fa.shutdown(demo)
    assert list(tmp.iterdir()) == [] and "GRADIO_TEMP_DIR" not in os.environ


def _browser(p):
    # SwiftShader WebGL in headless mode (Chromium disabled its automatic fallback).
    return p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                             args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                                   "--no-sandbox"])


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_prints_the_url_serves_an_offline_page_and_cleans_up(tmp_path, sig):
    """`facerefiner serve`: prints the URL, the page names nothing outside this machine, Ctrl-C (or
    a service manager's SIGTERM) stops it, and nothing it made is left in the temporary folder:
    neither its run folders nor Gradio's copies of uploads (GRADIO_TEMP_DIR unset)."""
    import signal

    _need_gradio()
    import httpx  # (a dependency of gradio)

    port = _free_port()
    tmp = tmp_path / "tmp"
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("GRADIO_TEMP_DIR")
    proc = subprocess.Popen([sys.executable, "-c", "from facerefiner.cli.main import main; main()", "serve",
                             "--port", str(port), "--features", "patches", "--preset", "quick", "--max-upload-mb", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=180), "facerefiner serve printed no URL within 180 s"
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert len(list(tmp.glob("facerefiner-app-*"))) == 1
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "facerefiner" in html and "cdnjs" not in html and "fonts.googleapis" not in html
        assert re.findall(r'(?:src|href)="(?:https?:)?//[^"]*"', html) == []  # (nothing loads from elsewhere)
        big = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=30,
                         files={"files": ("big.png", b"\0" * (1024 * 1024 + 10), "image/png")})
        small = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=30,
                           files={"files": ("small.png", b"\0" * 1000, "image/png")})
        assert big.status_code == 413 and small.status_code == 200, (big.status_code, big.text, small.status_code)
        (gradio_tmp,) = tmp.glob("facerefiner-gradio-*")  # Gradio's folder: private, inside TMPDIR
        assert Path(small.json()[0]).is_relative_to(gradio_tmp), small.text
    finally:
        proc.send_signal(getattr(signal, sig))
        try:  # communicate() drains both pipes: a full stderr pipe would block the server's exit
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert "Traceback" not in stderr
    assert list(tmp.iterdir()) == []
    assert list((tmp_path / "gradio").iterdir()) == []  # (the test's GRADIO_TEMP_DIR was not used)


def _pixels_vary(png: bytes) -> float:
    import io

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    return float(a.std(axis=(0, 1)).mean())


def _wait_for_upload(page, name: str) -> None:
    # The file component shows the name split into stem and extension spans ("blank" ".png"), so
    # its text does not always read as the name; its accessible label does.
    page.locator("#fr-photo").get_by_label(name, exact=True).first.wait_for(timeout=60_000)


def test_app_end_to_end_in_a_browser(served, tmp_path):
    """At 1400 x 1000 the Run button is in view without scrolling; upload a photo, pick quick, Run:
    the texture, the 3D face and the zip appear; a non-image and a photo without a face get one-line
    messages; nothing is fetched from outside this machine, nor Gradio's API description.
    Screenshots: tmp_path / "first_view.png" (as the page opens) and "app.png" (after the run)."""
    sync_playwright = _requirements()
    photo = need(FACES / "deca_exp_1.jpg")
    demo, url = served
    t0 = time.perf_counter()
    outside: list[str] = []
    api_info: list[str] = []
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: outside.append(r.url)
                    if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                    and not r.url.startswith(("data:", "blob:")) else None)
            page.on("request", lambda r: api_info.append(r.url) if "/gradio_api/info" in r.url else None)
            page.goto(url, wait_until="load")
            upload = page.locator("#fr-photo input[type=file]")
            upload.wait_for(state="attached", timeout=30_000)
            # the main action in view as the page opens (a laptop's window, before any scrolling)
            run = page.locator("#fr-run")
            run.wait_for(timeout=30_000)
            page.wait_for_timeout(500)  # (the layout settles)
            page.screenshot(path=str(tmp_path / "first_view.png"))
            box = run.bounding_box()
            assert page.evaluate("window.scrollY") == 0
            assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1400 and box["y"] + box["height"] <= 1000, box
            clear = page.locator("#fr-photo").get_by_role("button", name="Clear")
            # not an image: a warning naming the file, at once
            bad = tmp_path / "notes.png"
            bad.write_text("hello")
            upload.set_input_files(str(bad))
            # (generous waits: in a full test run on 2 cores an upload event has taken over 20 s)
            page.get_by_text("notes.png: not an image", exact=False).first.wait_for(timeout=60_000)
            clear.click()
            # an image without a face: Run says so in one line
            blank = tmp_path / "blank.png"
            Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))).save(blank)
            upload.set_input_files(str(blank))
            _wait_for_upload(page, "blank.png")
            page.wait_for_timeout(1000)
            page.locator("#fr-run").click()
            page.get_by_text("blank.png: no face found", exact=False).first.wait_for(timeout=60_000)
            # the real photo, the quick preset, Run
            clear.click()
            upload.set_input_files(str(photo))
            _wait_for_upload(page, photo.name)
            page.wait_for_timeout(2000)  # the photo reaches the mask editor
            # Find occluders: what the automatic search finds lands in the editor, the search is off
            auto = page.locator("#fr-auto input[type=checkbox]")
            assert auto.is_checked()
            page.locator("#fr-find").click()
            page.wait_for_function("() => !document.querySelector('#fr-auto input[type=checkbox]').checked",
                                   timeout=60_000)
            page.locator("#fr-editor").scroll_into_view_if_needed()
            box = page.locator("#fr-editor canvas").first.bounding_box()  # paint a stroke over the chin
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.8
            page.mouse.move(x - 20, y)
            page.mouse.down()
            page.mouse.move(x + 20, y, steps=8)
            page.mouse.up()
            page.locator("#fr-preset").get_by_text("quick", exact=False).click()
            page.locator("#fr-run").click()
            page.locator("#fr-texture img").wait_for(timeout=120_000)
            canvas = page.locator("#fr-model canvas")
            canvas.wait_for(timeout=30_000)
            link = page.locator("#fr-zip a[download]").first
            link.wait_for(timeout=30_000)
            assert link.get_attribute("href")
            page.locator("#fr-status").get_by_text("occlusion mask applied", exact=False).wait_for(timeout=10_000)
            assert page.locator("#fr-texture img").evaluate("i => i.naturalWidth") == 128
            page.wait_for_timeout(2500)  # let the 3D viewer draw the mesh
            assert _pixels_vary(canvas.screenshot()) > 10, "the 3D view is blank"
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            with page.expect_download() as dl:
                link.click()
            z = tmp_path / "face.zip"
            dl.value.save_as(str(z))
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
            raise
        finally:
            browser.close()
    names = zipfile.ZipFile(z).namelist()
    for f in ("texture.png", "mesh.glb", "mesh.obj", "views.png", "report.json"):
        assert f"deca_exp_1/{f}" in names, names
    assert outside == [], f"the page fetched from outside this machine: {outside}"
    assert api_info == [], api_info  # (the page does not need the API description route: it is off)
    # each run had its own fresh folder under the app's root (the failed run's was replaced), and the
    # session's folder goes when its tab closes
    root = demo.face_app.runs.root
    for _ in range(100):
        if not any(root.iterdir()):
            break
        time.sleep(0.2)
    assert not any(root.iterdir()), list(root.iterdir())
    assert time.perf_counter() - t0 < 300


def test_the_app_uses_a_prior_it_was_given(tmp_path):
    """FaceApp(prior=FILE) (serve --prior) loads it once, and its runs complete with it: the
    report's synthesis names the prior's entries."""
    from facerefiner.features import get_extractor
    from facerefiner.prior import build_prior, save_prior

    photos = [need(FACES / n) for n in ("ffhq_00128.png", "deca_ex_img0392.jpg", "ffhq_23714.png")]
    save_prior(build_prior(photos[:2], size=64), tmp_path / "prior.npz")
    app = fa.FaceApp(preset="quick", features="patches", root=tmp_path / "runs", extractor=get_extractor("patches"),
                     prior=tmp_path / "prior.npz")
    assert app.prior is not None and len(app.prior) == 2
    out = app.run(photos[2], preset="quick", occlusion="off")
    assert out.report["synthesis"]["prior"]["entries"]
    with pytest.raises(InputError):
        fa.FaceApp(preset="quick", features="patches", root=tmp_path / "runs2", extractor=get_extractor("patches"),
                   prior=tmp_path / "nope.npz")


def test_the_app_runs_the_head_it_was_given(tmp_path):
    """FaceApp(head="ict") (serve --head ict): the run's layout, mesh and report are the ICT head's
    (more vertices than MediaPipe's 468, the ARKit expression weights reported), and the summary
    names the head; an unknown head is an InputError naming the known ones."""
    from facerefiner.features import get_extractor
    from facerefiner.heads import get_head

    photo = need(FACES / "ffhq_00128.png")
    app = fa.FaceApp(preset="quick", features="patches", root=tmp_path / "runs", extractor=get_extractor("patches"),
                     head="ict")
    assert app.layout.name == get_head("ict").layout(None).name == "ict-facekit-2" and len(app.layout.uv) > 468
    out = app.run(photo, preset="quick", occlusion="off")
    assert out.report["head"] == "ict" and len(out.report["expression_weights"]) == 53
    assert "head `ict`" in out.summary
    with pytest.raises(InputError, match="mediapipe"):
        fa.FaceApp(preset="quick", features="patches", root=tmp_path / "runs2", extractor=get_extractor("patches"),
                   head="flame")


def test_serve_rejects_an_unknown_head(tmp_path):
    """`facerefiner serve --head flame`: one line naming the known heads, exit 1, nothing served."""
    r = subprocess.run([sys.executable, "-c", "from facerefiner.cli.main import main; main()", "serve", "--head", "flame"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "--head must be one of" in r.stderr and "ict" in r.stderr and "Traceback" not in r.stderr
