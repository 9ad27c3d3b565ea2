"""Console helpers shared by the verbs: the batch's progress and per-photo lines, the end-of-run
summary (printed, and written to OUT/summary.json, OUT/summary.csv and OUT/index.html), exit codes."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Iterable, Sequence, Sized

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..batch import DONE, FAILED, NOT_RUN, SKIPPED, BatchResult, PhotoRecord, run_batch
from ..pipeline import PhotoResult, PhotoSource

err = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130

_interrupt_said = False


def usage_error(msg: str) -> None:
    err.print(f"[red]error:[/red] {escape(msg)}", highlight=False)
    raise typer.Exit(EXIT_USAGE)


def face_folders(path: Path) -> list[Path]:
    """``path`` itself when it is a face folder (has report.json), else its subfolders that are."""
    from ..folder import face_folders as found

    return found(path, itself=True)


def given_face_folders(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The face folders of the paths a verb was given (:func:`face_folders`), and a one-line
    reason for each path that holds none."""
    todo: list[Path] = []
    failed: list[str] = []
    for f in paths:
        found = face_folders(f)
        if found:
            todo += found
        elif not f.exists():
            failed.append(f"{f}: no such folder")
        else:
            failed.append(f"{f}: no facerefiner output here (no report.json in it or its subfolders)")
    return todo, failed


def per_folder(folder: Path, work: Callable[[], object], failed: list[str]) -> object | None:
    """``work()`` for one face folder; a user-facing failure (or running out of memory) is printed
    as one ``failed`` line, appended to ``failed``, and gives None."""
    from ..errors import FaceRefinerError

    try:
        return work()
    except FaceRefinerError as e:
        failed.append(str(e))
        err.print(f"[red]failed[/red] {escape(str(e))}", highlight=False)
    except MemoryError:
        failed.append(f"{folder}: out of memory")
        err.print(f"[red]failed[/red] {escape(str(folder))}: out of memory", highlight=False)
    return None


def say_interrupted() -> None:
    """Print "interrupted" once per run (``finish`` after a Ctrl-C, or ``main`` for one elsewhere)."""
    global _interrupt_said
    if not _interrupt_said:
        err.print("interrupted", highlight=False)
        _interrupt_said = True


def run_photos(photos: Iterable[Path], work: Callable[..., PhotoResult] | None, *, out: Path, command: str,
               all_faces: bool = False, overwrite: bool = False,
               engine: Callable[..., BatchResult] | None = None) -> BatchResult:
    """Run ``work(photo, on_stage[, on_step])`` on each photo not finished yet under ``out``
    (:func:`facerefiner.batch.run_batch`) with a progress bar (on a terminal; quiet in logs), and
    print each outcome as it comes. ``work`` taking three arguments also gets an ``on_step``
    callback for the optimisation's steps (scale, step, loss terms). A Ctrl-C ends the batch
    between photos or stages (``BatchResult.interrupted``); pass the result to :func:`finish`.

    ``photos``: a list, or a :class:`facerefiner.pipeline.PhotoSource` (streamed: the batch pulls
    the photos one at a time; on a terminal the progress bar's total is counted first with one
    listing of each folder). Two photos with the same stem write the same folder: a warning is
    printed when the second comes up (each stem met is kept, with its first photo).

    ``engine``: another engine's batch (``--engine ray``: :func:`facerefiner.ray_batch.run_batch_ray`
    with its settings bound), called as ``engine(photos, on_photo=..., on_record=...)``; ``work``
    is then unused (the engine's workers build their own)."""
    global _interrupt_said
    _interrupt_said = False
    total = None
    if err.is_terminal:
        total = photos.count() if isinstance(photos, PhotoSource) else len(photos) if isinstance(photos, Sized) else None
    stems: dict[str, Path] = {}  # stem -> the first photo of that stem (the Path its record holds too)
    with_steps = work is not None and len(inspect.signature(work).parameters) >= 3
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[stage]}"), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("photos", total=total, stage="")

        def on_photo(p: Path) -> None:
            first = stems.setdefault(p.stem, p)
            if first is not p:  # (the engines drop repeats of the same file before this)
                err.print(f"[yellow]warning:[/yellow] {escape(str(first))} and {escape(str(p))} both write "
                          f"{escape(str(Path(out) / p.stem))}; the last one wins", highlight=False)
            bar.update(task, description=p.name[:40], stage="")

        def stage(s: str) -> None:
            bar.update(task, stage=s)

        def step(rec: dict) -> None:
            bar.update(task, stage=f"pass {rec['pass'] + 1} scale {rec['scale']} step {rec['step'] + 1}/"
                                   f"{rec['steps']}  content {rec['content']:.3f} style {rec['style']:.3f} "
                                   f"render {rec['render']:.3f}")

        def on_record(r: PhotoRecord) -> None:
            p = escape(str(r.photo))
            if r.status == DONE:
                more = (f": [yellow]{len(r.folders)} of {r.faces_in_photo} faces[/yellow] (use --all-faces for "
                        "every face)" if r.faces_in_photo > len(r.folders) else "")
                for f in r.folders:
                    err.print(f"[green]ok[/green] {p} -> {escape(str(Path(out) / f))}{more}", highlight=False)
                for note in r.notes:
                    err.print(f"[yellow]notice:[/yellow] {escape(note)}", highlight=False)
            elif r.status == SKIPPED:
                err.print(f"[cyan]skipped[/cyan] {p}: {escape(', '.join(r.folders))} already done "
                          "(--overwrite redoes it)", highlight=False)
            else:
                err.print(f"[red]failed[/red] {escape(r.error or str(r.photo))}", highlight=False)
            bar.advance(task)

        if engine is not None:
            return engine(photos, on_photo=on_photo, on_record=on_record)

        def one(p: Path, on_stage: Callable[[str], None]) -> PhotoResult:
            return work(p, on_stage, step) if with_steps else work(p, on_stage)

        return run_batch(photos, out, one, all_faces=all_faces, overwrite=overwrite, command=command,
                         on_photo=on_photo, on_stage=stage, on_record=on_record)


ENGINES = ("local", "ray")
ENGINE_HELP = ("local: this process; ray: one task per photo on a Ray cluster (--address, else RAY_ADDRESS, else a "
               'local Ray for the run; pip install "facerefiner[ray]"), OUT on a filesystem every node sees.')
ADDRESS_HELP = "The Ray cluster's address for --engine ray (HOST:PORT or ray://...; default RAY_ADDRESS, else a local Ray)."
WORKERS_HELP = "Ray workers (actors) for --engine ray, each loading the models once (default: the cluster's CPUs)."
RETRIES_HELP = "With --engine ray: how many more times a photo whose worker died is tried before it is failed."


def check_engine(engine: str, address: str | None, workers: int | None, retries: int) -> None:
    """The engine options, checked before anything is written (a usage error, with the install
    command when ``--engine ray`` and Ray is missing)."""
    if engine not in ENGINES:
        usage_error(f"--engine must be local or ray, got {engine!r}")
    if engine == "local":
        if address is not None or workers is not None:
            usage_error("--address and --workers are for --engine ray")
        return
    if workers is not None and workers < 1:
        usage_error(f"--workers must be at least 1, got {workers}")
    if retries < 0:
        usage_error(f"--retries must be at least 0, got {retries}")
    from ..errors import FaceRefinerError
    from ..ray_batch import require_ray

    try:
        require_ray()
    except FaceRefinerError as e:
        usage_error(str(e))


def ray_engine(engine: str, recipe: object, *, out: Path, command: str, all_faces: bool, overwrite: bool,
               address: str | None, workers: int | None, retries: int) -> Callable[..., BatchResult] | None:
    """None for ``--engine local``; for ``ray`` the engine that :func:`run_photos` calls
    (:func:`check_engine` first)."""
    if engine == "local":
        return None
    from ..ray_batch import run_batch_ray

    def run(photos, *, on_photo=None, on_record=None) -> BatchResult:
        return run_batch_ray(photos, out, recipe, address=address, workers=workers, retries=retries,
                             all_faces=all_faces, overwrite=overwrite, command=command, on_photo=on_photo,
                             on_record=on_record)

    return run


def finish(result: BatchResult) -> None:
    """Write OUT/summary.json, OUT/summary.csv and OUT/index.html (with its pages past
    :data:`facerefiner.gallery.PER_PAGE` faces), print the counts and the failures' reasons, and
    exit: 0 none failed, 2 some failed, 130 interrupted (Ctrl-C)."""
    from ..batch import write_summary
    from ..errors import OutputError
    from ..gallery import write_index

    out = result.out
    written: list[str] = []
    try:
        written += [str(p) for p in write_summary(out, result)]
        # the gallery reads the summary's head and its failed and not-run rows only
        summary = {**result.head_json(),
                   "photos": (r.to_json() for r in result.records if r.status in (FAILED, NOT_RUN))}
        written.append(str(write_index(out, summary)))
    except OutputError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
    c = result.counts()
    faces = sum(r.faces for r in result.records if r.status == DONE)
    line = (f"{c[DONE]} done ({faces} face{'s' if faces != 1 else ''}), {c[SKIPPED]} skipped, {c[FAILED]} failed"
            + (f", {c[NOT_RUN]} not run" if c[NOT_RUN] else "")
            + f" of {len(result.records)} photo{'s' if len(result.records) != 1 else ''} in {result.seconds:.1f} s")
    err.print(line, highlight=False)
    if result.failed and len(result.records) > 1:  # (one photo: its line just above says it all)
        err.print("failures:", highlight=False)
        for r in result.failed:
            err.print(f"  {escape(r.error or str(r.photo))}", highlight=False)
    if written:
        err.print(f"wrote {escape(', '.join(written))}", highlight=False)
    if result.interrupted:
        say_interrupted()
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILED if result.failed else EXIT_OK)
