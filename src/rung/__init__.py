"""rung: self-hosted MLOps in one package, from a training script to Level 4.

The public surface, imported lazily so that ``import rung`` (and the CLI)
stays fast::

    import rung
    rung.init("churn", template="tabular-classification")
    project = rung.Project.open("churn")
    result = project.run()
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

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

__all__ = [*_EXPORTS, "init", "__version__"]


def init(name: str, template: str = "tabular-classification", directory: Any = None, **options: Any) -> Any:
    """Create a new project (what ``rung init`` does); returns its directory."""
    from rung.templates import create_project

    return create_project(name, template, directory, **options)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rung' has no attribute {name!r}")
