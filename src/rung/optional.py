"""Optional dependencies: imported in one place, and a missing one names the extra that installs it.

A plain ``pip install rung`` leaves out the PostgreSQL driver, Ray,
XGBoost, LightGBM and nvidia-ml-py. Where a feature needs one of them it
calls :func:`require`, so the user reads "… needs psycopg: pip install
'rung[postgres]'" instead of a bare ``No module named 'psycopg'``. The
table below is the one list of them; a test checks it against the extras
in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rung.errors import MissingDependency

__all__ = ["EXTRAS", "require", "require_sql_driver"]

# module imported -> (rung extra that installs it, the distribution's name on PyPI)
EXTRAS: dict[str, tuple[str, str]] = {
    "psycopg": ("postgres", "psycopg"),
    "ray": ("ray", "ray"),
    "xgboost": ("xgboost", "xgboost"),
    "lightgbm": ("lightgbm", "lightgbm"),
    "torch": ("torch", "torch"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnx", "onnxruntime"),
    "pynvml": ("gpu", "nvidia-ml-py"),
}


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` saying what ``purpose`` needs and how to install it.

    Only modules listed in :data:`EXTRAS` may be asked for (a ``KeyError``
    otherwise): a hint with a wrong extra would be worse than none.
    """
    extra, package = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, extra=extra, package=package, purpose=purpose) from exc


def require_sql_driver(url: str, *, purpose: str) -> None:
    """Check the driver of a SQLAlchemy URL before SQLAlchemy imports it (and fails with a bare ImportError)."""
    if url.startswith("postgresql+psycopg:"):
        require("psycopg", purpose=purpose)
