"""Helpers shared by the benchmark scripts (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
console = Console(width=None if sys.stdout.isatty() else 110)  # files and pipes get the whole table


def rung_executable() -> str:
    """The ``rung`` script of the interpreter running the benchmark (the repo's venv)."""
    candidate = VENV_BIN / "rung"
    if not candidate.exists():
        raise SystemExit(f"no rung script next to {sys.executable}; run with the venv's python (.venv/bin/python bench/...)")
    return str(candidate)


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
    }


def verdict(value: float, target: float) -> str:
    return "[green]pass[/]" if value < target else "[red]FAIL[/]"


def table(title: str, columns: list[str], left: int = 1) -> Table:
    """A table whose first ``left`` columns are text and the rest figures."""
    t = Table(title=title, caption=machine())
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i < left else "right", no_wrap=i < left)
    return t


MODELS = {
    "boosted": "the template's ColumnTransformer + HistGradientBoostingClassifier (200 trees)",
    "linear": "ColumnTransformer + LogisticRegression (a light model: server overhead dominates)",
}


LINEAR = """from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression

    def HistGradientBoostingClassifier(**params):  # noqa: N802 (the template's name, a linear model)
        return SkPipeline([("impute", SimpleImputer()), ("linear", LogisticRegression(**params))])"""


def trained_project(work: Path, *, versions: int = 1, model: str = "boosted") -> Path:
    """``rung init churn`` (3,000 rows) in ``work`` and ``versions`` trained versions (new data order each time).

    ``model="linear"`` swaps the template's boosted trees for a logistic regression.
    """
    import subprocess

    import pandas as pd

    rung = rung_executable()
    subprocess.run([rung, "init", "churn", "--rows", "3000", "--no-git"], cwd=work, check=True, capture_output=True)
    project = work / "churn"
    if model == "linear":
        code = project / "pipeline.py"
        code.write_text(code.read_text().replace("from sklearn.ensemble import HistGradientBoostingClassifier", LINEAR))
        config = project / "rung.yaml"
        text = config.read_text()
        start, end = text.index("  params:"), text.index("evaluate:")
        config.write_text(text[:start] + "  params:\n    max_iter: 1000\n\n" + text[end:])
    for i in range(versions):
        if i:
            data = project / "data" / "train.csv"
            pd.read_csv(data).iloc[::-1].to_csv(data, index=False)
        subprocess.run([rung, "run"], cwd=project, check=True, capture_output=True)
    return project
