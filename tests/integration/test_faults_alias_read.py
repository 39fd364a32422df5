"""Reading @champion at registration: only MLflow's "does not exist" means "no champion yet".

A real MLflow registry on SQLite; the failing read is a real MLflow client
talking to a closed port (through the public ``Tracking.alias_version``),
so the error is the one a lost tracking server gives.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

from rung.errors import TrackingError
from rung.tracking import CHALLENGER, CHAMPION, Registered, Tracking


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the socket is


def _tracking(root: Path, cls: type[Tracking] = Tracking) -> Tracking:
    return cls(f"sqlite:///{root / 'mlflow.db'}", artifact_root=root / "mlartifacts", lock_path=root / "mlflow.lock")


def _register(tracking: Tracking, root: Path) -> Registered:
    from sklearn.linear_model import LogisticRegression

    train = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "y": [0, 0, 0, 1, 1, 1]})
    model = LogisticRegression().fit(train[["x"]], train["y"])
    return tracking.register(
        model, flavor="sklearn", inputs=["x"], predict=model.predict, name="churn", experiment="churn", train=train, target="y", params={}, metrics={"accuracy": 1.0},
        tags={"rung.run_id": "test"}, data_digest="d", data_source="test", data_path=root, artifacts={},
    )


def _registry(root: Path) -> dict[str, object]:
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    return {
        "versions": sorted(int(v.version) for v in client.search_model_versions("name='churn'")),
        "aliases": dict(client.get_registered_model("churn").aliases),
    }


class AliasReadOverAClosedPort(Tracking):
    """Registers on the real SQLite registry, but reads aliases from a server that is not there."""

    def alias_version(self, name: str, alias: str) -> int | None:
        lost = Tracking(f"http://127.0.0.1:{_closed_port()}", artifact_root=self.artifact_root, lock_path=self.lock_path)
        return lost.alias_version(name, alias)


def test_the_first_registration_makes_the_champion_and_the_next_does_not(tmp_path: Path) -> None:
    tracking = _tracking(tmp_path)
    assert tracking.alias_version("churn", CHAMPION) is None  # no such model: MLflow says it does not exist
    first = _register(tracking, tmp_path)
    assert sorted(first.aliases) == [CHALLENGER, CHAMPION]
    second = _register(tracking, tmp_path)
    assert second.aliases == [CHALLENGER]
    assert tracking.alias_version("churn", CHAMPION) == 1 and tracking.alias_version("churn", CHALLENGER) == 2


def test_a_failed_alias_read_fails_the_registration_and_moves_no_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    _register(_tracking(tmp_path), tmp_path)
    with pytest.raises(TrackingError, match=r"cannot read @champion of 'churn' from MLflow at http://127\.0\.0\.1:\d+"):
        _register(_tracking(tmp_path, AliasReadOverAClosedPort), tmp_path)
    assert _registry(tmp_path) == {"versions": [1], "aliases": {CHAMPION: 1, CHALLENGER: 1}}


def test_an_unreachable_registry_is_an_error_not_no_champion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    lost = Tracking(f"http://127.0.0.1:{_closed_port()}", artifact_root=tmp_path, lock_path=tmp_path / "lock")
    with pytest.raises(TrackingError, match="cannot read @champion"):
        lost.alias_version("churn", CHAMPION)
