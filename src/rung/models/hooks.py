"""Code a team wrote that travels with its models: the prepare hook, imported from a file by path.

Apart from :mod:`rung.models.trained` so that what loads a version
(:mod:`rung.models.loaded`) needs neither MLflow nor the flavours.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PrepareHook", "load_function"]


def load_function(file: Path, function: str, *, what: str) -> Callable[..., Any]:
    """``function`` from the Python file ``file``, imported under a name of its own.

    The module name is derived from the file's content, so two versions
    whose ``prepare`` differ never share a cached module, and importing by
    path needs no package layout around the file.
    """
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {file}: {exc.strerror or exc}") from None
    name = f"rung_user_{hashlib.sha256(source).hexdigest()[:16]}_{file.stem}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{what}: {file} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(f"{what}: importing {file.name} failed: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ConfigError(f"{what}: {file.name} has no function '{function}'")
    return fn


@dataclass(frozen=True)
class PrepareHook:
    """``FILE.py:FUNCTION``: raw rows in, the model's features out; packaged with every version it trained.

    The function takes a frame of the model's raw input columns and returns
    the frame the model was fitted on (categories converted, columns
    derived). It must be deterministic and must not need the target: it
    runs again on every request.
    """

    file: Path
    function: str

    @classmethod
    def from_spec(cls, spec: str, root: Path) -> PrepareHook:
        file, sep, function = spec.rpartition(":")
        if not sep or not file.endswith(".py") or not function.isidentifier():
            raise ConfigError(f"train.prepare: {spec!r}: write FILE.py:FUNCTION, e.g. src/model.py:prepare")
        path = Path(file) if Path(file).is_absolute() else root / file
        if not path.is_file():
            raise ConfigError(f"train.prepare: {file} not found in {root}")
        return cls(path, function)

    @property
    def spec(self) -> str:
        """How the packaged model names it: the file's name (its copy sits in the model's ``code/``) and the function."""
        return f"{self.file.name}:{self.function}"

    def load(self) -> Callable[[pd.DataFrame], pd.DataFrame]:
        return load_function(self.file, self.function, what="train.prepare")
