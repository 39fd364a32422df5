"""Public names: every ``__all__`` names an attribute that imports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import rung

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(rung.__path__, prefix="rung.")
    # migrations run only under alembic; ``__main__`` runs the CLI when imported
    if ".migrations" not in name and not name.endswith("__main__")
)


def test_version() -> None:
    assert isinstance(rung.__version__, str)
    assert rung.__version__.count(".") >= 2


def test_top_level_all_names_importable_attributes() -> None:
    for name in getattr(rung, "__all__", []):
        assert hasattr(rung, name), name


@pytest.mark.parametrize("module_name", MODULES)
def test_module_all_names_importable_attributes(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        return  # nothing public declared (e.g. a namespace-only package)
    assert len(names) == len(set(names)), f"{module_name}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module_name}.__all__ names missing attributes: {missing}"
