"""``skops.io``, imported without PyTorch.

skops builds its list of trusted scikit-learn types when it is first
imported, by walking every module of scikit-learn; the walk imports
``sklearn.externals.array_api_compat.torch``, which imports PyTorch whenever
it is installed. That is some 4 s and 650 MB in every process that saves or
loads a scikit-learn model (each step worker, the gateway, ``rung predict``),
for a module none of them uses. :func:`skops_io` keeps that one module from
loading during skops' walk (the walk skips modules that fail to import) and
lets it load normally afterwards, for anyone who does use it.
"""

from __future__ import annotations

import importlib.abc
import sys
from types import ModuleType
from typing import Any

__all__ = ["skops_io"]

_SKIPPED = "sklearn.externals.array_api_compat.torch"


class _SkipDuringWalk(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == _SKIPPED or fullname.startswith(_SKIPPED + "."):
            raise ImportError(f"{fullname} is not imported while skops lists scikit-learn's types")
        return None


def skops_io() -> ModuleType:
    """The ``skops.io`` module (imported on first use)."""
    module = sys.modules.get("skops.io")
    if module is not None:
        return module
    if "torch" in sys.modules:  # nothing to save: PyTorch is loaded already
        import skops.io

        return skops.io
    finder = _SkipDuringWalk()
    sys.meta_path.insert(0, finder)
    try:
        import skops.io
    finally:
        sys.meta_path.remove(finder)
    return skops.io
