"""The ``facerefiner`` command. One module per verb (``cli/unwrap.py``, ...); this one wires them.

Exit codes: 0 all photos succeeded (or were already done); 2 some photos failed (each failure is
listed, and in OUT/summary.csv); 1 usage error; 130 interrupted (Ctrl-C).
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
    from . import eval, prior, refine, relight, serve, unwrap  # noqa: F401  (registers the verbs)


_register()


def _click_errors() -> tuple[type, type]:
    """click's UsageError and ClickException, found through typer's public BadParameter (typer
    vendors click, so it is not importable as ``click`` everywhere)."""
    mro = typer.BadParameter.__mro__
    return (next(c for c in mro if c.__name__ == "UsageError"), next(c for c in mro if c.__name__ == "ClickException"))


def main() -> None:
    """Entry point: click's own usage errors (unknown option, bad value) exit 1 like ours, not 2,
    so that exit code 2 always means "some photos failed". Ctrl-C prints "interrupted" and exits
    130 (typer turns a KeyboardInterrupt into exit code 130; a batch writes its summary first)."""
    from .common import EXIT_INTERRUPTED, say_interrupted

    usage, click_error = _click_errors()
    try:
        rv = app(standalone_mode=False)
    except usage as e:
        e.show()
        sys.exit(1)
    except typer.Exit as e:
        rv = e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        rv = EXIT_INTERRUPTED
    except click_error as e:
        e.show()
        sys.exit(1)
    if rv == EXIT_INTERRUPTED:
        say_interrupted()
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
