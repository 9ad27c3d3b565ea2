"""``OUT/index.html``: static pages of every face folder in an output root, paged.

One entry per face folder (a subfolder with a ``report.json``), whichever run made it, in name
order: a thumbnail (``thumb.jpg``: a small JPEG of ``views.png`` when present, else
``render.png``, written with the folder by whoever made it, :func:`facerefiner.folder.write_thumb`;
made here only for a folder without one, or whose source is newer: :func:`facerefiner.folder.ensure_thumb`),
links to ``texture.png``, ``mesh.glb``, ``mesh.obj`` and ``report.json``, a few facts from the
report, and its quality metrics when ``facerefiner eval`` has put them in (``report["metrics"]``).
The photos that failed in the last run (``OUT/summary.json``) are listed with their reasons.

Paging: up to :data:`PER_PAGE` faces, ``OUT/index.html`` shows them all (one page). More, and
they go on pages of :data:`PER_PAGE` faces, ``OUT/faces-00001.html``, ``faces-00002.html``, ...
(files beside the face folders, so the links stay ``<face>/<file>``), each linking the index and
its neighbours; ``index.html`` then holds the last run's summary and failures and one line per
page (its number and its first and last face). Pages are written one at a time (a page's HTML at
most in memory, besides the sorted folder names), each atomically, then the index; pages left
from a larger gallery are removed. For 100,000 faces: 1,000 pages of about 110 KB (with metrics)
and an index of one line (about 110 bytes) per page, plus the failures it lists, instead of one
page of about 110 MB (BENCHMARKS.md, "Ray").

The pages open from disk without a server: links are relative, the CSS is inline, there is no
JavaScript, and every file name is URL-quoted and HTML-escaped.
"""

from __future__ import annotations

import html
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from . import __version__
from .errors import InputError, OutputError
from .folder import (FILES, RENDER, THUMB_BOX, VIEWS, FaceReport, ensure_thumb, face_folders as folder_face_folders,
                     face_names, read_report)
from .io import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = ["INDEX", "PER_PAGE", "THUMB_BOX", "page_name", "face_folders", "metric_cells", "write_index"]

INDEX = "index.html"
#: Faces per page (a page is about 1.1 KB of HTML per face, plus its thumbnails, loaded lazily).
PER_PAGE = 100
#: Failures of the last run listed on the index (every one is in summary.csv and summary.json).
FAILED_SHOWN = 500
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
nav { margin: .6em 0; }
nav a, nav span { margin-right: 1em; }
.pages li { margin: .15em 0; }
.pages .range { color: #555; }
"""


face_folders = folder_face_folders  # (facerefiner.folder.face_folders: subfolders with a report.json, sorted)


def page_name(k: int) -> str:
    """The file name of gallery page ``k`` (1, 2, ...): ``faces-00001.html``."""
    return f"faces-{k:05d}.html"


def _url(*parts: str) -> str:
    """A relative URL to OUT/part/..., quoted and HTML-escaped (for an href or src attribute)."""
    return html.escape("/".join(quote(p, safe="") for p in parts), quote=True)


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


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


def _face_html(out: Path, name: str) -> str:
    """One face's entry: its facts, thumbnail, links and metrics (makes the thumbnail when the
    folder has none). One listing of the folder tells which files it has."""
    folder = out / name
    try:
        with os.scandir(folder) as it:
            files = {e.name for e in it}
    except OSError:
        files = set()
    try:
        report = read_report(folder)
    except InputError:
        report = {}
        facts = ["report.json unreadable"]
    else:
        facts = _facts(report)
    parts = [f'<div class="face">\n<h2>{_e(name)}</h2>', f'<p class="meta">{_e(" · ".join(facts))}</p>']
    thumb = ensure_thumb(folder, files)
    if thumb is not None:
        big = next((n for n in (VIEWS, RENDER) if n in files), thumb)
        parts.append(f'<a href="{_url(name, big)}"><img src="{_url(name, thumb)}" alt="{_e(name)}" '
                     f'loading="lazy"></a>')
    links = [f'<a href="{_url(name, f)}">{_e(f)}</a>' for f in LINKED if f in files]
    if links:
        parts.append(f'<p class="links">{" ".join(links)}</p>')
    metrics = FaceReport(report).metrics
    if metrics is not None:
        cells = metric_cells(metrics)
        parts.append("<table><tr>" + "".join(f"<th>{_e(k)}</th>" for k, _ in cells) + "</tr><tr>"
                     + "".join(f"<td>{_e(v)}</td>" for _, v in cells) + "</tr></table>")
    parts.append("</div>")
    return "\n".join(parts)


def _failed_html(photos: Iterable[dict[str, Any]], shown: int | None = None) -> str:
    """The last run's failed and not-run photos with their reasons (the first ``shown``, default
    :data:`FAILED_SHOWN`; a line says how many more, which summary.csv lists)."""
    shown = FAILED_SHOWN if shown is None else shown
    items = []
    more = 0
    for p in photos:
        if not isinstance(p, dict) or p.get("status") not in ("failed", "not run"):
            continue
        if len(items) >= shown:
            more += 1
            continue
        photo = str(p.get("photo", ""))
        reason = str(p.get("error") or p.get("status"))
        # The reason usually starts with the photo's path; show it once.
        if reason.startswith(photo + ": "):
            reason = reason[len(photo) + 2:]
        items.append(f'<li><b>{_e(photo)}</b> ({_e(p["status"])}): <span class="reason">{_e(reason)}</span></li>')
    if more:
        items.append(f"<li>… and {more} more (summary.csv lists every photo)</li>")
    if not items:
        return ""
    return '<h2>Not done in the last run</h2>\n<ul class="failed">\n' + "\n".join(items) + "\n</ul>"


def _document(title: str, body: str) -> str:
    """A whole HTML page: ``title``, the inline CSS, ``body`` and the footer."""
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{body}\n<footer>Made by facerefiner {_e(__version__)} on {_e(now)}. "
            "Metrics appear after <code>facerefiner eval OUT</code>.</footer>\n</body>\n</html>\n")


def _nav(k: int, pages: int) -> str:
    """Page ``k``'s links: the index, the previous and the next page."""
    parts = [f'<a href="{_url(INDEX)}">index</a>',
             f'<a href="{_url(page_name(k - 1))}">← page {k - 1}</a>' if k > 1 else "<span>← first page</span>",
             f'<span>page {k} of {pages}</span>',
             f'<a href="{_url(page_name(k + 1))}">page {k + 1} →</a>' if k < pages else "<span>last page →</span>"]
    return "<nav>" + " ".join(parts) + "</nav>"


def _summary_html(out: Path, summary: dict[str, Any] | None) -> list[str]:
    """The last run's line (command, time, counts, links to the summary files) and its failures."""
    if not summary:
        return []
    c = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    line = ", ".join(f"{c.get(k, 0)} {k}" for k in ("done", "skipped", "failed", "not run") if c.get(k))
    when = summary.get("started", "")
    cmd = summary.get("command") or "run"
    extra = " (interrupted)" if summary.get("interrupted") else ""
    files = ", ".join(f'<a href="{_url(n)}">{_e(n)}</a>' for n in ("summary.csv", "summary.json")
                      if (out / n).is_file())
    parts = [f'<p class="meta">Last run: {_e(cmd)} {_e(when)}{_e(extra)}: {_e(line or "no photos")}'
             + (f" ({files})" if files else "") + "</p>"]
    failed = _failed_html(summary.get("photos") or [])
    if failed:
        parts.append(failed)
    return parts


def _write(dst: Path, page: str) -> None:
    try:
        atomic_write_bytes(dst, page.encode("utf-8"))
    except OSError as e:
        raise OutputError(f"{dst}: cannot write the gallery page ({e.strerror or e})") from None


def write_index(out: Path, summary: dict[str, Any] | None = None, *, per_page: int = PER_PAGE) -> Path:
    """Write the gallery of output root ``out``: ``OUT/index.html`` and, past ``per_page`` faces,
    its pages ``OUT/faces-NNNNN.html`` (each atomically; thumbnails made for folders that lack one).

    Args:
        out: the output root.
        summary: the last run's summary, as in ``summary.json`` (its ``photos`` may be any
            iterable of rows; only the failed and not-run ones are read); default: read
            ``OUT/summary.json``.
        per_page: faces per page (at least 1).

    Returns:
        The path of ``OUT/index.html``.

    Raises:
        OutputError: a page cannot be written.
    """
    out = Path(out)
    per_page = max(1, int(per_page))
    if summary is None:
        from .batch import read_summary

        summary = read_summary(out)
    names = face_names(out)
    n = len(names)
    pages = max(1, math.ceil(n / per_page))
    root = out.resolve().name or str(out)
    title, h1 = f"facerefiner: {root}", f"facerefiner output: {root}"
    head = [f"<h1>{_e(h1)}</h1>",
            f'<p class="meta">{n} face folder{"s" if n != 1 else ""}'
            + (f" on {pages} pages of {per_page}" if pages > 1 else "") + "</p>"]
    head += _summary_html(out, summary)
    if pages == 1:
        body = "\n".join(head + [_face_html(out, nm) for nm in names])
    else:
        items = []
        for k in range(1, pages + 1):
            chunk = names[(k - 1) * per_page:k * per_page]
            nav = _nav(k, pages)
            page_body = "\n".join([f"<h1>{_e(h1)}</h1>", nav, *(_face_html(out, nm) for nm in chunk), nav])
            _write(out / page_name(k), _document(f"{title}, page {k} of {pages}", page_body))
            items.append(f'<li><a href="{_url(page_name(k))}">page {k}</a> <span class="range">({len(chunk)} '
                         f'face{"s" if len(chunk) != 1 else ""}: {_e(chunk[0])} … {_e(chunk[-1])})</span></li>')
        body = "\n".join(head + ['<h2>Pages</h2>\n<ol class="pages">', *items, "</ol>"])
    dst = out / INDEX
    _write(dst, _document(title, body))
    # pages of an earlier, larger gallery (always numbered 1, 2, ... without gaps)
    k = 1 if pages == 1 else pages + 1
    while True:
        try:
            (out / page_name(k)).unlink()
        except FileNotFoundError:
            break
        except OSError as e:
            log.info("%s: cannot remove an old gallery page (%s)", out / page_name(k), e)
            break
        k += 1
    return dst
