"""Batches on a Ray cluster (``--engine ray``): the local engine's batch, one task per photo.

:func:`run_batch_ray` has :func:`facerefiner.batch.run_batch`'s contract (resume, the records,
the summary the CLI writes, Ctrl-C) and runs the photos on Ray actors instead of in this process:

* **Workers.** ``workers`` actors (:class:`FaceWorker`), each built from a *recipe*
  (:class:`UnwrapRecipe`, :class:`RefineRecipe`: the verb's settings, paths only) that loads the
  models once per actor (MediaPipe, the feature extractor, the prior, the head's layout), not once
  per photo. An actor takes ``cpus`` CPUs (its torch threads) and a GPU when the cluster has
  them. Each worker writes its photo's face folders into ``out`` itself, atomically
  (:func:`facerefiner.io.atomic_dir`): ``out`` must be a path every node sees (a shared
  filesystem; on one machine, any folder).
* **Streaming.** The photos are an iterable, pulled as workers free up (at most two per worker
  in flight); a record per photo is kept for the summary (a few short strings), no result: what
  travels back from a worker is :func:`run_one`'s small dict.
* **Faults.** A worker that dies mid-photo (killed, out of memory, its node lost) leaves no face
  folder (its temporary folder is removed by the driver); the photo goes to another worker, up to
  ``retries`` more times, then it is ``failed`` with the reason. The dead worker is replaced by a
  new one, but photos go only to workers that have started (loaded their models): after a node's
  loss the cluster may have no room for the replacement, and the batch goes on with the workers
  left rather than wait for it. A worker that cannot start (its models fail to load) is replaced
  up to ``retries`` times per worker slot; when none can start, the photos left fail with that
  reason. A photo's own errors (no face, a bad file) and bugs fail that photo alone, as in the
  local engine.
* **Ctrl-C.** Outstanding photos are cancelled (the actors killed) and recorded ``not run``;
  ``interrupted`` is set; rerunning resumes, and nothing finished is done twice.

Ray is an optional extra (``pip install "facerefiner[ray]"``); :func:`require_ray` raises a
:class:`~facerefiner.errors.InputError` with that command when it is missing. The cluster is
``address`` (or ``RAY_ADDRESS``), else a local Ray started for the run and stopped after it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .batch import DONE, FAILED, NOT_RUN, SKIPPED, BatchResult, PhotoRecord, finished_folders, iter_unique
from .errors import InputError
from .pipeline import PhotoResult

log = logging.getLogger(__name__)

#: The exact command that installs the optional extra.
INSTALL = 'pip install "facerefiner[ray]"'
#: Photos in flight per worker (one running, one queued so that a worker never waits on the driver).
IN_FLIGHT_PER_WORKER = 2
#: Seconds without any started worker after which the driver logs that it is still waiting for one.
STARTUP_PATIENCE_S = 120


def require_ray():
    """The ``ray`` module, or an :class:`InputError` naming the install command."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--engine ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


# --- what a worker runs ---------------------------------------------------------------------------

@dataclass
class UnwrapRecipe:
    """``facerefiner unwrap`` on one photo: its settings (an :class:`~facerefiner.pipeline.UnwrapConfig`)
    and the output root."""

    cfg: Any
    out: Path

    def build(self) -> Callable[[Path], PhotoResult]:
        from .heads import get_head
        from .pipeline import unwrap_photo
        from .reconstruct import default_detector

        layout = get_head(self.cfg.head).layout(self.cfg.uv_layout)
        detector = default_detector()
        return lambda p: unwrap_photo(p, self.out, self.cfg, layout=layout, detector=detector)


@dataclass
class RefineRecipe:
    """``facerefiner refine`` on one photo: the run's options, the optimisation's config, the
    output root, and where the VGG16 weights are (a path every node sees, or None)."""

    opts: Any
    config: Any
    out: Path
    features: str | None = None
    """The extractor the driver resolved (``auto`` -> vgg16 or patches); None: ``config.features``."""
    vgg_weights: Path | None = None
    vgg_format: str = "auto"

    def build(self) -> Callable[[Path], PhotoResult]:
        from .features import get_extractor
        from .heads import get_head
        from .pipeline import refine_photo
        from .reconstruct import default_detector
        from .refine import resolve_device

        layout = get_head(self.opts.head).layout(self.opts.uv_layout)
        prior = None
        if self.opts.prior is not None:
            from .prior import load_prior

            prior = load_prior(self.opts.prior, layout)
        dev = resolve_device(self.opts.device)
        extractor = get_extractor(self.features or self.config.features, weights=self.vgg_weights,
                                  weights_format=self.vgg_format, device=dev)
        detector = default_detector()
        return lambda p: refine_photo(p, self.out, self.opts, self.config, layout=layout, detector=detector,
                                      extractor=extractor, prior=prior)


def run_one(work: Callable[[Path], PhotoResult], photo: Path) -> dict[str, Any]:
    """``work(photo)`` as a small record (what travels back to the driver): ``ok``, ``error``,
    ``folders``, ``faces_in_photo``, ``notes``, ``seconds``, ``pid``. A bug is this photo's failure."""
    t0 = time.perf_counter()
    try:
        r = work(Path(photo))
    except Exception as e:  # noqa: BLE001 - as the local engine: fail this photo, go on
        log.info("unexpected error on %s", photo, exc_info=True)
        msg = str(e).splitlines()[0] if str(e) else ""
        r = PhotoResult(path=Path(photo), error=f"{photo}: unexpected error {type(e).__name__}"
                        + (f": {msg}" if msg else "") + " (facerefiner -v shows the traceback)")
    return {"ok": r.ok, "error": r.error, "folders": [f.folder.name for f in r.faces],
            "faces_in_photo": r.faces_in_photo, "notes": list(r.notes), "seconds": time.perf_counter() - t0,
            "pid": os.getpid()}


class FaceWorker:
    """A Ray actor's class: builds the recipe's per-photo function once, then runs photos."""

    def __init__(self, recipe: Any, threads: int = 1, cwd: str | None = None) -> None:
        import torch

        if cwd and os.path.isdir(cwd):  # relative paths (photos, --mask, --prior) as the driver sees them
            os.chdir(cwd)
        torch.set_num_threads(max(1, int(threads)))
        logging.getLogger("facerefiner").setLevel(logging.WARNING)
        self.work = recipe.build()

    def run(self, photo: str) -> dict[str, Any]:
        return run_one(self.work, Path(photo))

    def pid(self) -> int:
        return os.getpid()


# --- the driver ---------------------------------------------------------------------------------

def remove_partial(out: Path, photo: Path, all_faces: bool) -> None:
    """Remove the temporary folders (:func:`facerefiner.io.atomic_dir`'s ``.<name>.<random>.partial``)
    that a worker which died left for ``photo``'s face folders under ``out`` (one listing of
    ``out``, once per worker death)."""
    stem = Path(photo).stem
    pat = re.compile(rf"\.{re.escape(stem)}(_face\d+)?\.[a-z0-9_]+\.partial" if all_faces
                     else rf"\.{re.escape(stem)}\.[a-z0-9_]+\.partial")
    for q in Path(out).glob(".*.partial"):
        if pat.fullmatch(q.name):
            shutil.rmtree(q, ignore_errors=True)


def _record(photo: Path, rec: dict[str, Any]) -> PhotoRecord:
    """The driver's record of a photo from :func:`run_one`'s dict."""
    return PhotoRecord(photo, DONE if rec["ok"] else FAILED, folders=list(rec["folders"]),
                       seconds=float(rec["seconds"]), error=rec["error"], faces_in_photo=int(rec["faces_in_photo"]),
                       notes=tuple(rec["notes"]))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(e: BaseException) -> str:
    """A Ray error in one line of at most 160 characters: its first line, or for a worker whose
    constructor raised (its models did not load) the last, which names that exception."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    if not lines:
        return ""
    init_failed = getattr(e, "_actor_init_failed", False) or "raised in its creation task" in lines[0]
    return (lines[-1] if init_failed else lines[0])[:160]


class _Worker:
    """The driver's view of one actor: started (its models loaded) or not, and its photos in flight."""

    __slots__ = ("actor", "ready", "load", "slot")

    def __init__(self, actor: Any, slot: int) -> None:
        self.actor, self.ready, self.load, self.slot = actor, False, 0, slot


def run_batch_ray(photos: Iterable[Path], out: Path, recipe: Any, *, address: str | None = None,
                  workers: int | None = None, cpus: float = 1.0, retries: int = 2, all_faces: bool = False,
                  overwrite: bool = False, command: str = "",
                  on_photo: Callable[[Path], None] | None = None,
                  on_record: Callable[[PhotoRecord], None] | None = None,
                  ray_init: dict[str, Any] | None = None) -> BatchResult:
    """Run ``recipe``'s per-photo function on a Ray cluster (see the module docstring).

    Args:
        photos: the photos, in order (an iterable: pulled as workers free up; repeats of the same
            file are dropped).
        out: the output root, seen by every node.
        recipe: :class:`UnwrapRecipe` or :class:`RefineRecipe` (picklable; built once per worker).
        address: the cluster (``ray://`` or ``HOST:PORT``; default ``RAY_ADDRESS``, else a local
            Ray for this run).
        workers: actors to start (default: the cluster's CPUs / ``cpus``, at least 1).
        cpus: CPUs per actor (its torch threads).
        retries: how many more times a photo whose worker died is tried (and how many times a
            worker slot whose actor cannot start is started again).
        all_faces, overwrite, command: as :func:`facerefiner.batch.run_batch`.
        on_photo: called with each photo when it is submitted or skipped.
        on_record: called with each photo's record as it arrives (in completion order).
        ray_init: more keyword arguments for ``ray.init``.

    Returns:
        A :class:`~facerefiner.batch.BatchResult` whose records are in input order.
    """
    ray = require_ray()
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    out = Path(out)
    address = address or os.environ.get("RAY_ADDRESS") or None
    own = not ray.is_initialized()
    if own:
        # "local": a new Ray of this machine for the run, even when a cluster runs here too
        kw = {"address": address or "local", "include_dashboard": False, "log_to_driver": False,
              "logging_level": logging.ERROR, "configure_logging": True}
        kw.update(ray_init or {})
        ray.init(**kw)
    res = BatchResult(out=out, records=[], command=command, overwrite=overwrite, started=started)
    # one record per photo pulled, in input order: "not run" until the photo's outcome arrives
    records = res.records
    source: Iterator[Path] = iter_unique(photos)
    crew: list[_Worker] = []
    starting: dict[Any, _Worker] = {}  # ready-ref -> the worker it tells has started
    # ref -> (worker, index of the photo's record, attempt, submission number)
    busy: dict[Any, tuple[_Worker, int, int, int]] = {}
    submitted = 0
    retry: deque[tuple[int, int]] = deque()  # (index of the photo's record, attempt)
    produced: set[str] = set()  # stems written in this run (a later photo of that stem is not skipped)
    start_failures: list[int] = []  # per worker slot: its actors that could not start
    no_start = ""  # why the last worker that could not start did not
    exhausted = False
    held: tuple[int, int] | None = None  # a photo pulled while no worker had room for it

    def emit(i: int, rec: PhotoRecord) -> None:
        records[i] = rec
        if on_record is not None:
            on_record(rec)

    def next_photo() -> tuple[int, int] | None:
        nonlocal exhausted, held
        if held is not None:
            job, held = held, None
            return job
        if retry:
            return retry.popleft()
        while not exhausted:
            try:
                p = next(source)
            except StopIteration:
                exhausted = True
                return None
            records.append(PhotoRecord(p, NOT_RUN, error="interrupted"))  # at once: a Ctrl-C records it
            i = len(records) - 1
            if on_photo is not None:
                on_photo(p)
            folders = None if overwrite or p.stem in produced else finished_folders(p, out, all_faces, command)
            if folders is not None:
                emit(i, PhotoRecord(p, SKIPPED, folders=folders))
                continue
            produced.add(p.stem)
            return i, 0
        return None

    def spawn(slot: int) -> None:
        w = _Worker(actor_cls.remote(recipe, threads=max(1, int(cpus)), cwd=os.getcwd()), slot)
        crew.append(w)
        starting[w.actor.pid.remote()] = w

    def retire(w: _Worker) -> None:
        """Take a worker out of the crew (it died, or is given up on) and kill its actor."""
        if w in crew:
            crew.remove(w)
        try:
            ray.kill(w.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is already gone
            log.info("could not kill a worker", exc_info=True)

    died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError)
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        n = workers or max(1, int(float(ray.cluster_resources().get("CPU", 1)) // max(cpus, 1e-9)))
        actor_cls = ray.remote(num_cpus=cpus, num_gpus=1 if gpus >= n else 0, max_restarts=0)(FaceWorker)
        start_failures = [0] * n
        for slot in range(n):
            spawn(slot)

        while True:
            # photos to the started workers, the least busy first (Ray does not move queued calls)
            while True:
                free = [w for w in crew if w.ready and w.load < IN_FLIGHT_PER_WORKER]
                if not free:
                    break
                job = next_photo()
                if job is None:
                    break
                w = min(free, key=lambda x: x.load)
                w.load += 1
                submitted += 1
                busy[w.actor.run.remote(str(records[job[0]].photo))] = (w, job[0], job[1], submitted)
            if not busy:
                if held is None:
                    held = next_photo()
                if held is None:
                    break  # every photo has its outcome (workers still starting are not waited for)
                if not starting:  # photos left and no worker that can take them
                    why = no_start or "no worker could be started"
                    job = held
                    while job is not None:
                        p = records[job[0]].photo
                        emit(job[0], PhotoRecord(p, FAILED, error=f"{p}: no worker could start ({why})"))
                        job = next_photo()
                    break
            if busy or any(w.ready for w in crew):
                done, _ = ray.wait(list(busy) + list(starting), num_returns=1)
            else:  # photos wait for a worker to start: say so when that takes long
                done, _ = ray.wait(list(starting), num_returns=1, timeout=STARTUP_PATIENCE_S)
                if not done:
                    log.warning("no Ray worker has started in %d s (is there room in the cluster for one of "
                                "%s CPU%s?); still waiting", STARTUP_PATIENCE_S, cpus, "" if cpus == 1 else "s")
                    continue
            ref = done[0]
            if ref in starting:
                w = starting.pop(ref)
                try:
                    ray.get(ref)
                    w.ready = True
                except ray.exceptions.RayError as e:  # its models did not load, or its node went away
                    no_start = f"{type(e).__name__}{': ' + _reason(e) if _reason(e) else ''}"
                    log.info("a worker could not start: %s", no_start)
                    retire(w)
                    start_failures[w.slot] += 1
                    if start_failures[w.slot] <= retries:
                        spawn(w.slot)
                continue
            w, i, attempt, seq = busy.pop(ref)
            w.load -= 1
            photo = records[i].photo
            try:
                rec = ray.get(ref)
            except died as e:
                # The worker died (killed, out of memory, its node lost): a new worker in its slot,
                # and its photos again. A worker runs its calls in order, so its oldest photo in
                # flight was the one running: that one is charged an attempt; the ones queued
                # behind it never started and go back to the front of the queue as they were.
                if w in crew:
                    retire(w)
                    spawn(w.slot)
                mine = [(ref, i, attempt, seq)] + [(r, *busy.pop(r)[1:]) for r in
                                                   [r for r, b in busy.items() if b[0] is w]]
                w.load = 0
                running = min(mine, key=lambda m: m[3])
                reason = _reason(e)
                for _, j, att, _ in sorted(mine, key=lambda m: -m[3]):
                    q = records[j].photo
                    remove_partial(out, q, all_faces)
                    if j != running[1]:
                        retry.appendleft((j, att))
                    elif att < retries:
                        log.info("worker died on %s (attempt %d): %s", q, att + 1, reason)
                        retry.appendleft((j, att + 1))
                    else:
                        emit(j, PhotoRecord(q, FAILED, error=f"{q}: its worker died {att + 1} times "
                                            f"({type(e).__name__}{': ' + reason if reason else ''})"))
                continue
            except ray.exceptions.RayTaskError as e:  # run_one catches a photo's errors; a last guard
                emit(i, PhotoRecord(photo, FAILED, error=f"{photo}: unexpected error ({_reason(e)})"))
                continue
            emit(i, _record(photo, rec))
    except KeyboardInterrupt:
        res.interrupted = True
        for w in list(crew):  # first, so that none goes on writing
            retire(w)
        for _, i, _, _ in busy.values():
            remove_partial(out, records[i].photo, all_faces)
        # the photos never pulled: not run either (listed, not read)
        records.extend(PhotoRecord(p, NOT_RUN, error="interrupted") for p in source)
    finally:
        for w in list(crew):  # also on a normal end: an outside cluster gets its CPUs back now
            retire(w)
        if own:
            ray.shutdown()
    res.seconds = time.perf_counter() - t_start
    return res
