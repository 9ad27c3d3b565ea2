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
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FACES, need

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "facerefiner[ray]")')

from facerefiner.batch import DONE, FAILED, SKIPPED, run_batch  # noqa: E402
from facerefiner.folder import is_face_folder  # noqa: E402
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


RAY_CLI = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
# no token authentication for this cluster of one machine's loopback: the driver (this process)
# reads RAY_AUTH_MODE when Ray is imported, as "disabled" by default
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
NODE_ARGS = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]


@pytest.fixture(scope="module")
def cluster():
    """``HOST:PORT`` of a head (no CPUs of its own) and two worker nodes of one CPU each."""
    ray_cli = RAY_CLI
    if ray_cli is None:
        pytest.skip("the ray command is not installed")
    env = RAY_ENV
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    common = NODE_ARGS
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


# --- a whole node lost mid-batch ----------------------------------------------------------------

LOST_NODE_PHOTOS = ("deca_exp_0.jpg", "deca_exp_1.jpg", "deca_ex_alfw1.png", "deca_ex_alfw2.png",
                    "deca_vox_id04657.jpg", "deca_vox_id06692.jpg")


def _session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (Linux ``/proc``)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def _kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` at once (a node started in its own session: its
    ``ray start``, raylet, agents and the workers the raylet started); returns how many."""
    pids = _session_pids(sid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(pids)


class _LoseANode:
    """A recipe for the node-loss test. On the node that has the custom resource ``doomed``, a
    worker starts its photo (a half-written temporary folder, a ``started`` line in ``log``, the
    ``started`` marker) and then waits to die with its node. Elsewhere a worker first waits for that
    marker (so that the doomed node surely gets photos), then unwraps and logs a ``done`` line."""

    def __init__(self, cfg, out: Path, log: Path, started: Path):
        self.cfg, self.out, self.log, self.started = cfg, Path(out), Path(log), Path(started)

    def build(self):
        import ray as _ray

        inner = UnwrapRecipe(cfg=self.cfg, out=self.out).build()
        me = _ray.get_runtime_context().get_node_id()
        doomed = any(n["NodeID"] == me and n.get("Resources", {}).get("doomed") for n in _ray.nodes())

        def work(p: Path):
            p = Path(p)
            if doomed:
                part = self.out / f".{p.stem}.abc123.partial"  # as atomic_dir names its folder
                part.mkdir(parents=True, exist_ok=True)
                (part / "texture.png").write_bytes(b"half")
                with open(self.log, "a") as f:
                    f.write(f"started {p.name} {os.getpid()}\n")
                self.started.write_text(p.name)
                time.sleep(120)  # killed with the node long before
                raise RuntimeError("the doomed node was not killed")
            deadline = time.time() + 90
            while not self.started.exists() and time.time() < deadline:
                time.sleep(0.1)
            r = inner(p)
            with open(self.log, "a") as f:
                f.write(f"done {p.name} {os.getpid()}\n")
            return r

        return work


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="finds the node's processes in /proc (Linux)")
def test_a_whole_node_lost_mid_batch_changes_nothing_in_the_result(cluster, tmp_path):
    """A third worker node (its own session: ray start, raylet, agents, workers) joins the cluster
    and is SIGKILLed, every process at once, while its worker is mid-photo with a half-written
    temporary folder. The batch completes on the two nodes left: every photo done, each exactly
    once, no temporary folder left, the lost node's photo the same as the local engine's."""
    photos = [need(FACES / p) for p in LOST_NODE_PHOTOS]
    out, log, started = tmp_path / "out", tmp_path / "work.log", tmp_path / "started"
    node = subprocess.Popen([RAY_CLI, "start", "--address", cluster, "--num-cpus", "1", "--resources",
                             '{"doomed": 1}', "--block", *NODE_ARGS], env=RAY_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed: list[int] = []
    try:
        ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
        try:
            deadline = time.time() + 90
            while not any(n["Alive"] and n.get("Resources", {}).get("doomed") for n in ray.nodes()):
                assert time.time() < deadline and node.poll() is None, "the third node did not join"
                time.sleep(0.5)
        finally:
            ray.shutdown()

        def kill_when_started() -> None:
            deadline = time.time() + 150
            while not started.exists() and time.time() < deadline:
                time.sleep(0.05)
            if started.exists():
                killed.append(_kill_session(node.pid))

        killer = threading.Thread(target=kill_when_started, daemon=True)
        killer.start()
        # retries=1: the node's loss costs its running photo one attempt, its queued photo none, and
        # the photos go to the workers left (not to a replacement that has no room to start)
        res = run_batch_ray(photos, out, _LoseANode(CFG, out, log, started), address=cluster, workers=3,
                            retries=1, command="unwrap")
        killer.join(timeout=5)
    finally:
        _kill_session(node.pid)
        node.wait(timeout=30)
    assert started.exists() and killed and killed[0] >= 3, killed  # the node (raylet and all) was killed mid-photo
    assert _session_pids(node.pid) == []
    assert [r.status for r in res.records] == [DONE] * len(photos), [(r.status, r.error) for r in res.records]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.stem for p in photos)  # no temporary folder left
    assert all(is_face_folder(out / p.stem) for p in photos)
    lines = log.read_text().split("\n")
    done = sorted(ln.split()[1] for ln in lines if ln.startswith("done "))
    assert done == sorted(p.name for p in photos)  # each photo done exactly once
    lost = started.read_text()
    local = tmp_path / "local"
    run_batch([FACES / lost], local, lambda p, stage: unwrap_photo(p, local, CFG))
    _same_folder(out / Path(lost).stem, local / Path(lost).stem)


class _NoModels:
    """A recipe whose workers cannot start (their models fail to load)."""

    def build(self):
        raise RuntimeError("the models are not on this node")


def test_when_no_worker_can_start_the_photos_fail_with_the_reason(cluster, tmp_path):
    """A worker slot is started 1 + ``retries`` times; then the photos fail, each with the reason
    (the constructor's exception), and the batch ends (it does not wait for workers that cannot
    start)."""
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(blank)
    other = tmp_path / "other.png"
    shutil.copy(blank, other)
    t0 = time.time()
    res = run_batch_ray([blank, other], tmp_path / "out", _NoModels(), address=cluster, command="unwrap",
                        workers=1, retries=1)
    assert [r.status for r in res.records] == [FAILED, FAILED]
    for r in res.records:
        assert "no worker could start" in r.error and "\n" not in r.error, r.error
        assert "the models are not on this node" in r.error, r.error
    assert time.time() - t0 < 120
