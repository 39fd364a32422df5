"""`rung assess --repo` on large repositories: bounded time (target: under 10 s).

Two repositories, each timed as a user runs it (the CLI in a fresh process,
JSON out, nothing stored):

- a generated ML monorepo: ``--packages`` x ``--modules`` Python modules of
  training, serving and test code (about 8 KB each), notebooks, a
  ``node_modules`` of ``--vendored`` files and a ``data/`` directory of
  ``--data-mb`` MB, which must be skipped, not read;
- this interpreter's site-packages: real third-party code (MLflow, Ray,
  pandas, scikit-learn, ...), tens of thousands of files, no git.

    .venv/bin/python bench/assess.py [--packages 200] [--modules 100] [--vendored 30000] [--data-mb 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from _common import console, rung_executable, table, verdict

MODULE = '''"""Training and scoring for segment {i}."""
import mlflow
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier


def load(url):
    return pd.read_sql("SELECT * FROM events_{i}", url)


def train(frame):
    with mlflow.start_run():
        model = HistGradientBoostingClassifier().fit(frame.drop(columns="y"), frame["y"])
        mlflow.sklearn.log_model(model, "model", registered_model_name="segment_{i}")
    return model
''' + "\n".join(f"\n\ndef feature_{k}(frame):\n    return frame['x{k}'].rolling(7).mean() * {k}" for k in range(60))


def generate(root: Path, packages: int, modules: int, vendored: int, data_mb: int) -> None:
    for p in range(packages):
        pkg = root / "src" / f"pkg{p}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        for m in range(modules):
            (pkg / f"mod{m}.py").write_text(MODULE.format(i=p * modules + m))
        tests = root / "tests" / f"pkg{p}"
        tests.mkdir(parents=True)
        (tests / "test_model.py").write_text("def test_predicts(model, frame):\n    assert model.predict(frame).shape\n")
    (root / "notebooks").mkdir()
    for n in range(50):
        (root / "notebooks" / f"explore_{n}.ipynb").write_text(json.dumps({"cells": [{"source": "df.describe()"}]}))
    for v in range(vendored):
        folder = root / "node_modules" / f"lib{v // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{v}.js").write_text("module.exports = function () { return 1 };\n" * 20)
    (root / "data").mkdir()
    chunk = b"1,2,3,4,5,6,7,8\n" * 65536
    with open(root / "data" / "events.csv", "wb") as handle:
        for _ in range(data_mb):
            handle.write(chunk)
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "ci.yml").write_text("on: [push]\njobs:\n  t:\n    steps:\n      - run: pytest\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)


def assess(path: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([rung_executable(), "assess", "--repo", str(path), "--format", "json", "--no-save"],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--modules", type=int, default=100)
    parser.add_argument("--vendored", type=int, default=30_000)
    parser.add_argument("--data-mb", type=int, default=500)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "monorepo"
        with console.status("generating the monorepo…"):
            generate(root, args.packages, args.modules, args.vendored, args.data_mb)
        for label, path in (("generated ML monorepo", root), ("site-packages", Path(sysconfig.get_paths()["purelib"]))):
            seconds, doc = assess(path)
            facts = doc["facts"]
            rows.append([label, f"{facts['files']:,}", f"{facts['python_files']:,}", f"{facts['scan_s']:.2f}",
                         f"{seconds:.2f}", "yes" if any("partial" in n for n in doc["partial"]) else "no",
                         verdict(seconds, 10.0)])
    result = table("rung assess --repo on large repositories",
                   ["repository", "files seen", "Python files", "scan s", "wall s (CLI)", "cut short", "< 10 s"])
    for row in rows:
        result.add_row(*row)
    console.print(result)


if __name__ == "__main__":
    main()
