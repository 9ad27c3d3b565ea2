"""``facerefiner refine``: photo -> everything ``unwrap`` writes, plus the refined complete texture."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..configdoc import field_help, settable_fields
from ..pipeline import MAX_EXPORT_SIZE, RefineOptions, photo_source, load_content, refine_photo
from ..presets import PRESETS, RefineConfig
from .common import (ADDRESS_HELP, ENGINE_HELP, RETRIES_HELP, WORKERS_HELP, check_engine, err, finish, ray_engine, run_photos,
                     usage_error)
from .main import app

_PRESETS = "paper, default, quick"


def _opt(name: str) -> str:
    return field_help(RefineOptions, name)


def _cfg(name: str) -> str:
    """A RefineConfig field's doc, with the paper preset's value."""
    return f"{field_help(RefineConfig, name)} (paper: {format_value(getattr(PRESETS['paper'], name))})"


def format_value(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


@app.command("refine")
def refine_cmd(
    photos: List[str] = typer.Argument(..., help="Photos, folders of photos or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; each face gets OUT/<photo stem>/."),
    preset: str = typer.Option("default", "--preset", help=f"Schedule: {_PRESETS} (paper = the authors' 2 scales x 150 steps x 5 passes)."),
    size: Optional[int] = typer.Option(None, "--size", help="Texture size S (default: the preset's, 512 except quick)."),
    content: Optional[Path] = typer.Option(None, "--content", help=_opt("content")),
    mask: Optional[Path] = typer.Option(None, "--mask", help=_opt("mask")),
    occlusion: str = typer.Option("auto", "--occlusion", help=_opt("occlusion")),
    device: str = typer.Option("auto", "--device", help=_opt("device")),
    steps: Optional[str] = typer.Option(None, "--steps", help=_cfg("steps")),
    passes: Optional[int] = typer.Option(None, "--passes", help=_cfg("passes")),
    seed: Optional[int] = typer.Option(None, "--seed", help=_cfg("seed")),
    content_weight: Optional[float] = typer.Option(None, "--content-weight", help=_cfg("content_weight")),
    style_weight: Optional[float] = typer.Option(None, "--style-weight", help=_cfg("style_weight")),
    render_weight: Optional[float] = typer.Option(None, "--render-weight", help=_cfg("render_weight")),
    features: Optional[str] = typer.Option(None, "--features", help=_cfg("features")),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights file (torchvision's vgg16-397923af.pth or Caffe-convention conv weights)."),
    vgg_format: str = typer.Option("auto", "--vgg-format", help="auto, torchvision or caffe: the input convention of --vgg-weights."),
    all_faces: bool = typer.Option(False, "--all-faces", help=_opt("all_faces")),
    min_face: float = typer.Option(64.0, "--min-face", help=_opt("min_face")),
    head: str = typer.Option(RefineOptions.head, "--head", help=_opt("head")),
    uv_layout: Optional[Path] = typer.Option(None, "--uv-layout", help=_opt("uv_layout")),
    prior: Optional[Path] = typer.Option(None, "--prior", help=_opt("prior")),
    no_delight: bool = typer.Option(False, "--no-delight", help="Skip the light estimation: no albedo.png or light.json, and mesh.glb carries texture.png (lit as in the photo)."),
    export_size: Optional[int] = typer.Option(None, "--export-size", help=_opt("export_size")),
    settings: Optional[List[str]] = typer.Option(None, "--set", help=f"FIELD=VALUE: any field of the refinement's config, over the preset and the options above (repeatable; e.g. --set lr=0.2 --set crop=128; none for an optional field); fields: {settable_fields(RefineConfig)}. report.json records the resolved config."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo photos whose folders in OUT are already complete (default: skip them, so a rerun resumes)."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help=WORKERS_HELP),
    retries: int = typer.Option(2, "--retries", help=RETRIES_HELP),
) -> None:
    """Refine: a complete, high-fidelity UV texture from one photo (FaceRefiner).

    Photos already done in OUT are skipped (--overwrite redoes them); OUT/summary.json, OUT/summary.csv and OUT/index.html are written at the end of every run.

    Every setting, photo path and the memory the run needs are checked before anything is written: a usage error exits 1 and leaves no OUT."""
    from ..errors import FaceRefinerError
    from ..features import get_extractor
    from ..io import check_writable_dir, ensure_writable_dir
    from ..heads import get_head
    from ..presets import preset as make_preset
    from ..refine import resolve_device
    from ..resources import check_memory, refine_memory_mb, refine_sizes

    if preset not in PRESETS:
        usage_error(f"--preset must be one of {_PRESETS}, got {preset!r}")
    if size is not None and not 32 <= size <= 4096:
        usage_error(f"--size must be between 32 and 4096, got {size}")
    if features is not None and features not in ("vgg16", "patches", "auto"):
        usage_error(f"--features must be vgg16, patches or auto, got {features!r}")
    check_engine(engine, address, workers, retries)
    steps_t = None
    if steps is not None:
        try:
            steps_t = tuple(int(v) for v in steps.split(","))
        except ValueError:
            usage_error(f"--steps must be comma-separated integers such as 60,20, got {steps!r}")
    if passes is not None and passes < 1:
        usage_error(f"--passes must be at least 1, got {passes}")
    if occlusion not in ("auto", "off"):
        usage_error(f"--occlusion must be auto or off, got {occlusion!r}")
    try:
        files = photo_source(photos)  # checked now, listed lazily as the batch pulls the photos
        if files.first() is None:
            usage_error("no photos given (no photo in " + ", ".join(photos) + ")")
    except FaceRefinerError as e:
        usage_error(str(e))
    try:
        cfg = make_preset(preset, size=size, seed=seed, content_weight=content_weight, style_weight=style_weight,
                          render_weight=render_weight, features=features, steps=steps_t, passes=passes)
    except ValueError as e:
        usage_error(f"{e} (check --size, --steps, --passes and --preset)")
    if settings:
        from ..presets import apply_overrides

        try:
            cfg = apply_overrides(cfg, settings)
        except ValueError as e:
            usage_error(f"--set {e}")
        if cfg.features not in ("vgg16", "patches", "auto"):
            usage_error(f"--set features must be vgg16, patches or auto, got {cfg.features!r}")
    if export_size is not None and not cfg.size <= export_size <= MAX_EXPORT_SIZE:
        usage_error(f"--export-size must be between the texture size {cfg.size} and {MAX_EXPORT_SIZE}, got {export_size}")
    opts = RefineOptions(size=cfg.size, all_faces=all_faces, min_face=min_face, head=head, uv_layout=uv_layout, mask=mask, occlusion=occlusion,
                         content=content, device=device, export_size=export_size, prior=prior,
                         delight=not no_delight)
    try:
        check_writable_dir(out)
        layout = get_head(head).layout(uv_layout)
        if mask is not None and not mask.exists():
            usage_error(f"{mask}: no such file (--mask)")
        if content is not None:
            load_content(content)
        loaded_prior = None
        if prior is not None:
            from ..prior import load_prior

            loaded_prior = load_prior(prior, layout)
        dev = resolve_device(device)
        if dev.type == "cpu":
            check_memory(refine_memory_mb(cfg, export_size=export_size or min(MAX_EXPORT_SIZE, cfg.size * get_head(head).export_scale)),
                         "--size", cfg.size,
                         sizes=refine_sizes(cfg))
        extractor = get_extractor(cfg.features, weights=vgg_weights, weights_format=vgg_format, device=dev)
        ensure_writable_dir(out)
    except FaceRefinerError as e:
        usage_error(str(e))
    if extractor[1].get("notice"):
        err.print(f"[yellow]notice:[/yellow] {extractor[1]['notice']}", highlight=False)
    from ..ray_batch import RefineRecipe

    info = extractor[1]
    recipe = RefineRecipe(opts=opts, config=cfg, out=out, features=info["extractor"],
                          vgg_weights=Path(info["weights"]) if info.get("weights") else None,
                          vgg_format=info.get("convention") or vgg_format)
    eng = ray_engine(engine, recipe, out=out, command="refine", all_faces=all_faces, overwrite=overwrite,
                     address=address, workers=workers, retries=retries)
    result = run_photos(files, lambda p, stage, step: refine_photo(p, out, opts, cfg, layout=layout,
                                                                   extractor=extractor, prior=loaded_prior,
                                                                   on_stage=stage,
                                                                   on_step=step),
                        out=out, command="refine", all_faces=all_faces, overwrite=overwrite, engine=eng)
    finish(result)
