"""The typed public API: ``rung.__all__`` exactly, names that resolve, and an ``import rung`` that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rung

EXPORTED = [
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


def test_exported_members() -> None:
    assert set(rung.__all__) == set(EXPORTED)
    assert len(rung.__all__) == len(EXPORTED)


def test_every_exported_name_resolves_to_its_defining_object() -> None:
    from rung.config import Settings, load_settings
    from rung.errors import RungError
    from rung.pipeline.dag import Pipeline
    from rung.pipeline.step import Step, StepContext, step
    from rung.project import Project

    expected = {"Project": Project, "Pipeline": Pipeline, "Step": Step, "StepContext": StepContext, "step": step,
                "Settings": Settings, "load_settings": load_settings, "RungError": RungError}  # fmt: skip
    for name in rung.__all__:
        assert getattr(rung, name) is not None, name
    for name, value in expected.items():
        assert getattr(rung, name) is value, name
    assert callable(rung.init)


def test_dir_lists_the_exports() -> None:
    listed = dir(rung)
    for name in EXPORTED:
        assert name in listed, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        rung.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("rung.no_such_name resolved")


def test_import_rung_stays_light() -> None:
    """The CLI imports rung first: pandas, MLflow and SQLAlchemy load only when a command needs them."""
    code = "import sys, rung; dir(rung); print(' '.join(sorted(m for m in ('pandas', 'mlflow', 'sqlalchemy') if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""


def test_project_is_a_context_manager_that_closes_its_store(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "rung.yaml").write_text("name: p\n")
    with rung.Project.open(root, overrides={"store.database_url": None}) as project:
        store = project.store
        assert project.runs() == []
    assert "store" not in project.__dict__
    with project:
        assert project.store is not store  # opened again on use after a close
    project.close()
    project.close()  # idempotent
