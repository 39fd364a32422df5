"""rung: self-hosted MLOps in one package, from a training script to Level 4.

The public surface::

    import rung
    root = rung.init("churn", template="tabular-classification")
    with rung.Project.open(root) as project:
        result = project.run()

The names below are imported on first use, so that ``import rung`` (and
with it every CLI command) does not pay for pandas, MLflow or SQLAlchemy.
Type checkers read the ``TYPE_CHECKING`` imports instead and see the real
classes. What is not listed here lives in its own module: the release gate
in ``rung.certify``, reproduction in ``rung.reproduce``, fakes for tests in
``rung.testing``.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rung.config import Settings, load_settings
    from rung.errors import RungError
    from rung.pipeline.dag import Pipeline
    from rung.pipeline.step import Step, StepContext, step
    from rung.project import Project

from rung.version import __version__

_EXPORTS = {
    "Project": "rung.project",
    "Pipeline": "rung.pipeline.dag",
    "Step": "rung.pipeline.step",
    "StepContext": "rung.pipeline.step",
    "step": "rung.pipeline.step",
    "Settings": "rung.config",
    "load_settings": "rung.config",
    "RungError": "rung.errors",
}

__all__ = [
    "Project",
    "Pipeline",
    "Step",
    "StepContext",
    "step",
    "Settings",
    "load_settings",
    "RungError",
    "init",
    "__version__",
]


def init(
    name: str,
    template: str = "tabular-classification",
    directory: str | Path | None = None,
    *,
    rows: int = 4000,
    git: bool = True,
) -> Path:
    """Create a new project (what ``rung init`` does) in ``directory`` (default ``./name``); returns its root."""
    from rung.templates import create_project

    return create_project(name, template, Path(directory) if directory is not None else None, rows=rows, git=git)


def __getattr__(name: str) -> Any:
    """Import an exported name on first use, and keep it so the next lookup is a plain attribute."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rung' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
