"""``facerefiner unwrap``: photo -> mesh.obj, camera.json, sampled texture, visibility, render."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..pipeline import UnwrapConfig, expand_inputs, unwrap_photo
from .common import finish, run_photos, usage_error
from .main import app

_D = UnwrapConfig()


@app.command("unwrap")
def unwrap_cmd(
    photos: List[str] = typer.Argument(..., help="Photos, folders of photos or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; each face gets OUT/<photo stem>/."),
    size: int = typer.Option(_D.size, "--size", help="Texture size S (S x S texels)."),
    all_faces: bool = typer.Option(_D.all_faces, "--all-faces", help="Every face of a photo into its own folder (<stem>_face0, ...); default: the largest face."),
    min_face: float = typer.Option(_D.min_face, "--min-face", help="Ignore faces smaller than this many pixels across."),
    head: str = typer.Option(UnwrapConfig.head, "--head", help="Head model: mediapipe (the 468-vertex face mask) or ict (ICT-FaceKit's whole head: ears, neck, scalp, eyes and teeth, with 53 ARKit blendshapes in mesh.glb)."),
    uv_layout: Optional[Path] = typer.Option(None, "--uv-layout", help="OBJ with UVs for MediaPipe's 468-vertex topology (e.g. canonical_face_model.obj)."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Image the size of the photo; white pixels are not trusted (hand, glasses, hair)."),
    occlusion: str = typer.Option("auto", "--occlusion", help="auto: find hands, hair, glasses, background and highlights in front of the face and leave them out (added to --mask; occlusion.png shows them); off: trust every pixel --mask does not hide."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo photos whose folders in OUT are already complete (default: skip them, so a rerun resumes)."),
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
    try:
        files = expand_inputs(photos)
    except FaceRefinerError as e:
        usage_error(str(e))
    if not files:
        usage_error("no photos given (no photo in " + ", ".join(photos) + ")")
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
    result = run_photos(files, lambda p, stage: unwrap_photo(p, out, cfg, layout=layout, on_stage=stage),
                        out=out, command="unwrap", all_faces=all_faces, overwrite=overwrite)
    finish(result)
