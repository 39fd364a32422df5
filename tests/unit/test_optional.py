"""rung.optional: a missing optional library is one error that names the extra to install."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from rung.errors import MissingDependency, RungError
from rung.optional import EXTRAS, require

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_optional_module_names_an_extra_that_pyproject_defines() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for module, (extra, package) in EXTRAS.items():
        assert extra in extras, f"{module}: extra '{extra}' is not in pyproject.toml"
        assert any(req.startswith(package) for req in extras[extra]), f"{module}: {package} is not in rung[{extra}]"


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_a_blocked_module_raises_the_hint(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` meets when the package is not installed
    with pytest.raises(MissingDependency) as caught:
        require(module, purpose="this feature")
    message = str(caught.value)
    assert isinstance(caught.value, RungError)
    assert f"pip install 'rung[{EXTRAS[module][0]}]'" in message and message.startswith("this feature needs")
    assert caught.value.module == module and caught.value.extra == EXTRAS[module][0]


def test_an_installed_module_is_returned() -> None:
    assert require("psycopg", purpose="PostgreSQL") is sys.modules["psycopg"]


def test_a_module_rung_does_not_know_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        require("numpy", purpose="arrays")
