"""``facerefiner relight``: new views of a face folder's albedo under another light."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from .common import EXIT_FAILED, EXIT_OK, err, given_face_folders, per_folder, usage_error
from .main import app


def _parse_yaws(text: str) -> tuple[float, ...]:
    try:
        yaws = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        usage_error(f"--yaw: expected comma-separated degrees (e.g. 0,30,-30), got {text!r}")
    if not yaws or any(abs(y) > 90 for y in yaws):
        usage_error(f"--yaw: expected 1 or more angles between -90 and 90 degrees, got {text!r}")
    return yaws


@app.command("relight")
def relight_cmd(
    folders: List[Path] = typer.Argument(..., help="Face folders OUT/<face> made by refine (with albedo.png), or OUT roots."),
    light: str = typer.Option("left", "--light", help="left, right, top, front (a white key light with some ambient) or a light.json file (another photo's light)."),
    yaw: str = typer.Option("0,30,-30", "--yaw", help="Views, degrees the head is turned (positive: toward the image's right), comma-separated."),
    size: int = typer.Option(512, "--size", help="Side of each view in pixels."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The PNG to write (one folder only; default: FOLDER/relit_<light>.png)."),
) -> None:
    """Render a face folder's de-lit albedo (albedo.png) on its mesh under a new light: one PNG with a view per yaw.

    The light is in the photo's camera frame (x right, y down, z away from the camera) and stays put while the views turn the head."""
    import io as _io
    import json

    from PIL import Image

    from ..errors import FaceRefinerError, InputError
    from ..io import atomic_write_bytes, check_writable_dir
    from ..light import Light, named_light
    from ..metrics import folder_layout, geometry_from_folder, read_albedo, read_report
    from ..unwrap import texel_normals
    from ..views import relit_views

    yaws = _parse_yaws(yaw)
    if not 64 <= size <= 2048:
        usage_error(f"--size must be between 64 and 2048, got {size}")
    given: Light | None = None
    light_name = light
    if light.endswith(".json") or Path(light).is_file():
        p = Path(light)
        if not p.is_file():
            usage_error(f"{p}: no such file (--light)")
        try:
            given = Light.from_json(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, InputError) as e:
            usage_error(f"{p}: not a light.json ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        light_name = p.stem
    else:
        try:
            named_light(light, ((0.0, 0.0, -1.0),))
        except ValueError as e:
            usage_error(f"--{e}")
    todo, failed = given_face_folders(folders)
    if out is not None:
        if len(todo) > 1:
            usage_error(f"--out needs exactly one folder, got {len(todo)}")
        if out.suffix.lower() != ".png":
            usage_error(f"{out}: --out must end in .png")
        try:
            check_writable_dir(out.parent if str(out.parent) else Path("."))
        except FaceRefinerError as e:
            usage_error(str(e))
    for msg in failed:
        err.print(f"[red]failed[/red] {escape(msg)}", highlight=False)
    done = 0
    for folder in todo:
        def work(folder=folder) -> Path:
            alb, _ = read_albedo(folder)
            geo = geometry_from_folder(folder)
            layout = folder_layout(folder, read_report(folder))
            normals = texel_normals(geo, layout, alb.shape[-1])
            lt = given if given is not None else named_light(light, normals)
            img = relit_views(alb, normals, geo, layout, lt, yaws, size)
            dest = out or folder / f"relit_{light_name}.png"
            buf = _io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            atomic_write_bytes(dest, buf.getvalue())
            return dest

        dest = per_folder(folder, work, failed)
        if dest is not None:
            done += 1
            err.print(f"[green]ok[/green] {escape(str(dest))}", highlight=False)
    err.print(f"{done} relit, {len(failed)} failed", highlight=False)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
