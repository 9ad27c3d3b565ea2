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
  in flight); a record per photo is kept for the summary (a few short strings), no result.
* **Faults.** A worker that dies mid-photo (killed, out of memory, its node lost) leaves no face
  folder (its temporary folder is removed by the driver); the photo goes to a new worker, up to
  ``retries`` more times, then it is ``failed`` with the reason. A photo's own errors (no face, a
  bad file) and bugs fail that photo alone, as in the local engine.
* **Ctrl-C.** Outstanding photos are cancelled (the actors killed) and recorded ``not run``;
  ``interrupted`` is set; rerunning resumes, and nothing finished is done twice.

Ray is an optional extra (``pip install "facerefiner[ray]"``); :func:`require_ray` raises a
:class:`~facerefiner.errors.InputError` with that command when it is missing. The cluster is
``address`` (or ``RAY_ADDRESS``), else a local Ray started for the run and stopped after it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .batch import DONE, FAILED, NOT_RUN, SKIPPED, BatchResult, PhotoRecord, finished_folders
from .errors import InputError
from .pipeline import PhotoResult

log = logging.getLogger(__name__)

#: The exact command that installs the optional extra.
INSTALL = 'pip install "facerefiner[ray]"'
#: Photos in flight per worker (one running, one queued so that a worker never waits on the driver).
IN_FLIGHT_PER_WORKER = 2


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
    that a worker which died left for ``photo``'s face folders under ``out``."""
    import re

    stem = Path(photo).stem
    pat = re.compile(rf"\.{re.escape(stem)}(_face\d+)?\.[a-z0-9_]+\.partial" if all_faces
                     else rf"\.{re.escape(stem)}\.[a-z0-9_]+\.partial")
    for q in Path(out).glob(".*.partial"):
        if pat.fullmatch(q.name):
            shutil.rmtree(q, ignore_errors=True)


def _record(photo: Path, rec: dict[str, Any]) -> PhotoRecord:
    res = PhotoResult(path=photo, error=rec["error"], notes=list(rec["notes"]),
                      faces_in_photo=int(rec["faces_in_photo"]))
    status = DONE if rec["ok"] else FAILED
    return PhotoRecord(photo, status, folders=list(rec["folders"]), seconds=float(rec["seconds"]),
                       error=rec["error"], result=res)


def run_batch_ray(photos: Iterable[Path], out: Path, recipe: Any, *, address: str | None = None,
                  workers: int | None = None, cpus: float = 1.0, retries: int = 2, all_faces: bool = False,
                  overwrite: bool = False, command: str = "",
                  on_photo: Callable[[Path], None] | None = None,
                  on_record: Callable[[PhotoRecord], None] | None = None,
                  ray_init: dict[str, Any] | None = None) -> BatchResult:
    """Run ``recipe``'s per-photo function on a Ray cluster (see the module docstring).

    Args:
        photos: the photos, in order (an iterable: pulled as workers free up).
        out: the output root, seen by every node.
        recipe: :class:`UnwrapRecipe` or :class:`RefineRecipe` (picklable; built once per worker).
        address: the cluster (``ray://`` or ``HOST:PORT``; default ``RAY_ADDRESS``, else a local
            Ray for this run).
        workers: actors to start (default: the cluster's CPUs / ``cpus``, at least 1).
        cpus: CPUs per actor (its torch threads).
        retries: how many more times a photo whose worker died is tried.
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
    order: list[Path] = []  # the photos pulled so far, in input order (the records' order)
    by_photo: dict[Path, PhotoRecord] = {}
    source: Iterator[Path] = iter(photos)
    idle: deque = deque()  # the live actors (each queues up to IN_FLIGHT_PER_WORKER calls)
    busy: dict[Any, tuple[Any, Path, int]] = {}  # ref -> (actor, photo, attempt)
    retry: deque[tuple[Path, int]] = deque()
    produced: set[str] = set()  # stems written in this run (a later photo of that stem is not skipped)
    seen: set[Path] = set()
    exhausted = False

    def emit(rec: PhotoRecord) -> None:
        by_photo[rec.photo] = rec
        if on_record is not None:
            on_record(rec)

    def next_photo() -> tuple[Path, int] | None:
        nonlocal exhausted
        if retry:
            return retry.popleft()
        while not exhausted:
            try:
                order.append(Path(next(source)))  # at once: a Ctrl-C from here on records it "not run"
            except StopIteration:
                exhausted = True
                return None
            p = order[-1]
            key = p.resolve() if p.exists() else p
            if key in seen:
                order.pop()
                continue
            seen.add(key)
            if on_photo is not None:
                on_photo(p)
            folders = None if overwrite or p.stem in produced else finished_folders(p, out, all_faces, command)
            if folders is not None:
                emit(PhotoRecord(p, SKIPPED, folders=folders))
                continue
            produced.add(p.stem)
            return p, 0
        return None

    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        n = workers or max(1, int(float(ray.cluster_resources().get("CPU", 1)) // max(cpus, 1e-9)))
        actor_cls = ray.remote(num_cpus=cpus, num_gpus=1 if gpus >= n else 0, max_restarts=0)(FaceWorker)

        def spawn():
            return actor_cls.remote(recipe, threads=max(1, int(cpus)), cwd=os.getcwd())

        idle.extend(spawn() for _ in range(n))
        def load(a) -> int:
            return sum(1 for b, _, _ in busy.values() if b is a)

        while True:
            while len(busy) < n * IN_FLIGHT_PER_WORKER:
                actor = min(idle, key=load)  # the least busy worker (Ray does not move queued calls)
                if load(actor) >= IN_FLIGHT_PER_WORKER:
                    break
                job = next_photo()
                if job is None:
                    break
                busy[actor.run.remote(str(job[0]))] = (actor, job[0], job[1])
            if not busy:
                break
            done, _ = ray.wait(list(busy), num_returns=1)
            ref = done[0]
            actor, photo, attempt = busy.pop(ref)
            try:
                rec = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as e:
                # the worker died under this photo (or with it queued): a new worker, and the photo again
                remove_partial(out, photo, all_faces)
                if any(a is actor for a in idle):
                    idle.remove(actor)
                    idle.append(spawn())
                reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                if attempt < retries:
                    log.info("worker died on %s (attempt %d): %s", photo, attempt + 1, reason)
                    retry.append((photo, attempt + 1))
                else:
                    emit(PhotoRecord(photo, FAILED, error=f"{photo}: its worker died {attempt + 1} times "
                                     f"({type(e).__name__}{': ' + reason if reason else ''})"))
                continue
            except ray.exceptions.RayTaskError as e:  # run_one catches a photo's errors; a last guard
                emit(PhotoRecord(photo, FAILED, error=f"{photo}: unexpected error ({str(e).splitlines()[0][:160]})"))
                continue
            emit(_record(photo, rec))
    except KeyboardInterrupt:
        res.interrupted = True
        for a in list(idle):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - the cluster may be going down with us
                log.info("could not kill a worker", exc_info=True)
        for _, photo, _ in busy.values():
            remove_partial(out, photo, all_faces)
        order.extend(Path(p) for p in source)  # the photos never pulled: not run either
    finally:
        if own:
            ray.shutdown()
    res.records = [by_photo.get(p) or PhotoRecord(p, NOT_RUN, error="interrupted") for p in order]
    res.seconds = time.perf_counter() - t_start
    return res
