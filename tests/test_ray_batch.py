"""``--engine ray`` on a real local Ray cluster: a head and two worker nodes on 127.0.0.1, started
here and stopped at the end (also when a test fails). Skips when Ray is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FACES, need

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "facerefiner[ray]")')

from facerefiner.batch import DONE, FAILED, SKIPPED, run_batch  # noqa: E402
from facerefiner.pipeline import UnwrapConfig, unwrap_photo  # noqa: E402
from facerefiner.ray_batch import UnwrapRecipe, remove_partial, run_batch_ray  # noqa: E402

PHOTOS = ("ffhq_00128.png", "deca_exp_1.jpg", "deca_ex_alfw1.png")
# the test's own recipe travels to the workers by value (they cannot import this test module)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
CFG = UnwrapConfig(size=64, occlusion="off")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """``HOST:PORT`` of a head (no CPUs of its own) and two worker nodes of one CPU each."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not installed")
    # no token authentication for this cluster of one machine's loopback: the driver (this process)
    # reads RAY_AUTH_MODE when Ray is imported, as "disabled" by default
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "0",
                        "--include-dashboard", "false", *common], env=env, check=True, capture_output=True, timeout=120)
        for _ in range(2):
            subprocess.run([ray_cli, "start", "--address", addr, "--num-cpus", "1", *common], env=env, check=True,
                           capture_output=True, timeout=120)
        yield addr
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _photos() -> list[Path]:
    return [need(FACES / p) for p in PHOTOS]


def _same_folder(a: Path, b: Path) -> None:
    for name in ("texture.png", "visibility.png", "occlusion.png"):
        x, y = np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name))
        assert x.shape == y.shape and int(np.abs(x.astype(int) - y.astype(int)).max()) <= 1, (a, name)
    ra, rb = json.loads((a / "report.json").read_text()), json.loads((b / "report.json").read_text())
    assert set(ra) == set(rb) and ra["head_pose_deg"] == rb["head_pose_deg"]


def test_the_ray_engine_writes_what_the_local_engine_writes_and_resumes(cluster, tmp_path):
    photos = _photos()
    local = run_batch(photos, tmp_path / "local", lambda p, stage: unwrap_photo(p, tmp_path / "local", CFG))
    seen: list = []
    res = run_batch_ray(iter(photos), tmp_path / "ray", UnwrapRecipe(cfg=CFG, out=tmp_path / "ray"), address=cluster,
                        command="unwrap", on_record=seen.append)
    assert [r.status for r in res.records] == [DONE] * 3 and [r.photo for r in res.records] == photos
    assert sorted(r.photo for r in seen) == sorted(photos)  # each reported as it arrived
    for r, lr in zip(res.records, local.records):
        assert r.folders == lr.folders
        _same_folder(tmp_path / "ray" / r.folders[0], tmp_path / "local" / lr.folders[0])
    # a rerun skips everything; a bad photo fails alone
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    again = run_batch_ray([*photos, bad], tmp_path / "ray", UnwrapRecipe(cfg=CFG, out=tmp_path / "ray"),
                          address=cluster, command="unwrap")
    assert [r.status for r in again.records] == [SKIPPED] * 3 + [FAILED]
    assert "broken.jpg" in again.records[-1].error and "\n" not in again.records[-1].error


class _DieOnce:
    """A recipe whose worker process is killed (SIGKILL) the first time it starts on ``victim``,
    part-way through writing its face folder."""

    def __init__(self, cfg, out: Path, victim: str, marker: Path, always: bool = False):
        self.cfg, self.out, self.victim, self.marker, self.always = cfg, Path(out), victim, Path(marker), always

    def build(self):
        inner = UnwrapRecipe(cfg=self.cfg, out=self.out).build()

        def work(p: Path):
            if Path(p).name == self.victim and (self.always or not self.marker.exists()):
                self.marker.write_text(str(os.getpid()))
                part = self.out / f".{Path(p).stem}.abc123.partial"  # as atomic_dir names its folder
                part.mkdir(parents=True, exist_ok=True)
                (part / "texture.png").write_bytes(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
            return inner(p)

        return work


def test_a_worker_killed_mid_photo_changes_nothing_in_the_result(cluster, tmp_path):
    photos = _photos()
    out = tmp_path / "out"
    recipe = _DieOnce(CFG, out, PHOTOS[1], tmp_path / "killed")
    res = run_batch_ray(photos, out, recipe, address=cluster, command="unwrap")
    assert (tmp_path / "killed").exists()  # a worker did die
    assert [r.status for r in res.records] == [DONE] * 3
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).stem for p in PHOTOS)  # no partial folder left
    local = tmp_path / "local"
    run_batch(photos, local, lambda p, stage: unwrap_photo(p, local, CFG))
    for name in (Path(p).stem for p in PHOTOS):
        _same_folder(out / name, local / name)


def test_a_photo_whose_worker_always_dies_fails_after_the_retries(cluster, tmp_path):
    photos = _photos()[:2]
    out = tmp_path / "out"
    recipe = _DieOnce(CFG, out, PHOTOS[0], tmp_path / "killed", always=True)
    res = run_batch_ray(photos, out, recipe, address=cluster, command="unwrap", retries=1)
    assert [r.status for r in res.records] == [FAILED, DONE]
    assert "worker died 2 times" in res.records[0].error
    assert not any(p.name.endswith(".partial") for p in out.iterdir())


def test_remove_partial_removes_only_that_photos_temporary_folders(tmp_path):
    for n in (".a.x1.partial", ".a_face1.y2.partial", ".a.b.z3.partial", ".ab.q4.partial", "a"):
        (tmp_path / n).mkdir()
    remove_partial(tmp_path, Path("a.jpg"), all_faces=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.b.z3.partial", ".ab.q4.partial", "a"]


def test_the_cli_prints_the_install_command_when_ray_is_missing(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from facerefiner.cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    r = CliRunner().invoke(app, ["unwrap", str(need(FACES / PHOTOS[0])), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert r.exit_code == 1 and 'pip install "facerefiner[ray]"' in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    r = CliRunner().invoke(app, ["unwrap", str(need(FACES / PHOTOS[0])), "-o", str(tmp_path / "o"), "--workers", "2"])
    assert r.exit_code == 1 and "--engine ray" in r.output



def test_ctrl_c_cancels_what_is_outstanding_and_a_rerun_completes(tmp_path):
    """The CLI with a local Ray for the run: SIGINT after the first photo is done exits 130 with the
    summary's other rows ``not run`` (or done, if they finished first), no partial folder; the
    same command again finishes the batch without redoing the finished photos."""
    import time

    photos = [str(p) for p in _photos()]
    out = tmp_path / "out"
    exe = str(Path(sys.executable).parent / "facerefiner")
    cmd = [exe, "unwrap", *photos, "-o", str(out), "--size", "64", "--engine", "ray", "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines = []
    t0 = time.time()
    for line in p.stderr:
        lines.append(line)
        if line.startswith("ok "):
            p.send_signal(signal.SIGINT)
            break
        assert time.time() - t0 < 240, lines
    _, rest = p.communicate(timeout=240)
    assert p.returncode == 130, "".join(lines) + rest
    summary = json.loads((out / "summary.json").read_text())
    statuses = [r["status"] for r in summary["photos"]]
    assert statuses[0] == DONE and "not run" in statuses, statuses
    assert not any(q.name.endswith(".partial") for q in out.iterdir())
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = json.loads((out / "summary.json").read_text())["photos"]
    # what was done is not done again (a photo its worker finished as the Ctrl-C came is skipped too)
    assert [r["status"] for r in rows if r["photo"] in {q["photo"] for q in summary["photos"] if q["status"] == DONE}] \
        == [SKIPPED] * statuses.count(DONE)
    assert all(r["status"] in (DONE, SKIPPED) for r in rows) and len(rows) == len(photos)
    assert sorted(q.name for q in out.iterdir() if q.is_dir()) == sorted(Path(x).stem for x in photos)


def test_without_the_dev_photos_failures_and_dead_workers_are_reported_per_photo(cluster, tmp_path):
    """Runs where ../shared is absent (CI): photos with no face and a broken file fail alone with
    their one-line reasons; a photo whose worker always dies fails after the retries."""
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    victim = tmp_path / "victim.png"
    shutil.copy(blank, victim)
    out = tmp_path / "out"
    recipe = _DieOnce(CFG, out, "victim.png", tmp_path / "killed", always=True)
    res = run_batch_ray([blank, broken, victim], out, recipe, address=cluster, command="unwrap", retries=1)
    assert [r.status for r in res.records] == [FAILED] * 3
    assert "blank.png" in res.records[0].error and "broken.jpg" in res.records[1].error
    assert "worker died 2 times" in res.records[2].error
    assert all("\n" not in r.error for r in res.records)
    assert not out.exists() or not any(p.name.endswith(".partial") for p in out.iterdir())
