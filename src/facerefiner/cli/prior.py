"""``facerefiner prior build``: a face-texture prior from photos (:mod:`facerefiner.prior`)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich.markup import escape

from ..pipeline import expand_inputs
from .common import EXIT_FAILED, EXIT_OK, err, usage_error
from .main import app

prior_app = typer.Typer(no_args_is_help=True, help="Face-texture priors: structure for what a photo never shows.")
app.add_typer(prior_app, name="prior")


@prior_app.command("build")
def build_cmd(
    photos: List[str] = typer.Argument(..., help="Photos, folders of photos or glob patterns (the largest face of each)."),
    out: Path = typer.Option(..., "--out", "-o", help="The prior file to write (.npz)."),
    size: int = typer.Option(256, "--size", help="Texture size the entries are stored at."),
    min_face: float = typer.Option(64.0, "--min-face", help="Ignore faces smaller than this many pixels across."),
    head: str = typer.Option("mediapipe", "--head", help="Head model whose layout the prior is in (mediapipe or ict); use the prior with the same --head."),
) -> None:
    """Build a prior: each photo's face unwrapped and mirrored into the UV layout, for `facerefiner refine --prior`.

    Use photos whose licence allows it: the prior holds their textures. A photo without a face is reported and left out; the file is written atomically once all photos are read."""
    from ..errors import FaceRefinerError
    from ..io import check_writable_dir
    from ..heads import get_head
    from ..prior import build_prior, save_prior

    if not 32 <= size <= 1024:
        usage_error(f"--size must be between 32 and 1024, got {size}")
    try:
        files = expand_inputs(photos)
        head_model = get_head(head)
        check_writable_dir(out.parent if str(out.parent) else Path("."))
    except FaceRefinerError as e:
        usage_error(str(e))
    if not files:
        usage_error("no photos given (no photo in " + ", ".join(photos) + ")")
    failed: list[str] = []

    def on_photo(p: Path, error: str | None) -> None:
        if error:
            failed.append(error)
            err.print(f"[red]failed[/red] {escape(error)}", highlight=False)

    try:
        prior = build_prior(files, size=size, min_face=min_face, on_photo=on_photo, head=head_model)
        save_prior(prior, out)
    except FaceRefinerError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    err.print(f"wrote {escape(str(out))}: {len(prior)} faces at {size} x {size}"
              + (f", {len(failed)} photos left out" if failed else ""), highlight=False)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
