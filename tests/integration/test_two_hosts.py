"""Two hosts, as a team would run them: two project folders sharing only PostgreSQL, MLflow and an object store.

The topology and its checks live in ``scripts/two_hosts.py`` (a person can run it too); this test runs it and
fails with the failed checks and the processes' logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_database

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "two_hosts.py"

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]  # two projects trained, five servers


def test_a_canary_is_judged_and_promoted_on_both_hosts_traffic(tmp_path: Path) -> None:
    with postgres_database():  # skips (or fails in CI) with the reason when PostgreSQL does not answer
        pass
    result = subprocess.run([sys.executable, str(SCRIPT), "--json", "--keep", str(tmp_path / "world")],
                            capture_output=True, text=True, timeout=560)
    assert result.stdout.strip(), result.stderr[-3000:]
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    assert checks["failed_checks"] == [], json.dumps({k: v for k, v in checks.items() if k != "logs"}, indent=1) + \
        "\n" + str(checks.get("logs", ""))[-6000:]
    assert result.returncode == 0
    assert checks["answered_by"]["host-a"] > 0 and checks["answered_by"]["host-b"] > 0
    judged = checks["judgement_replicas"]
    assert set(judged) == {"host-a", "host-b"}, judged
