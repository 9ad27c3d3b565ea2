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

* **Streaming.** The photos are an iterable, pulled one at a time (a folder of 100,000 photos is
  never listed into memory by the batch: :class:`facerefiner.pipeline.PhotoSource`). A photo's
  result (textures, geometry) is dropped once its record is made; a record is a few short fields
  (:class:`PhotoRecord`), and the batch keeps one per photo for the summary, plus each photo's
  resolved path and the stems it wrote (to drop repeats and to tell two photos of one stem apart):
  about 1 KB a photo in all (BENCHMARKS.md, "Ray").

:func:`write_summary` writes ``OUT/summary.json`` and ``OUT/summary.csv`` atomically, row by row
(never the whole file as one string). The library prints nothing; the CLI owns the console
(``facerefiner.cli.common``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import OutputError
from .folder import FaceReport, is_face_folder, report_or_none
from .io import atomic_open
from .pipeline import PhotoResult, face_folder_names

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED, NOT_RUN = "done", "skipped", "failed", "not run"
STATUSES = (DONE, SKIPPED, FAILED, NOT_RUN)

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
#: Columns of ``summary.csv`` (``folders`` is the face folders' names, ``;``-separated).
CSV_COLUMNS = ("photo", "status", "faces", "folders", "seconds", "error")


@dataclass(slots=True)
class PhotoRecord:
    """What happened to one photo in a batch: a few short fields (no images, no geometry), kept
    for the summary and passed to the console as the photo finishes."""

    photo: Path
    status: str
    """``done``, ``skipped``, ``failed`` or ``not run``."""
    folders: list[str] = field(default_factory=list)
    """Names of the face folders under OUT (written, or found complete when skipped)."""
    seconds: float = 0.0
    """Wall time spent on the photo in this run (0 for skipped and not-run photos)."""
    error: str | None = None
    """One-line reason for ``failed`` (and ``not run``: "interrupted ...")."""
    faces_in_photo: int = 0
    """Faces found in the photo (``done`` and ``failed`` photos that were run); more than
    :attr:`faces` when only the largest was processed (no ``--all-faces``)."""
    notes: tuple[str, ...] = ()
    """One-line notices about the result, for the console (not in the summary)."""

    @property
    def faces(self) -> int:
        return len(self.folders)

    def to_json(self) -> dict[str, Any]:
        """The photo's row of ``summary.json``: photo, status, faces, folders, seconds, error."""
        return {"photo": str(self.photo), "status": self.status, "faces": self.faces, "folders": list(self.folders),
                "seconds": round(self.seconds, 3), "error": self.error}

    @classmethod
    def of(cls, photo: Path, result: PhotoResult, seconds: float) -> "PhotoRecord":
        """The record of a photo that was run: ``done`` or ``failed`` with ``result``'s error, its
        folders, faces found and notes (the result itself, with its textures, is not kept)."""
        return cls(photo, DONE if result.ok else FAILED, folders=[f.folder.name for f in result.faces],
                   seconds=seconds, error=result.error, faces_in_photo=int(result.faces_in_photo),
                   notes=tuple(result.notes))


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
        """Photos per status (every status, 0 included), in one pass over the records."""
        c = Counter(r.status for r in self.records)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def failed(self) -> list[PhotoRecord]:
        return [r for r in self.records if r.status == FAILED]

    def head_json(self) -> dict[str, Any]:
        """``summary.json`` without its ``photos`` rows: command, out, started, seconds,
        overwrite, interrupted, counts."""
        return {"command": self.command, "out": str(self.out), "started": self.started,
                "seconds": round(self.seconds, 3), "overwrite": self.overwrite, "interrupted": self.interrupted,
                "counts": self.counts()}

    def to_json(self) -> dict[str, Any]:
        """``summary.json`` as one dict (:meth:`head_json` and every row; :func:`write_summary`
        writes the same row by row)."""
        return {**self.head_json(), "photos": [r.to_json() for r in self.records]}


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


def photo_key(photo: Path) -> str:
    """What makes two photo paths the same file: the path with links and ``..`` resolved (a string,
    the smallest thing to keep per photo of a large batch)."""
    try:
        return os.path.realpath(photo)
    except OSError:
        return os.path.abspath(photo)


def iter_unique(photos: Iterable[Path], seen: set[str] | None = None) -> Iterator[Path]:
    """``photos`` as Paths, lazily, without repeats of the same file (a photo named twice, or via a
    folder and by name). ``seen``: the keys (:func:`photo_key`) met so far, updated in place."""
    seen = set() if seen is None else seen
    for p in photos:
        p = Path(p)
        key = photo_key(p)
        if key not in seen:
            seen.add(key)
            yield p


def unique_photos(photos: Iterable[Path]) -> list[Path]:
    """``photos`` without repeats of the same file, as a list (:func:`iter_unique`)."""
    return list(iter_unique(photos))


def run_batch(photos: Iterable[Path], out: Path, work: Callable[[Path, Callable[[str], None]], PhotoResult], *,
              all_faces: bool = False, overwrite: bool = False, command: str = "",
              on_photo: Callable[[Path], None] | None = None, on_stage: Callable[[str], None] | None = None,
              on_record: Callable[[PhotoRecord], None] | None = None) -> BatchResult:
    """Run ``work(photo, on_stage)`` on each photo not yet finished under ``out``.

    Args:
        photos: the photos, in order (any iterable, pulled one at a time; repeats of the same file
            are dropped).
        out: the output root (face folders ``OUT/<stem>`` or ``OUT/<stem>_face<i>``).
        work: the per-photo function; returns a :class:`~facerefiner.pipeline.PhotoResult`
            (user errors in ``.error``) and writes the photo's face folders under ``out``.
            Its result is dropped once the photo's :class:`PhotoRecord` is made.
        all_faces: how ``work`` names folders (decides what "finished" means).
        command: ``unwrap`` or ``refine`` (recorded in the summary; see :func:`finished_folders`).
        overwrite: redo finished photos instead of skipping them.
        on_photo: called with each photo before it is run or skipped.
        on_stage: passed through from ``work``'s stage callback.
        on_record: called with each photo's record as soon as it is known.

    Returns:
        A :class:`BatchResult`; on Ctrl-C, ``interrupted`` is True and the photo being processed
        and the ones after it (the rest of ``photos``, enumerated but not read) are ``not run``
        (the KeyboardInterrupt is not re-raised).

    Whether a photo is finished is decided when it comes up; a photo whose stem an earlier photo
    of this batch has written is not skipped (it is run, and the last one wins), so two photos
    with the same stem do not skip each other.
    """
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    out = Path(out)
    res = BatchResult(out=out, records=[], command=command, overwrite=overwrite, started=started)
    source = iter_unique(photos)
    produced: set[str] = set()  # stems written in this run
    last_stage = [""]
    current: Path | None = None  # the photo pulled and not yet recorded

    def stage(s: str) -> None:
        last_stage[0] = s
        if on_stage is not None:
            on_stage(s)

    def emit(rec: PhotoRecord) -> None:
        nonlocal current
        res.records.append(rec)
        current = None
        if on_record is not None:
            on_record(rec)

    try:
        for photo in source:
            current = photo
            last_stage[0] = ""
            if on_photo is not None:
                on_photo(photo)
            folders = None if overwrite or photo.stem in produced else finished_folders(photo, out, all_faces, command)
            if folders is not None:
                emit(PhotoRecord(photo, SKIPPED, folders=folders))
                continue
            produced.add(photo.stem)
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
            rec = PhotoRecord.of(photo, r, time.perf_counter() - t0)
            del r  # the result's textures and geometry: not kept past the record
            emit(rec)
    except KeyboardInterrupt:
        res.interrupted = True
        where = f" during {last_stage[0]}" if last_stage[0] else ""
        first = True
        if current is not None:
            res.records.append(PhotoRecord(current, NOT_RUN, error=f"interrupted{where}"))
            first = False
        for photo in source:  # the photos not pulled yet: listed, not read
            res.records.append(PhotoRecord(photo, NOT_RUN, error=f"interrupted{where}" if first else "interrupted"))
            first = False
    res.seconds = time.perf_counter() - t_start
    return res


def summary_csv(result: BatchResult) -> str:
    """``summary.csv``'s text: one row per photo, columns :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    _write_csv(buf, result)
    return buf.getvalue()


def _write_csv(f: Any, result: BatchResult) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in result.records:
        w.writerow([str(r.photo), r.status, r.faces, ";".join(r.folders), f"{r.seconds:.3f}", r.error or ""])


def _write_json(f: Any, result: BatchResult) -> None:
    """``summary.json``: :meth:`BatchResult.head_json`'s keys, then ``photos``, one row per line."""
    head = json.dumps(result.head_json(), indent=2)
    f.write(head[:-2] + ',\n  "photos": [')  # head ends with "\n}"
    for i, r in enumerate(result.records):
        f.write(("\n    " if i == 0 else ",\n    ") + json.dumps(r.to_json()))
    f.write("\n  ]\n}\n" if result.records else "]\n}\n")


def write_summary(out: Path, result: BatchResult) -> tuple[Path, Path]:
    """Write ``OUT/summary.json`` and ``OUT/summary.csv`` (each atomically, row by row); returns
    their paths.

    Raises:
        OutputError: they cannot be written.
    """
    out = Path(out)
    pj, pc = out / SUMMARY_JSON, out / SUMMARY_CSV
    try:
        with atomic_open(pj) as f:
            _write_json(f, result)
        with atomic_open(pc) as f:
            _write_csv(f, result)
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
