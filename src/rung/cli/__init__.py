"""The ``rung`` command: a thin layer over the Python API.

Each verb group lives in its own module. Errors of ours (``RungError``)
print as one line and exit non-zero; anything else prints one line too,
unless ``--debug`` asks for the traceback. Messages are printed as text,
not Rich markup: ``pip install 'rung[postgres]'`` must keep its brackets.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from rung.cli import adopt as _adopt
from rung.cli import assess as _assess
from rung.cli import certify as _certify
from rung.cli import deliver as _deliver
from rung.cli import demo as _demo
from rung.cli import drift as _drift
from rung.cli import loop as _loop
from rung.cli import models as _models
from rung.cli import predict as _predict
from rung.cli import project as _project
from rung.cli import serve as _serve
from rung.cli import ui as _ui
from rung.cli.output import err_console, one_line

__all__ = ["app", "main"]

app = typer.Typer(
    name="rung",
    help="Self-hosted MLOps: from a training script to Level 4, full MLOps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    """Self-hosted MLOps: from a training script to Level 4, full MLOps."""


_project.register(app)
_demo.register(app)
_models.register(app)
_predict.register(app)
_adopt.register(app)
_certify.register(app)
_serve.register(app)
_deliver.register(app)
_loop.register(app)
_drift.register(app)
_assess.register(app)
_ui.register(app)


def main() -> None:
    from rung.errors import RungError

    debug = "--debug" in sys.argv
    try:
        app(prog_name="rung")
    except RungError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(one_line(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(one_line(str(exc)))} (run again with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(70)
