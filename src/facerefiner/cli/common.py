"""Console helpers shared by the verbs: progress, the end-of-run summary, exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..pipeline import PhotoResult

err = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2


def usage_error(msg: str) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(EXIT_USAGE)


def run_photos(photos: Sequence[Path], work: Callable[..., PhotoResult]) -> list[PhotoResult]:
    """Run ``work(photo, on_stage[, on_step])`` on each photo with a progress bar (on a terminal;
    quiet in logs) and print each outcome as it comes. ``work`` taking three arguments also gets an
    ``on_step`` callback for the optimisation's steps (scale, step, loss terms)."""
    import inspect

    with_steps = len(inspect.signature(work).parameters) >= 3
    results: list[PhotoResult] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[stage]}"), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("photos", total=len(photos), stage="")
        for p in photos:
            bar.update(task, description=p.name[:40])
            def stage(s: str) -> None:
                bar.update(task, stage=s)

            def step(rec: dict) -> None:
                bar.update(task, stage=f"pass {rec['pass'] + 1} scale {rec['scale']} step {rec['step'] + 1}/"
                                       f"{rec['steps']}  content {rec['content']:.3f} style {rec['style']:.3f} "
                                       f"render {rec['render']:.3f}")

            r = work(p, stage, step) if with_steps else work(p, stage)
            results.append(r)
            if r.ok:
                for f in r.faces:
                    err.print(f"[green]ok[/green] {p} -> {f.folder}", highlight=False)
            else:
                err.print(f"[red]failed[/red] {r.error}", highlight=False)
            bar.advance(task)
    return results


def finish(results: list[PhotoResult]) -> None:
    ok = sum(r.ok for r in results)
    failed = [r for r in results if not r.ok]
    faces = sum(len(r.faces) for r in results)
    err.print(f"{ok} of {len(results)} photos done ({faces} faces), {len(failed)} failed", highlight=False)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
