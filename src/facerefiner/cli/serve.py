"""``facerefiner serve``: the local web app (:mod:`facerefiner.app`; needs the ``app`` extra)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..configdoc import field_help
from ..pipeline import RefineOptions
from .common import EXIT_USAGE, err, usage_error
from .main import app

_PRESETS = "quick, default, paper"


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: the network)."),
    port: int = typer.Option(7860, "--port", help="Port to listen on."),
    preset: str = typer.Option("default", "--preset", help=f"Preset selected when the page opens: {_PRESETS}."),
    features: str = typer.Option("auto", "--features", help="vgg16, patches or auto (vgg16 when weights resolve); loaded once at start."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights file (torchvision's vgg16-397923af.pth or Caffe-convention conv weights)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    max_upload_mb: float = typer.Option(20, "--max-upload-mb", help="Largest upload accepted, in MB."),
    head: str = typer.Option(RefineOptions.head, "--head", help=f"{field_help(RefineOptions, 'head')} Every run of the app uses it."),
    prior: Optional[Path] = typer.Option(None, "--prior", help="Face-texture prior (facerefiner prior build): structure for eyes, brows and lips a photo hides on both sides."),
) -> None:
    """Serve: a local web app: drop a photo, get the refined texture, a 3D view and a zip.

    One photo is refined at a time (others wait in the queue); each run works in its own temporary folder, deleted when the tab closes, after an hour, and when the server stops (Ctrl-C)."""
    from ..app import gradio_missing, use_private_gradio_temp

    use_private_gradio_temp()  # before Gradio is imported: it reads GRADIO_TEMP_DIR then too
    missing = gradio_missing()
    if missing:
        err.print(f"[red]error:[/red] {escape(missing)}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if preset not in ("quick", "default", "paper"):
        usage_error(f"--preset must be one of {_PRESETS}, got {preset!r}")
    if features not in ("vgg16", "patches", "auto"):
        usage_error(f"--features must be vgg16, patches or auto, got {features!r}")
    if not 1 <= port <= 65535:
        usage_error(f"--port must be between 1 and 65535, got {port}")
    if not 0 < max_upload_mb <= 4096:
        usage_error(f"--max-upload-mb must be between 0 and 4096, got {max_upload_mb}")
    if vgg_weights is not None and not vgg_weights.exists():
        usage_error(f"{vgg_weights}: no such file (--vgg-weights)")
    if prior is not None and not prior.is_file():
        usage_error(f"{prior}: no such file (--prior)")
    from ..heads import head_names

    if head not in head_names():
        usage_error(f"--head must be one of {', '.join(head_names())}, got {head!r}")

    from ..app import build_app, launch, shutdown
    from ..errors import FaceRefinerError

    try:
        demo = build_app(preset=preset, features=features, vgg_weights=vgg_weights, device=device, prior=prior, head=head)
    except FaceRefinerError as e:
        usage_error(str(e))
    notice = demo.face_app.notice
    if notice:
        err.print(f"[yellow]notice:[/yellow] {escape(notice)}", highlight=False)
    try:
        launch(demo, host=host, port=port, max_upload_mb=max_upload_mb, prevent_thread_lock=True)
    except OSError as e:
        usage_error(f"cannot listen on {host}:{port} ({str(e).splitlines()[0]}); try another --port")
    def _term(signum, frame):  # a service manager's SIGTERM stops it like Ctrl-C (temporary files deleted)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    # Python leaves SIGINT ignored when the process started with it ignored (a background job of a
    # non-interactive shell, nohup, some CI runners): Ctrl-C / kill -INT must still stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    url = demo.local_url or f"http://{host}:{port}/"
    typer.echo(f"facerefiner app running at {url}  (features: {demo.face_app.features_name}; Ctrl-C stops it)")
    try:
        demo.block_thread()
    finally:
        shutdown(demo)  # the run folders and Gradio's temporary folder go with the server
