"""``facerefiner unwrap``: photo -> mesh.obj, camera.json, sampled texture, visibility, render."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..configdoc import field_help
from ..pipeline import UnwrapConfig, photo_source, unwrap_photo
from .common import (ADDRESS_HELP, ENGINE_HELP, RETRIES_HELP, WORKERS_HELP, check_engine, finish, ray_engine, run_photos,
                     usage_error)
from .main import app

_D = UnwrapConfig()


@app.command("unwrap")
def unwrap_cmd(
    photos: List[str] = typer.Argument(..., help="Photos, folders of photos or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; each face gets OUT/<photo stem>/."),
    size: int = typer.Option(_D.size, "--size", help=field_help(UnwrapConfig, "size")),
    all_faces: bool = typer.Option(_D.all_faces, "--all-faces", help=field_help(UnwrapConfig, "all_faces")),
    min_face: float = typer.Option(_D.min_face, "--min-face", help=field_help(UnwrapConfig, "min_face")),
    head: str = typer.Option(UnwrapConfig.head, "--head", help=field_help(UnwrapConfig, "head")),
    uv_layout: Optional[Path] = typer.Option(None, "--uv-layout", help=field_help(UnwrapConfig, "uv_layout")),
    mask: Optional[Path] = typer.Option(None, "--mask", help=field_help(UnwrapConfig, "mask")),
    occlusion: str = typer.Option("auto", "--occlusion", help=field_help(UnwrapConfig, "occlusion")),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo photos whose folders in OUT are already complete (default: skip them, so a rerun resumes)."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
    retries: int = typer.Option(2, "--retries", help=RETRIES_HELP),
) -> None:
    """Reconstruct the face mesh and camera, unwrap the photo into UV space and render it back.

    Photos already done in OUT are skipped (--overwrite redoes them); OUT/summary.json, OUT/summary.csv and OUT/index.html are written at the end of every run.

    Every setting, photo path and the memory the run needs are checked before anything is written: a usage error exits 1 and leaves no OUT."""
    from ..errors import FaceRefinerError
    from ..io import check_writable_dir, ensure_writable_dir
    from ..heads import get_head
    from ..resources import check_memory, unwrap_memory_mb, unwrap_sizes

    if not 16 <= size <= 8192:
        usage_error(f"--size must be between 16 and 8192, got {size}")
    if occlusion not in ("auto", "off"):
        usage_error(f"--occlusion must be auto or off, got {occlusion!r}")
    check_engine(engine, address, workers, retries)
    try:
        files = photo_source(photos)  # checked now, listed lazily as the batch pulls the photos
        if files.first() is None:
            usage_error("no photos given (no photo in " + ", ".join(photos) + ")")
    except FaceRefinerError as e:
        usage_error(str(e))
    cfg = UnwrapConfig(size=size, all_faces=all_faces, min_face=min_face, head=head, uv_layout=uv_layout, mask=mask, occlusion=occlusion)
    try:
        check_writable_dir(out)
        layout = get_head(head).layout(uv_layout)
        if mask is not None and not mask.exists():
            usage_error(f"{mask}: no such file (--mask)")
        check_memory(unwrap_memory_mb(size), "--size", size, sizes=unwrap_sizes())
        ensure_writable_dir(out)
    except FaceRefinerError as e:
        usage_error(str(e))
    from ..ray_batch import UnwrapRecipe

    eng = ray_engine(engine, UnwrapRecipe(cfg=cfg, out=out), out=out, command="unwrap", all_faces=all_faces,
                     overwrite=overwrite, address=address, workers=workers, retries=retries)
    result = run_photos(files, lambda p, stage: unwrap_photo(p, out, cfg, layout=layout, on_stage=stage),
                        out=out, command="unwrap", all_faces=all_faces, overwrite=overwrite, engine=eng)
    finish(result)
