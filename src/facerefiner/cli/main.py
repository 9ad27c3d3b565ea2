"""The ``facerefiner`` command. One module per verb (``cli/unwrap.py``, ...); this one wires them.

Exit codes: 0 all photos succeeded; 2 some photos failed (each failure is listed); 1 usage error.
"""

from __future__ import annotations

import logging
import sys

import typer

from .. import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="One photo of a face in, a complete UV texture for a 3D face mesh out.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facerefiner {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from . import refine, unwrap  # noqa: F401  (registers the verbs)


_register()


def main() -> None:
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
