"""``facerefiner eval``: quality metrics of output folders, written into their report.json."""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..folder import is_face_folder
from .common import EXIT_FAILED, EXIT_OK, err, face_folders, given_face_folders, per_folder, usage_error
from .main import app


def _num(x: Any, fmt: str) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-"
    if math.isinf(x):
        return "inf"
    if math.isnan(x):
        return "-"
    return format(x, fmt)


def _row(name: str, m: dict[str, Any]) -> list[str]:
    fid, idn, com, seam = (m.get(k) or {} for k in ("fidelity", "identity", "completion", "seam"))
    turned = idn.get("turned") or {}
    return [name, _num(fid.get("psnr"), ".2f"), _num(fid.get("ssim"), ".4f"), _num(idn.get("render"), ".3f"),
            _num(turned.get("+30"), ".3f"), _num(turned.get("-30"), ".3f"), _num(turned.get("+60"), ".3f"),
            _num(turned.get("-60"), ".3f"), _num(com.get("psnr"), ".2f"),
            _num(com.get("ssim"), ".4f"), _num(com.get("detail"), ".3f"), _num(seam.get("ratio"), ".3f"),
            _num(seam.get("local_ratio"), ".3f"),
            _num((m.get("cost") or {}).get("wall_s"), ".1f")]


@app.command("eval")
def eval_cmd(
    folders: Optional[List[Path]] = typer.Argument(None, help="Output folders OUT/<face>, or OUT roots (every face folder in them)."),
    no_identity: bool = typer.Option(False, "--no-identity", help="Skip the identity metric (dlib face descriptors)."),
    photo: Optional[Path] = typer.Option(None, "--photo", help="The photo, when report.json's 'input' no longer points to it (one folder only)."),
) -> None:
    """Measure fidelity, identity, completion and seams of output folders; write them into each folder's report.json under "metrics" and print a table.

    Completion needs a folder made with --mask (any photo mask, e.g. one of facerefiner.metrics.probe_mask's kinds): its texture is scored on the texels an unmasked unwrap shows and the folder's V does not (fill PSNR, SSIM and detail ratio: 1 = as much fine detail as the photo there, 0 = a blur)."""
    from rich.console import Console
    from rich.table import Table

    from ..metrics import evaluate_folder

    if not folders:
        usage_error("no folders given (facerefiner eval OUT/<face> [...] or OUT)")
    if photo is not None and not photo.is_file():
        usage_error(f"{photo}: no such file (--photo)")
    todo, failed = given_face_folders(folders)
    n_bad = len(failed)
    if photo is not None and len(todo) > 1:
        usage_error(f"--photo needs exactly one folder, got {len(todo)}")
    for msg in failed:
        err.print(f"[red]failed[/red] {msg}", highlight=False)

    rows = []
    for folder in todo:
        def work(folder=folder):
            with err.status(folder.name, spinner="dots") if err.is_terminal else contextlib.nullcontext():
                return evaluate_folder(folder, identity=not no_identity, photo=photo)

        m = per_folder(folder, work, failed)
        if m is None:
            continue
        rows.append(_row(str(folder), m))
        err.print(f"[green]ok[/green] {folder}/report.json", highlight=False)

    if rows:
        table = Table(box=None, pad_edge=False)
        table.add_column("folder", no_wrap=True)
        for c in ("PSNR", "SSIM", "ID", "ID+30", "ID-30", "ID+60", "ID-60", "fill PSNR", "fill SSIM", "fill detail", "seam",
                  "seam loc", "wall s"):
            table.add_column(c, justify="right", no_wrap=True)
        for r in rows:
            table.add_row(*r)
        Console(width=None if sys.stdout.isatty() else 240).print(table)
    err.print(f"{len(rows)} of {len(todo) + n_bad} folders evaluated, {len(failed)} failed", highlight=False)
    _refresh_galleries(folders, todo)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _refresh_galleries(given: list[Path], evaluated: list[Path]) -> None:
    """Remake OUT/index.html (now with the metrics) for each output root given, and for each
    evaluated folder's parent that already has one."""
    from ..errors import OutputError
    from ..gallery import INDEX, write_index

    roots = {f for f in given if f.is_dir() and not is_face_folder(f) and face_folders(f)}
    roots |= {d.parent for d in evaluated if (d.parent / INDEX).is_file()}
    for root in sorted(roots):
        try:
            err.print(f"wrote {write_index(root)}", highlight=False)
        except OutputError as e:
            err.print(f"[yellow]warning:[/yellow] {e}", highlight=False)
