"""``OUT/index.html``: a static page of every face folder in an output root.

One entry per face folder (a subfolder with a ``report.json``), whichever run made it: a thumbnail
(``thumb.jpg``, a small JPEG made from ``views.png`` when present, else ``render.png``, written
into the face folder and remade when its source is newer), links to ``texture.png``, ``mesh.glb``,
``mesh.obj`` and ``report.json``, a few facts from the report, and its quality metrics when
``facerefiner eval`` has put them in (``report["metrics"]``). The photos that failed in the last
run (``OUT/summary.json``) are listed with their reasons.

The page opens from disk without a server: links are relative, the CSS is inline, there is no
JavaScript, and every file name is URL-quoted and HTML-escaped.
"""

from __future__ import annotations

import html
import io
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from . import __version__
from .errors import InputError, OutputError
from .folder import FILES, THUMB, FaceReport, face_folders as folder_face_folders, read_report
from .io import atomic_write_bytes

log = logging.getLogger(__name__)

INDEX = "index.html"
#: Largest thumbnail, (width, height) in pixels: a views.png strip stays a strip, render.png a square.
THUMB_BOX = (1600, 240)
#: Files linked from each face's entry, in this order (those present).
LINKED = FILES[:8]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 0 0 .3em; word-break: break-all; }
.meta, .links { color: #555; font-size: .9em; margin: .2em 0; }
.links a { margin-right: .8em; }
.face { border-top: 1px solid #ccc; padding: 1em 0; }
.face img { max-width: 100%; height: auto; display: block; margin: .4em 0; background: #eee; }
table { border-collapse: collapse; font-size: .9em; margin-top: .3em; }
th, td { padding: .15em .6em; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.failed li { margin: .2em 0; }
.failed .reason { color: #a00; }
footer { color: #777; font-size: .8em; margin-top: 2em; }
"""


face_folders = folder_face_folders  # (facerefiner.folder.face_folders: subfolders with a report.json, sorted)


def _url(*parts: str) -> str:
    """A relative URL to OUT/part/..., quoted and HTML-escaped (for an href or src attribute)."""
    return html.escape("/".join(quote(p, safe="") for p in parts), quote=True)


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def make_thumb(folder: Path) -> str | None:
    """Name of the image to show for a face folder: ``thumb.jpg`` (made or refreshed here from
    ``views.png`` or ``render.png``), or the source image itself when no thumbnail can be written;
    None when the folder has neither image."""
    src = next((folder / n for n in ("views.png", "render.png") if (folder / n).is_file()), None)
    if src is None:
        return None
    dst = folder / THUMB
    try:
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            return THUMB
        from PIL import Image

        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail(THUMB_BOX)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85, optimize=True)
        atomic_write_bytes(dst, buf.getvalue())
        return THUMB
    except Exception as e:  # noqa: BLE001  (a page without a thumbnail beats no page)
        log.info("%s: no thumbnail (%s); linking %s instead", folder, e, src.name)
        return src.name


def _num(x: Any, fmt: str) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞"
    return format(x, fmt)


def metric_cells(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) of the metrics shown per face ("–" for absent or skipped ones)."""
    g = lambda k: metrics.get(k) if isinstance(metrics.get(k), dict) else {}  # noqa: E731
    fid, idn, com, seam = g("fidelity"), g("identity"), g("completion"), g("seam")
    turned = idn.get("turned") if isinstance(idn.get("turned"), dict) else {}
    return [("PSNR", _num(fid.get("psnr"), ".2f")), ("SSIM", _num(fid.get("ssim"), ".4f")),
            ("ID", _num(idn.get("render"), ".3f")), ("ID +30°", _num(turned.get("+30"), ".3f")),
            ("ID −30°", _num(turned.get("-30"), ".3f")),
            ("ID +60°", _num(turned.get("+60"), ".3f")), ("ID −60°", _num(turned.get("-60"), ".3f")),
            ("fill PSNR", _num(com.get("psnr"), ".2f")),
            ("fill SSIM", _num(com.get("ssim"), ".4f")), ("seam local", _num(seam.get("local_ratio"), ".3f"))]


def _facts(report: dict[str, Any]) -> list[str]:
    r = FaceReport(report)
    out: list[str] = []
    ref = r.refine
    out.append("refine" if ref is not None else "unwrap")
    feats = ref.get("features") if ref is not None else None
    if isinstance(feats, dict):
        feats = feats.get("extractor")
    if isinstance(feats, str) and feats:
        out.append(f"features {feats}")
    dev = ref.get("device") if ref is not None else None
    if isinstance(dev, str) and dev:
        out.append(dev)
    if r.texture_size is not None:
        out.append(f"{r.texture_size} px")
    if r.visible_fraction is not None:
        out.append(f"visible {r.visible_fraction:.0%}")
    yaw = r.head_pose_deg.get("yaw")
    if isinstance(yaw, (int, float)):
        out.append(f"yaw {yaw:+.0f}°")
    if "timings_s" in report and isinstance(report["timings_s"], dict):
        out.append(f"{sum(r.timings_s.values()):.1f} s")
    if r.input is not None:
        out.append(f"from {r.input.name}")
    return out


def _face_html(folder: Path) -> str:
    name = folder.name
    try:
        report = read_report(folder)
    except InputError:
        report = {}
        facts = ["report.json unreadable"]
    else:
        facts = _facts(report)
    parts = [f'<div class="face">\n<h2>{_e(name)}</h2>', f'<p class="meta">{_e(" · ".join(facts))}</p>']
    thumb = make_thumb(folder)
    if thumb is not None:
        big = next((n for n in ("views.png", "render.png") if (folder / n).is_file()), thumb)
        parts.append(f'<a href="{_url(name, big)}"><img src="{_url(name, thumb)}" alt="{_e(name)}" '
                     f'loading="lazy"></a>')
    links = [f'<a href="{_url(name, f)}">{_e(f)}</a>' for f in LINKED if (folder / f).is_file()]
    if links:
        parts.append(f'<p class="links">{" ".join(links)}</p>')
    metrics = FaceReport(report).metrics
    if metrics is not None:
        cells = metric_cells(metrics)
        parts.append("<table><tr>" + "".join(f"<th>{_e(k)}</th>" for k, _ in cells) + "</tr><tr>"
                     + "".join(f"<td>{_e(v)}</td>" for _, v in cells) + "</tr></table>")
    parts.append("</div>")
    return "\n".join(parts)


def _failed_html(photos: Iterable[dict[str, Any]]) -> str:
    items = []
    for p in photos:
        if not isinstance(p, dict) or p.get("status") not in ("failed", "not run"):
            continue
        photo = str(p.get("photo", ""))
        reason = str(p.get("error") or p.get("status"))
        # The reason usually starts with the photo's path; show it once.
        if reason.startswith(photo + ": "):
            reason = reason[len(photo) + 2:]
        items.append(f'<li><b>{_e(photo)}</b> ({_e(p["status"])}): <span class="reason">{_e(reason)}</span></li>')
    if not items:
        return ""
    return '<h2>Not done in the last run</h2>\n<ul class="failed">\n' + "\n".join(items) + "\n</ul>"


def render_index(out: Path, summary: dict[str, Any] | None = None) -> str:
    """The page's HTML for output root ``out`` (makes missing thumbnails; writes nothing else)."""
    out = Path(out)
    folders = face_folders(out)
    head = [f"<h1>facerefiner output: {_e(out.resolve().name or out)}</h1>",
            f'<p class="meta">{len(folders)} face folder{"s" if len(folders) != 1 else ""}</p>']
    if summary:
        c = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
        line = ", ".join(f"{c.get(k, 0)} {k}" for k in ("done", "skipped", "failed", "not run") if c.get(k))
        when = summary.get("started", "")
        cmd = summary.get("command") or "run"
        extra = " (interrupted)" if summary.get("interrupted") else ""
        files = ", ".join(f'<a href="{_url(n)}">{_e(n)}</a>' for n in ("summary.csv", "summary.json")
                          if (out / n).is_file())
        head.append(f'<p class="meta">Last run: {_e(cmd)} {_e(when)}{_e(extra)}: {_e(line or "no photos")}'
                    + (f" ({files})" if files else "") + "</p>")
        failed = _failed_html(summary.get("photos") or [])
        if failed:
            head.append(failed)
    body = "\n".join(head + [_face_html(f) for f in folders])
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>facerefiner: {_e(out.resolve().name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{body}\n<footer>Made by facerefiner {_e(__version__)} on {_e(now)}. "
            "Metrics appear after <code>facerefiner eval OUT</code>.</footer>\n</body>\n</html>\n")


def write_index(out: Path, summary: dict[str, Any] | None = None) -> Path:
    """Write ``OUT/index.html`` atomically (and the face folders' missing thumbnails).

    Args:
        out: the output root.
        summary: the last run's summary (as in ``summary.json``); default: read ``OUT/summary.json``.

    Raises:
        OutputError: the page cannot be written.
    """
    out = Path(out)
    if summary is None:
        from .batch import read_summary

        summary = read_summary(out)
    page = render_index(out, summary)
    dst = out / INDEX
    try:
        atomic_write_bytes(dst, page.encode("utf-8"))
    except OSError as e:
        raise OutputError(f"{dst}: cannot write the gallery page ({e.strerror or e})") from None
    return dst

