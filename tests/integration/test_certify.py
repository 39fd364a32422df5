"""``rung certify`` through the real CLI, MLflow and metadata store.

One project is trained twice for the whole module (a run is the slow part):
``churn:1``, the champion, and ``churn:2``, a deliberately weaker challenger
(one tree of two leaves). Each test writes the ``certify:`` section it needs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import rung_cli

# Few repeats and budgets no shared CI machine misses: the gate is exercised here, not the machine's speed.
FAST_LATENCY = {"repeats": 10, "single_row_p99_ms": 60_000, "batch_1000_p99_ms": 60_000}

# The template's own tests train three models; these stand in for them to keep the module fast.
QUICK_TESTS = "import pipeline\n\n\ndef test_target_is_the_label():\n    assert pipeline.TARGET == 'churned'\n"


def _json(result: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def project(template_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("certify") / "churn"
    shutil.copytree(template_project, root)
    (root / "tests" / "test_scoring.py").write_text(QUICK_TESTS)
    first = _json(rung_cli("run", "--json", cwd=root))
    assert first["model_version"] == 1
    config = root / "rung.yaml"
    original = config.read_text()
    config.write_text(original.replace("max_iter: 200", "max_iter: 1").replace("max_leaf_nodes: 31", "max_leaf_nodes: 2"))
    second = _json(rung_cli("run", "--json", cwd=root))
    assert second["model_version"] == 2
    assert second["metrics"]["overall"]["roc_auc"] < first["metrics"]["overall"]["roc_auc"] - 0.02
    config.write_text(original)
    yield root


def _configure(root: Path, certify: dict[str, Any]) -> None:
    """Replace the ``certify:`` section of rung.yaml (it does not touch the pipeline's cache key)."""
    config = root / "rung.yaml"
    text = config.read_text().split("\ncertify:")[0].rstrip("\n")
    config.write_text(text + "\n" + yaml.safe_dump({"certify": certify}, sort_keys=False))


def test_the_champion_is_certified_and_the_verdict_recorded(project: Path) -> None:
    _configure(project, {
        "latency": FAST_LATENCY,
        "behaviour": [{"name": "calls raise risk", "kind": "directional", "feature": "support_calls", "change": 3,
                       "expect": "non_decreasing", "max_violation_rate": 0.25}],
    })
    report = _json(rung_cli("certify", "churn:1", "--json", cwd=project))
    checks = _checks(report)
    assert report["certified"] is True and report["ref"] == "churn:1"
    assert checks["integrity"]["status"] == "passed"
    assert checks["champion"]["status"] == "skipped" and "churn:1 is the @champion" in checks["champion"]["detail"]
    assert checks["schema"]["status"] == "skipped"
    assert checks["latency.single_row_p99_ms"]["status"] == "passed"
    assert checks["latency.batch_1000_p99_ms"]["status"] == "passed"
    assert checks["behaviour.calls raise risk"]["status"] == "passed"
    assert checks["tests"]["status"] == "passed" and "1 passed" in checks["tests"]["observed"]
    assert report["counts"]["failed"] == 0

    from rung.project import Project

    opened = Project.open(project)
    try:
        events = [e for e in opened.store.events(subject="churn:1") if e.kind == "certification"]
        assert events and events[-1].actor == "cli" and events[-1].data["certified"] is True
        assert events[-1].data["checks"] == report["checks"]
        tags = opened.tracking.version_tags("churn", 1)
    finally:
        opened.close()
    assert tags["rung.certified"] == "true"
    assert tags["rung.certified_at"] == report["started_at"]
    summary = json.loads(tags["rung.certification"])
    assert summary["certified"] is True and summary["failed"] == [] and summary["counts"] == report["counts"]


def test_unmet_threshold_and_latency_budget_fail_with_exit_1(project: Path) -> None:
    _configure(project, {
        "thresholds": {"roc_auc": {"min": 0.999}, "accuracy": {"min": 0.5}},
        "latency": FAST_LATENCY | {"single_row_p99_ms": 0.001},
    })
    result = rung_cli("certify", "churn:1", "--skip-tests", cwd=project, env={"COLUMNS": "200"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "churn:1 is not certified: 2 check(s) failed (threshold.roc_auc, latency.single_row_p99_ms)" in result.stderr
    for shown in ("threshold.roc_auc", "threshold.accuracy", "latency.single_row_p99_ms", "churn:1 not certified"):
        assert shown in result.stdout

    from rung.project import Project

    opened = Project.open(project)
    try:
        assert opened.tracking.version_tags("churn", 1)["rung.certified"] == "false"
    finally:
        opened.close()


def test_a_weaker_challenger_fails_against_the_champion(project: Path) -> None:
    _configure(project, {
        "latency": FAST_LATENCY,
        "slices": {"max_drop_vs_champion": 1.0},
        "behaviour": [{"kind": "directional", "feature": "tenure_months", "change": 24, "expect": "increase"}],
    })
    report = _json(rung_cli("certify", "churn:2", "--json", "--skip-tests", cwd=project), code=1)
    checks = _checks(report)
    assert report["champion"] == "churn:1" and report["certified"] is False
    champion = checks["champion.roc_auc"]
    assert champion["status"] == "failed" and "worse than churn:1" in champion["detail"]
    assert champion["expected"] == "worse by ≤ 0.01 vs churn:1"
    slices = {name: c for name, c in checks.items() if name.startswith("slice.")}
    assert "slice.contract=month-to-month.roc_auc" in slices
    assert all(c["status"] in ("passed", "skipped") for c in slices.values())  # a margin of 1.0 allows any drop
    assert checks["schema"]["status"] == "passed" and "unchanged" in checks["schema"]["observed"]
    assert checks["behaviour.directional tenure_months"]["status"] == "failed"
    assert checks["tests"]["status"] == "skipped"


def test_a_tampered_model_fails_its_integrity_check(project: Path) -> None:
    from rung.project import Project

    opened = Project.open(project)
    try:
        opened.models_loader.load(opened.model_version("churn:1"))  # the local copy certify verifies
    finally:
        opened.close()
    model_file = next((project / ".rung" / "models" / "churn" / "1").glob("*.skops"))
    original = model_file.read_bytes()
    _configure(project, {"latency": FAST_LATENCY})
    try:
        model_file.write_bytes(original + b"\0")
        report = _json(rung_cli("certify", "churn:1", "--json", "--skip-tests", cwd=project), code=1)
    finally:
        model_file.write_bytes(original)
    checks = _checks(report)
    assert checks["integrity"]["status"] == "failed" and "sha256" in checks["integrity"]["detail"]
    assert checks["latency"]["status"] == "skipped" and checks["behaviour"]["status"] == "skipped"


@pytest.mark.parametrize(
    ("args", "certify", "env", "message"),
    [
        (["churn:9"], {}, {}, "no model version churn:9"),
        (["churn"], {}, {}, "write NAME:VERSION"),
        (["churn:1"], {"behaviour": [{"kind": "directional", "feature": "tenure", "change": 1}]}, {},
         "rung.yaml: certify.behaviour[0].feature: 'tenure' is not an input"),
        (["churn:1"], {"thresholds": {"roc_auk": {"min": 0.5}}}, {}, "certify.thresholds.roc_auk"),
        (["churn:1"], {"latency": {"repeats": 1}}, {}, "certify.latency.repeats"),
        (["churn:1"], {}, {"RUNG_TRACKING_URI": "http://127.0.0.1:9"}, "cannot be reached"),
    ],
    ids=["unknown-version", "not-a-ref", "unknown-feature", "unknown-metric", "bad-setting", "mlflow-down"],
)
def test_a_gate_that_cannot_run_exits_2_with_one_line(
    project: Path, args: list[str], certify: dict[str, Any], env: dict[str, str], message: str
) -> None:
    _configure(project, certify)
    result = rung_cli("certify", *args, "--skip-tests", cwd=project, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_over_the_absolute_budget_a_candidate_passes_against_the_champion_timed_alongside(project: Path) -> None:
    """No host meets a 1 µs budget: churn:2 is judged against churn:1 measured in the same run, and says so."""
    _configure(project, {"latency": {"repeats": 10, "single_row_p99_ms": 0.001, "batch_1000_p99_ms": 0.001}})
    report = _json(rung_cli("certify", "churn:2", "--json", "--skip-tests", cwd=project), code=1)
    for name in ("latency.single_row_p99_ms", "latency.batch_1000_p99_ms"):
        check = _checks(report)[name]
        # churn:2 (one tree of two leaves) is no slower than churn:1 (200 trees)
        assert check["status"] == "passed", check
        assert "churn:1 timed alongside" in check["detail"] and "of 10 calls" in check["detail"], check
        assert "one thread" in check["detail"], check


def _venv_without_pytest(target: Path) -> Path:
    """A real interpreter environment holding everything rung's own one does, except pytest (and its plugins)."""
    import site
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    ours = Path(site.getsitepackages()[0])
    theirs = next(target.glob("lib/python*/site-packages"))
    for entry in ours.iterdir():
        if not entry.name.lower().startswith(("pytest", "_pytest", "py.py")):
            (theirs / entry.name).symlink_to(entry)
    return target / "bin" / "python"


def test_without_pytest_installed_the_tests_check_is_skipped_with_the_reason(project: Path, tmp_path: Path) -> None:
    python = _venv_without_pytest(tmp_path / "venv")
    assert subprocess.run([str(python), "-c", "import pytest"], capture_output=True).returncode != 0
    _configure(project, {"latency": FAST_LATENCY})
    done = subprocess.run([str(python), "-m", "rung.cli", "certify", "churn:1", "--json"], cwd=project, capture_output=True,
                          text=True, timeout=300)
    report = _json(done)
    tests = _checks(report)["tests"]
    assert report["certified"] is True, tests
    assert tests["status"] == "skipped" and "pytest is not installed" in tests["detail"], tests
