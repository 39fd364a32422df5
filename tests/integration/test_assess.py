"""``rung assess`` through the CLI: repositories at each maturity level, reports, history and bad input.

The fixtures under tests/fixtures/assess are small ML repositories written
to sit at one level each (notebooks only ▸ scripts with tests and CI ▸
tracked runs and a registry ▸ automated deployment); each is copied and
committed to git here, then scored on every model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rung_cli

FIXTURES = Path(__file__).parent.parent / "fixtures" / "assess"

# The levels each fixture is written to reach, and why the next one is out of reach.
EXPECTED = {
    "level0": {"azure": 0, "google": 0, "aws": 0, "gigaom": 0},  # notebooks, no git, no tests
    "level1": {"azure": 1, "google": 0, "aws": 1, "gigaom": 1},  # scripts + tests + CI; no tracking or registry
    "level2": {"azure": 2, "google": 0, "aws": 1, "gigaom": 2},  # MLflow, registry, DVC, pandera; manual release, no trigger
    "level3": {"azure": 3, "google": 1, "aws": 2, "gigaom": 2},  # CI gates and deploys on a schedule; no monitoring
}


def _repo(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    if name != "level0":
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
            subprocess.run(["git", *args], cwd=root, check=True, env=env)
    return root


def _assess(*args: str, cwd: Path | None = None, home: Path) -> dict[str, Any]:
    result = rung_cli("assess", *args, "--format", "json", cwd=cwd, env={"RUNG_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_repository_scores_its_level_on_every_model(name: str, tmp_path: Path) -> None:
    doc = _assess("--repo", str(_repo(name, tmp_path)), home=tmp_path / "home")
    assert doc["levels"] == EXPECTED[name], {m["model"]: [g["criterion"] for g in m["gaps"]] for m in doc["models"]}
    assert doc["schema"] == "rung.assess/1" and doc["mode"] == "repo"
    for c in doc["criteria"]:
        assert c["confidence"] in ("observed", "none"), c  # files never prove; people questions stay unknown
        if c["status"] in ("met", "partial"):
            assert c["evidence"], c
        if c["answer_only"]:
            assert c["status"] == "unknown"
    for m in doc["models"]:
        if m["level"] is not None and m["level"] < m["top"]:
            assert m["gaps"] and all(g["next_step"] for g in m["gaps"]), m


def test_answers_fill_in_people_and_process(tmp_path: Path) -> None:
    repo = _repo("level3", tmp_path)
    answers = tmp_path / "answers.yaml"
    answers.write_text("team.ds-de: yes\nteam.se-integration: no\nteam.production-metrics: yes\n"
                       "strategy.objectives: {answer: yes, note: every model has an owner}\n", encoding="utf-8")
    doc = _assess("--repo", str(repo), "--answers", str(answers), home=tmp_path / "home")
    azure = next(m for m in doc["models"] if m["model"] == "azure")
    people = next(d for d in azure["dimensions"] if d["name"] == "people")
    assert people["level"] == 2  # DS and DE work together; SE integration answered "no"
    assert doc["levels"]["azure"] == 2 and doc["levels"]["google"] == 0
    objectives = next(c for c in doc["criteria"] if c["id"] == "strategy.objectives")
    assert objectives["confidence"] == "stated" and objectives["evidence"][0]["detail"] == "every model has an owner"


def test_history_shows_how_levels_moved(tmp_path: Path) -> None:
    repo = _repo("level1", tmp_path)
    home = tmp_path / "home"
    assert _assess("--repo", str(repo), home=home)["levels"]["azure"] == 1
    (repo / "churn" / "track.py").write_text("import mlflow\nmlflow.log_metric('auc', 0.8)\n"
                                             "mlflow.register_model('runs:/x/model', 'churn')\n", encoding="utf-8")
    (repo / "dvc.yaml").write_text("stages:\n  train:\n    cmd: python -m churn.train\n", encoding="utf-8")
    second = _assess("--repo", str(repo), home=home)
    assert second["levels"]["gigaom"] >= 1
    history = _assess("--repo", str(repo), "--history", home=home)
    assert [h["levels"] for h in history] == [_first(history), second["levels"]]
    assert history[0]["levels"] != history[1]["levels"]
    table = rung_cli("assess", "--repo", str(repo), "--history", env={"RUNG_HOME": str(home), "COLUMNS": "200"})
    assert table.returncode == 0 and "▲" in table.stdout


def _first(history: list[dict[str, Any]]) -> dict[str, Any]:
    return history[0]["levels"]


def test_markdown_and_html_reports_are_complete_and_offline(tmp_path: Path) -> None:
    repo = _repo("level2", tmp_path)
    env = {"RUNG_HOME": str(tmp_path / "home")}
    md = rung_cli("assess", "--repo", str(repo), "--format", "md", env=env)
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("# MLOps maturity") and "## Next steps" in md.stdout and "`tracking.experiments`" in md.stdout
    rung_cli("assess", "--repo", str(repo), env=env)  # a second result, so the page has a history chart
    out = tmp_path / "report.html"
    html = rung_cli("assess", "--repo", str(repo), "--format", "html", "-o", str(out), env=env)
    assert html.returncode == 0, html.stderr
    page = out.read_text(encoding="utf-8")
    assert page.count('<svg class="ladder"') == 4 and '<svg class="history"' in page
    for fetch in ("<script", "<link", "src=", "@import", "url("):
        assert fetch not in page, fetch  # nothing to fetch: the page works without a network
    assert "Google MLOps levels" in page and "Next steps" in page


def test_the_scorecard_table_and_the_catalogue_print(tmp_path: Path) -> None:
    result = rung_cli("assess", "--repo", str(_repo("level1", tmp_path)), "--no-save",
                      env={"RUNG_HOME": str(tmp_path / "home"), "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Microsoft Azure MLOps maturity model" in result.stdout and "Next steps" in result.stdout
    assert not (tmp_path / "home" / "rung.db").exists() or "level1" not in _stored(tmp_path / "home")
    listing = rung_cli("assess", "--list", env={"COLUMNS": "200"})
    assert listing.returncode == 0 and "team.ds-de" in listing.stdout and "retrain.production-triggered" in listing.stdout


def _stored(home: Path) -> str:
    import sqlite3

    with sqlite3.connect(home / "rung.db") as conn:
        return " ".join(row[0] for row in conn.execute("SELECT target FROM assessments"))


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: _touch(tmp / "file.txt"), "is a file, not a repository"),
    (lambda tmp: _touch(tmp / "empty" / "notes.md").parent, "found no code"),
])
def test_a_path_that_is_not_a_repository_is_one_clear_line(tmp_path: Path, make: Any, message: str) -> None:
    result = rung_cli("assess", "--repo", str(make(tmp_path)), env={"RUNG_HOME": str(tmp_path / "home")})
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x", encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("team.ds-dee: yes\n", "did you mean 'team.ds-de'"),
    ("team.ds-de: maybe\n", "'maybe' is not an answer"),
    ("team.ds-de: [\n", "not valid YAML"),
])
def test_bad_answers_files_are_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(text, encoding="utf-8")
    result = rung_cli("assess", "--repo", str(_repo("level1", tmp_path)), "--answers", str(answers),
                      env={"RUNG_HOME": str(tmp_path / "home")})
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_outside_a_project_without_repo_says_what_to_run(tmp_path: Path) -> None:
    result = rung_cli("assess", cwd=tmp_path, env={"RUNG_HOME": str(tmp_path / "home")})
    assert result.returncode == 1 and "rung assess --repo PATH" in result.stderr


def test_a_large_repository_is_bounded_skips_vendored_and_data_and_marks_partial(tmp_path: Path) -> None:
    repo = _repo("level1", tmp_path)
    for i in range(30):
        pkg = repo / "node_modules" / f"pkg{i}"
        pkg.mkdir(parents=True)
        for j in range(50):
            (pkg / f"m{j}.py").write_text("import mlflow\nmlflow.log_metric('x', 1)\n", encoding="utf-8")
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "big.csv").write_bytes(b"a,b\n" * 2_000_000)
    big = repo / "churn" / "generated.py"
    big.write_text("x = 1\n" * 400_000 + "import mlflow\nmlflow.log_metric('late', 1)\n", encoding="utf-8")
    started = time.perf_counter()
    doc = _assess("--repo", str(repo), home=tmp_path / "home")
    assert time.perf_counter() - started < 30
    assert "node_modules/" in doc["facts"]["skipped_dirs"] and "data/" in doc["facts"]["skipped_dirs"]
    tracking = next(c for c in doc["criteria"] if c["id"] == "tracking.experiments")
    assert tracking["status"] == "not_met"  # vendored code and the tail of a huge file are not the team's practice
    from rung.assess.scan import scan_repository

    cut = scan_repository(repo, budget_s=0.0)
    assert cut.partial and "partial" in cut.partial


def test_a_project_is_assessed_from_its_records_as_they_grow(git_project: Path, tmp_path: Path) -> None:
    env = {"RUNG_HOME": str(tmp_path / "home")}
    before = _assess(cwd=git_project, home=tmp_path / "home")
    assert before["mode"] == "project" and before["facts"]["runs"] == 0
    registry = next(c for c in before["criteria"] if c["id"] == "registry.models")
    assert registry["confidence"] == "observed"  # a rung project registers models, but none is yet
    assert rung_cli("run", cwd=git_project, env=env).returncode == 0
    after = _assess(cwd=git_project, home=tmp_path / "home")
    criteria = {c["id"]: c for c in after["criteria"]}
    for cid in ("registry.models", "tracking.experiments", "data.versioned", "lineage.recorded", "code.versioned"):
        assert criteria[cid]["status"] == "met" and criteria[cid]["confidence"] == "proven", criteria[cid]
    run_id = json.loads(rung_cli("runs", "--json", cwd=git_project, env=env).stdout)[0]["id"]
    assert any(e["kind"] == "run" and run_id.startswith(e["ref"]) for e in criteria["pipeline.training"]["evidence"])
    # nothing deployed or monitored yet: the gaps say so, with the command that closes each
    assert criteria["monitoring.production"]["status"] != "met"
    assert any("rung up" in s["next_step"] or "rung deploy" in s["next_step"] for s in after["next_steps"])
    history = _assess("--history", cwd=git_project, home=tmp_path / "home")
    assert len(history) == 2 and history[0]["levels"]["azure"] <= history[1]["levels"]["azure"]
