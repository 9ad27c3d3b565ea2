"""Batches of photos: resume, per-photo records, Ctrl-C, and the run's summary files.

:func:`run_batch` runs a per-photo function (``unwrap_photo``, ``refine_photo``) over many photos:

* **Resume.** A photo whose face folder(s) already exist complete under ``OUT`` is *skipped*
  (``overwrite=True`` redoes it). Face folders are renamed into place only when complete
  (:func:`facerefiner.io.atomic_dir`), so "the folder has a report.json" means "finished"
  (for ``refine``: a report with a "refine" block, so unwrap output in the same OUT is refined;
  settings are not compared). See :func:`finished_folders`.
* **Records.** Every photo gets a :class:`PhotoRecord`: ``done``, ``skipped``, ``failed`` (with the
  one-line reason) or ``not run`` (the batch was interrupted before or during it).
* **Ctrl-C.** A :class:`KeyboardInterrupt` during a photo ends the batch: that photo's unfinished
  folder is discarded by ``atomic_dir``, the photo and the ones after it are recorded as
  ``not run``, and :attr:`BatchResult.interrupted` is set. The caller writes the summary and
  decides the exit code.
* **Unexpected errors** (bugs, a GPU out of memory) in one photo are recorded as a failure of
  that photo and the batch goes on; the traceback is logged at INFO level (``facerefiner -v``).

:func:`write_summary` writes ``OUT/summary.json`` and ``OUT/summary.csv`` atomically. The library
prints nothing; the CLI owns the console (``facerefiner.cli.common``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import OutputError
from .folder import FaceReport, is_face_folder, report_or_none
from .io import atomic_write_bytes, save_json
from .pipeline import PhotoResult, face_folder_names

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED, NOT_RUN = "done", "skipped", "failed", "not run"
STATUSES = (DONE, SKIPPED, FAILED, NOT_RUN)

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
#: Columns of ``summary.csv`` (``folders`` is the face folders' names, ``;``-separated).
CSV_COLUMNS = ("photo", "status", "faces", "folders", "seconds", "error")


@dataclass
class PhotoRecord:
    """What happened to one photo in a batch."""

    photo: Path
    status: str
    """``done``, ``skipped``, ``failed`` or ``not run``."""
    folders: list[str] = field(default_factory=list)
    """Names of the face folders under OUT (written, or found complete when skipped)."""
    seconds: float = 0.0
    """Wall time spent on the photo in this run (0 for skipped and not-run photos)."""
    error: str | None = None
    """One-line reason for ``failed`` (and ``not run``: "interrupted ...")."""
    result: PhotoResult | None = field(default=None, repr=False)
    """The per-photo function's result, for ``done`` and ``failed`` photos."""

    @property
    def faces(self) -> int:
        return len(self.folders)

    def to_json(self) -> dict[str, Any]:
        return {"photo": str(self.photo), "status": self.status, "faces": self.faces, "folders": list(self.folders),
                "seconds": round(self.seconds, 3), "error": self.error}


@dataclass
class BatchResult:
    """All records of a batch, in input order, and whether it was interrupted."""

    out: Path
    records: list[PhotoRecord]
    command: str = ""
    overwrite: bool = False
    interrupted: bool = False
    started: str = ""
    """Local time the batch started, ISO 8601 with offset."""
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in STATUSES}

    @property
    def failed(self) -> list[PhotoRecord]:
        return [r for r in self.records if r.status == FAILED]

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "out": str(self.out), "started": self.started,
                "seconds": round(self.seconds, 3), "overwrite": self.overwrite, "interrupted": self.interrupted,
                "counts": self.counts(), "photos": [r.to_json() for r in self.records]}



def finished_folders(photo: Path, out: Path, all_faces: bool = False, command: str = "") -> list[str] | None:
    """Names of ``photo``'s complete face folders under ``out``, or None when it is not finished.

    Without ``all_faces`` the photo is finished when ``OUT/<stem>/report.json`` exists; with it,
    when ``OUT/<stem>_face0/report.json`` exists and so do the other faces' folders (their number
    is read from face0's report, key ``photo_faces``; reports without it count the consecutive
    ``_face<i>`` folders present). A Ctrl-C between two faces of a photo thus leaves it unfinished.

    With ``command="refine"`` only folders made by ``refine`` count (their report has a "refine"
    block): a folder from ``unwrap`` in the same OUT is redone rather than taken for a refined one.
    ``unwrap`` accepts either (a refine folder holds everything unwrap writes). Settings (size, ...)
    are not compared: ``--overwrite`` redoes a photo with new ones.
    """
    out = Path(out)
    stem = Path(photo).stem
    if not all_faces:
        names = face_folder_names(stem, 1, False)
    else:
        first = report_or_none(out / f"{stem}_face0")
        if first is None:
            return None
        n = FaceReport(first).photo_faces
        if n is not None and n >= 1:
            names = face_folder_names(stem, n, True)
        else:  # a report from before photo_faces: the consecutive folders present
            names, i = [], 0
            while is_face_folder(out / f"{stem}_face{i}"):
                names.append(f"{stem}_face{i}")
                i += 1
    for nm in names:
        if not is_face_folder(out / nm):
            return None
        if command == "refine":
            rep = report_or_none(out / nm)
            if rep is None or FaceReport(rep).refine is None:
                return None
    return names


def duplicate_stems(photos: Sequence[Path]) -> list[list[Path]]:
    """Groups of different photos that write the same face folder (same file name stem)."""
    by: dict[str, list[Path]] = {}
    for p in photos:
        by.setdefault(Path(p).stem, []).append(Path(p))
    return [g for g in by.values() if len(g) > 1]


def unique_photos(photos: Sequence[Path]) -> list[Path]:
    """``photos`` without repeats of the same file (a photo named twice, or via a folder and by name)."""
    seen: set[Path] = set()
    out: list[Path] = []
    for p in photos:
        try:
            key = Path(p).resolve()
        except OSError:
            key = Path(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(Path(p))
    return out


def run_batch(photos: Sequence[Path], out: Path, work: Callable[[Path, Callable[[str], None]], PhotoResult], *,
              all_faces: bool = False, overwrite: bool = False, command: str = "",
              on_photo: Callable[[Path], None] | None = None, on_stage: Callable[[str], None] | None = None,
              on_record: Callable[[PhotoRecord], None] | None = None) -> BatchResult:
    """Run ``work(photo, on_stage)`` on each photo not yet finished under ``out``.

    Args:
        photos: the photos, in order (repeats of the same file are dropped).
        out: the output root (face folders ``OUT/<stem>`` or ``OUT/<stem>_face<i>``).
        work: the per-photo function; returns a :class:`~facerefiner.pipeline.PhotoResult`
            (user errors in ``.error``) and writes the photo's face folders under ``out``.
        all_faces: how ``work`` names folders (decides what "finished" means).
        command: ``unwrap`` or ``refine`` (recorded in the summary; see :func:`finished_folders`).
        overwrite: redo finished photos instead of skipping them.
        on_photo: called with each photo before it is run or skipped.
        on_stage: passed through from ``work``'s stage callback.
        on_record: called with each photo's record as soon as it is known.

    Returns:
        A :class:`BatchResult`; on Ctrl-C, ``interrupted`` is True and the photo being processed
        and the ones after it are ``not run`` (the KeyboardInterrupt is not re-raised).
    """
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    out = Path(out)
    photos = unique_photos(photos)
    # Decided before anything runs, so that two photos with the same stem in this batch do not
    # skip each other.
    found = [None if overwrite else finished_folders(p, out, all_faces, command) for p in photos]
    res = BatchResult(out=out, records=[], command=command, overwrite=overwrite, started=started)
    last_stage = [""]

    def stage(s: str) -> None:
        last_stage[0] = s
        if on_stage is not None:
            on_stage(s)

    def emit(rec: PhotoRecord) -> None:
        res.records.append(rec)
        if on_record is not None:
            on_record(rec)

    try:
        for photo, folders in zip(photos, found):
            last_stage[0] = ""
            if on_photo is not None:
                on_photo(photo)
            if folders is not None:
                emit(PhotoRecord(photo, SKIPPED, folders=folders))
                continue
            t0 = time.perf_counter()
            try:
                r = work(photo, stage)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # a bug or an unexpected failure: fail this photo, go on with the others
                log.info("unexpected error on %s", photo, exc_info=True)
                msg = str(e).splitlines()[0] if str(e) else ""
                r = PhotoResult(path=Path(photo), error=f"{photo}: unexpected error {type(e).__name__}"
                                + (f": {msg}" if msg else "") + " (facerefiner -v shows the traceback)")
            dt = time.perf_counter() - t0
            folders_done = [f.folder.name for f in r.faces]
            if r.ok:
                emit(PhotoRecord(photo, DONE, folders=folders_done, seconds=dt, result=r))
            else:
                emit(PhotoRecord(photo, FAILED, folders=folders_done, seconds=dt, error=r.error, result=r))
    except KeyboardInterrupt:
        res.interrupted = True
        where = f" during {last_stage[0]}" if last_stage[0] else ""
        for j, photo in enumerate(photos[len(res.records):]):
            res.records.append(PhotoRecord(photo, NOT_RUN, error=f"interrupted{where}" if j == 0 else "interrupted"))
    res.seconds = time.perf_counter() - t_start
    return res


def summary_csv(result: BatchResult) -> str:
    """``summary.csv``'s text: one row per photo, columns :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in result.records:
        w.writerow([str(r.photo), r.status, r.faces, ";".join(r.folders), f"{r.seconds:.3f}", r.error or ""])
    return buf.getvalue()


def write_summary(out: Path, result: BatchResult) -> tuple[Path, Path]:
    """Write ``OUT/summary.json`` and ``OUT/summary.csv`` (each atomically); returns their paths.

    Raises:
        OutputError: they cannot be written.
    """
    out = Path(out)
    pj, pc = out / SUMMARY_JSON, out / SUMMARY_CSV
    try:
        save_json(pj, result.to_json())
        atomic_write_bytes(pc, summary_csv(result).encode("utf-8"))
    except OSError as e:
        raise OutputError(f"{out}: cannot write the run's summary ({e.strerror or e})") from None
    return pj, pc


def read_summary(out: Path) -> dict[str, Any] | None:
    """``OUT/summary.json`` as a dict, or None when it is absent or unreadable."""
    try:
        d = json.loads((Path(out) / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
