"""The first five minutes through the real CLI: init, the first commit, readable output, clear hints.

Output goes to a pipe here (as in CI logs and ``| less``), with no COLUMNS
set, which is where Rich used to crop tables to 80 columns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import RUNG, one_line_error, rung_cli

DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def _piped(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout a pipe and no COLUMNS: what a CI log or ``| tee`` sees."""
    full = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | (env or {})
    return subprocess.run([RUNG, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _blocked(tmp_path: Path, module: str) -> dict[str, str]:
    """Environment for a child whose Python cannot import ``module`` (as on a plain ``pip install rung``)."""
    site = tmp_path / f"without-{module}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def test_postgres_without_psycopg_names_the_extra(project_dir: Path, tmp_path: Path) -> None:
    without = _blocked(tmp_path, "psycopg")
    env = without | {"RUNG_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
    one_line_error(rung_cli("runs", cwd=project_dir, env=env), "psycopg", "pip install 'rung[postgres]'")

    config = project_dir / "rung.yaml"
    config.write_text(config.read_text().replace(
        "source: data/train.csv", "source: {url: 'postgresql://postgres@127.0.0.1:5432/postgres', query: 'SELECT 1'}"))
    line = one_line_error(rung_cli("run", cwd=project_dir, env=without), "step 'ingest' failed", "pip install 'rung[postgres]'")
    assert "query failed" not in line


def test_ray_executor_without_ray_names_the_extra(project_dir: Path, tmp_path: Path) -> None:
    config = project_dir / "rung.yaml"
    config.write_text(config.read_text().replace("kind: local", "kind: ray"))
    one_line_error(rung_cli("run", cwd=project_dir, env=_blocked(tmp_path, "ray")), "pip install 'rung[ray]'")


def test_new_project_is_committed_and_its_output_is_whole_in_a_pipe(tmp_path: Path) -> None:
    made = _piped("init", "churn", "--rows", "1200", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "churn"
    assert _git(root, "rev-list", "--count", "HEAD") == "1"
    assert _git(root, "status", "--porcelain") == ""
    assert ".rung/" in (root / ".gitignore").read_text().splitlines()

    run = _piped("run", cwd=root)
    assert run.returncode == 0, run.stderr
    summary = next(line for line in run.stdout.splitlines() if "metrics:" in line)
    assert re.search(r"roc_auc 0\.\d{4}", summary), run.stdout

    lineage = json.loads(_piped("lineage", "churn:1", "--json", cwd=root).stdout)
    assert lineage["code"]["git_commit"] == _git(root, "rev-parse", "HEAD")
    assert lineage["code"]["git_dirty"] is False
    assert "no git commit" not in _piped("lineage", "churn:1", cwd=root).stdout

    models = _piped("models", cwd=root)
    assert models.returncode == 0, models.stderr
    assert "…" not in models.stdout, models.stdout
    assert "@champion" in models.stdout and "@challenger" in models.stdout, models.stdout
    assert DATE_TIME.search(models.stdout), models.stdout

    runs = _piped("runs", cwd=root)
    assert runs.returncode == 0, runs.stderr
    assert "…" not in runs.stdout, runs.stdout
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", runs.stdout), runs.stdout
    assert "churn:1" in runs.stdout and "roc_auc" in runs.stdout, runs.stdout


def test_columns_still_sets_the_width(project_dir: Path) -> None:
    narrow = _piped("runs", cwd=project_dir, env={"COLUMNS": "40"})
    assert narrow.returncode == 0, narrow.stderr
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 40, narrow.stdout


def test_first_commit_falls_back_to_a_rung_identity(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_")) and k != "EMAIL"}
    env |= {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.useConfigOnly", "GIT_CONFIG_VALUE_0": "true"}
    assert subprocess.run(["git", "var", "GIT_AUTHOR_IDENT"], env=env, capture_output=True).returncode != 0  # no identity at all
    made = subprocess.run([RUNG, "init", "churn", "--rows", "200"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    author = _git(tmp_path / "churn", "log", "-1", "--format=%an <%ae>")
    assert author == "rung <rung@localhost>"


def _existing_repository(root: Path) -> None:
    """A user's repository: training data, a training function, an ignore file, a commit, a staged change."""
    from rung.templates.datasets import churn

    (root / "data").mkdir(parents=True)
    churn(rows=600).to_csv(root / "data" / "train.csv", index=False)
    (root / "src").mkdir()
    (root / "src" / "model.py").write_text(
        "from sklearn.compose import make_column_selector, make_column_transformer\n"
        "from sklearn.ensemble import HistGradientBoostingClassifier\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import OneHotEncoder\n\n\n"
        "def fit(X, y):\n"
        "    encode = make_column_transformer((OneHotEncoder(handle_unknown='ignore', sparse_output=False),\n"
        "                                      make_column_selector(dtype_include=object)), remainder='passthrough')\n"
        "    return make_pipeline(encode, HistGradientBoostingClassifier(max_iter=50)).fit(X, y)\n"
    )
    (root / ".gitignore").write_text("*.pyc")  # no newline at the end: appending must not glue lines
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "mine"], cwd=root, check=True)
    (root / "notes.md").write_text("work in progress\n")
    subprocess.run(["git", "add", "notes.md"], cwd=root, check=True)


def test_init_in_an_existing_repository_adopts_its_data_and_training_code(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _existing_repository(root)
    head = _git(root, "rev-parse", "HEAD")

    wrong = _piped("init", "--data", "data/train.csv", "--target", "churnd", "--train", "src/model.py:fit", cwd=root)
    one_line_error(wrong, "churnd", "tenure_months, monthly_charges", "churned")
    assert not (root / "rung.yaml").exists()

    made = _piped("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/model.py:fit", cwd=root)
    assert made.returncode == 0, made.stderr
    assert "git add" in made.stdout and "rung.yaml" in made.stdout, made.stdout
    assert _git(root, "rev-parse", "HEAD") == head  # nothing committed behind the user's back
    assert _git(root, "diff", "--cached", "--name-only") == "notes.md"  # their staged change is untouched
    assert (root / ".gitignore").read_text().splitlines() == ["*.pyc", ".rung/"]

    again = _piped("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/model.py:fit", cwd=root)
    one_line_error(again, "already holds a rung project")
    assert (root / ".gitignore").read_text().splitlines() == ["*.pyc", ".rung/"]

    run = _piped("run", cwd=root)
    assert run.returncode == 0, run.stderr
    assert re.search(r"roc_auc 0\.\d{4}", run.stdout), run.stdout
    assert not _git(root, "status", "--porcelain", "--", ".rung")  # rung's state is ignored


def test_init_with_a_training_function_that_does_not_exist(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _existing_repository(root)
    one_line_error(_piped("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/model.py:train", cwd=root),
                    "src/model.py", "no function 'train'", "fit")
    one_line_error(_piped("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/nope.py:fit", cwd=root),
                    "src/nope.py", "not found")
    one_line_error(_piped("init", "--data", "data/train.csv", "--train", "src/model.py:fit", cwd=root), "--target")


def test_new_project_inside_a_repository_is_left_for_the_user_to_commit(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _existing_repository(root)
    head = _git(root, "rev-parse", "HEAD")
    made = _piped("init", "churn", "--rows", "200", cwd=root)
    assert made.returncode == 0, made.stderr
    assert _git(root, "rev-parse", "HEAD") == head
    assert not (root / "churn" / ".git").exists()
    assert "git add churn" in made.stdout, made.stdout
    assert ".rung/" in (root / "churn" / ".gitignore").read_text().splitlines()


def test_wrong_target_in_rung_yaml_lists_the_columns(project_dir: Path) -> None:
    config = project_dir / "rung.yaml"
    config.write_text(config.read_text().replace("target: churned", "target: churnd"))
    one_line_error(rung_cli("run", cwd=project_dir), "step 'validate' failed", "churnd",
                    "tenure_months, monthly_charges, contract, region, support_calls, age, paperless_billing, churned")


def test_n_a_in_a_numeric_column_stops_the_run_with_the_bad_values(project_dir: Path) -> None:
    data = project_dir / "data" / "train.csv"
    lines = data.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("monthly_charges")
    for i in range(1, 6):
        cells = lines[i].split(",")
        cells[column] = "n/a" if i < 5 else "unknown"
        lines[i] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n")
    result = rung_cli("run", cwd=project_dir)
    one_line_error(result, "step 'validate' failed", "monthly_charges: non-numeric values")
    assert "n/a" in result.stderr and "unknown" in result.stderr, result.stderr
    runs = json.loads(rung_cli("runs", "--json", cwd=project_dir).stdout)
    saved = json.loads((project_dir / ".rung" / "runs" / runs[0]["id"] / "validation.json").read_text())
    check = next(c for c in saved["checks"] if c["name"] == "non-numeric values")
    assert check["column"] == "monthly_charges" and check["failures"] == 5
    assert set(check["samples"]) >= {"n/a", "unknown"}

