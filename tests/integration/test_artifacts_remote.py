"""Artifacts under an object store (moto's S3 server on loopback): a second host fetches what it lacks.

The two hosts are two project folders that share only the metadata database,
the MLflow store and the bucket, the way two machines would; the second one
has nothing but the project's rung.yaml and pipeline.py, and its own empty
``.rung/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.fs as pafs
import pytest

from rung.errors import ArtifactCorrupted, ArtifactUnavailable
from rung.pipeline.artifacts import ArtifactStore
from rung.project import Project
from tests.conftest import RUNG, S3Server, one_line_error, rung_cli, stop_processes, wait_until

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _filesystem(s3: S3Server) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=s3.endpoint.removeprefix("http://"), scheme="http",
                             access_key="rung-test", secret_key="rung-test", region="us-east-1")


def _objects(s3: S3Server, prefix: str) -> list[str]:
    infos = _filesystem(s3).get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path.rsplit("/", 1)[-1] for i in infos if i.type == pafs.FileType.File)


# -- the store against S3 ---------------------------------------------------------------------


def test_put_then_get_from_a_second_store_with_an_empty_cache(s3: S3Server, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket()}/artifacts"
    frame = pd.DataFrame({"x": [1.0, 2.5], "c": ["a", None]})
    ref = ArtifactStore(tmp_path / "a", uri).put(frame)
    assert _objects(s3, uri.removeprefix("s3://")) == [ref]
    other = pickle.loads(pickle.dumps(ArtifactStore(tmp_path / "b", uri)))  # as a worker on another node gets it
    assert other.exists(ref)
    pd.testing.assert_frame_equal(other.get(ref), frame)
    assert (tmp_path / "b" / ref[:2] / ref).is_file()  # cached on the second host
    assert ArtifactStore(tmp_path / "c", uri).path(ref).read_bytes() == (tmp_path / "a" / ref[:2] / ref).read_bytes()


def test_a_tampered_remote_object_is_refused_and_not_cached(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.bucket()
    ref = ArtifactStore(tmp_path / "a", f"s3://{bucket}/artifacts").put({"auc": 0.9})
    with _filesystem(s3).open_output_stream(f"{bucket}/artifacts/{ref[:2]}/{ref}") as stream:
        stream.write(b'{"auc": 1.0}')
    other = ArtifactStore(tmp_path / "b", f"s3://{bucket}/artifacts")
    with pytest.raises(ArtifactCorrupted, match=f"{ref} in s3://{bucket}/artifacts does not match its sha256"):
        other.get(ref)
    assert not (tmp_path / "b" / ref[:2] / ref).exists()


def test_an_unreachable_remote_is_one_clear_error_naming_it(s3: S3Server, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket()}/artifacts?endpoint_override=http://127.0.0.1:{_closed_port()}"
    store = ArtifactStore(tmp_path / "a", uri)
    started = time.monotonic()
    with pytest.raises(ArtifactUnavailable, match=r"the artifact store s3://rung-\w+/artifacts cannot be used") as put:
        store.put({"a": 1})
    assert time.monotonic() - started < 15 and "endpoint_override" not in str(put.value)
    with pytest.raises(ArtifactUnavailable, match="cannot download artifact"):
        store.get("ab" * 32 + ".json")


# -- two hosts ---------------------------------------------------------------------------------


@dataclass
class Hosts:
    shared: Path
    first: Path
    uri: str
    snapshot: str

    def second(self, name: str) -> Path:
        """A project folder as a clone on another host has it: rung.yaml and pipeline.py, an empty .rung/."""
        root = self.shared.parent / name
        root.mkdir()
        for file in ("rung.yaml", "pipeline.py"):
            shutil.copy(self.first / file, root / file)
        return root


@pytest.fixture(scope="module")
def hosts(s3: S3Server, tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Hosts:
    base = tmp_path_factory.mktemp("hosts")
    shared = base / "shared"
    shared.mkdir()
    first = base / "first"
    shutil.copytree(template_project, first)
    with open(first / "rung.yaml", "a") as config:
        config.write(f"\nstore:\n  database_url: sqlite:///{shared / 'rung.db'}\n"
                     f"tracking:\n  uri: sqlite:///{shared / 'mlflow.db'}\n")
    uri = f"s3://{s3.bucket()}/artifacts"
    run = rung_cli("run", cwd=first, env={"RUNG_ARTIFACTS_URI": uri})
    assert run.returncode == 0, run.stderr
    with Project.open(first) as project:
        record = project.store.get_model_version("churn", 1)
        assert record is not None
        snapshot = record.lineage["data"]["snapshot"]
    return Hosts(shared, first, uri, snapshot)


def test_rung_run_puts_its_snapshot_and_step_outputs_in_the_bucket(hosts: Hosts, s3: S3Server) -> None:
    stored = _objects(s3, hosts.uri.removeprefix("s3://"))
    local = sorted(p.name for p in (hosts.first / ".rung" / "artifacts").rglob("*") if p.is_file())
    assert hosts.snapshot in stored
    assert stored == local  # every step output, not only the snapshot


@contextlib.contextmanager
def serving(root: Path, env: dict[str, str]) -> Iterator[tuple[httpx.Client, Path]]:
    """``rung serve`` in ``root`` until it is ready; the client and its log (stdout and stderr)."""
    port = _closed_port()
    log_path = root / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env})
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                assert process.poll() is None, log_path.read_text()
                try:
                    return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=120, interval=0.2, message=f"rung serve in {root}")
            with httpx.Client(base_url=url, timeout=30) as client:
                yield client, log_path
        finally:
            stop_processes(process)


def _answers(client: httpx.Client) -> None:
    response = client.post("/invocations", json={"dataframe_records": [ROW]})
    assert response.status_code == 200, response.text
    assert response.json()["rung"]["version"] == 1


def test_a_second_host_fetches_the_snapshot_and_serves_the_compiled_route(hosts: Hosts) -> None:
    second = hosts.second("second")
    with serving(second, {"RUNG_ARTIFACTS_URI": hosts.uri}) as (client, log):
        assert client.get("/v2/models/churn").json()["parameters"]["compiled"] is True, log.read_text()
        _answers(client)
    assert (second / ".rung" / "artifacts" / hosts.snapshot[:2] / hosts.snapshot).is_file()  # fetched, verified, cached
    assert "not compiled" not in log.read_text()


def test_a_second_host_without_the_setting_says_what_to_set_and_still_serves(hosts: Hosts) -> None:
    second = hosts.second("alone")
    with serving(second, {}) as (client, log):
        parameters = client.get("/v2/models/churn").json()["parameters"]
        assert parameters["compiled"] is False and "artifacts.uri" in parameters["not_compiled"], parameters
        _answers(client)
    # Python prints a warning with no logging set up as its bare message (info lines are not printed at all).
    warnings = [line for line in log.read_text().splitlines() if line.startswith("not compiled: ")]
    assert len(warnings) == 1, log.read_text()
    assert "churn:1" in warnings[0] and hosts.snapshot in warnings[0] and "artifacts.uri" in warnings[0]
    started = next(line for line in log.read_text().splitlines() if line.startswith("  churn:1: "))
    assert "(not compiled: churn:1: its training data snapshot" in started and "set artifacts.uri" in started


def test_a_run_whose_artifact_store_is_unreachable_fails_in_one_line_naming_it(hosts: Hosts) -> None:
    second = hosts.second("unreachable")
    shutil.copytree(hosts.first / "data", second / "data")
    shutil.copy(hosts.first / "schema.yaml", second / "schema.yaml")
    uri = f"s3://{hosts.uri.removeprefix('s3://').split('/')[0]}/artifacts"
    env = {"RUNG_ARTIFACTS_URI": f"{uri}?endpoint_override=http://127.0.0.1:{_closed_port()}",
           "RUNG_DATABASE_URL": f"sqlite:///{second / 'own.db'}"}  # no cache hits: the first step's output is put
    result = rung_cli("run", cwd=second, env=env)
    one_line_error(result, "step 'ingest' failed", f"the artifact store {uri} cannot be used", "cannot look for artifact")


def test_a_second_host_runs_from_the_pipeline_cache_in_the_bucket(hosts: Hosts) -> None:
    second = hosts.second("rerun")
    shutil.copytree(hosts.first / "data", second / "data")
    shutil.copy(hosts.first / "schema.yaml", second / "schema.yaml")
    result = rung_cli("run", "--json", cwd=second, env={"RUNG_ARTIFACTS_URI": hosts.uri})
    assert result.returncode == 0, result.stderr
    steps = {s["name"]: s for s in json.loads(result.stdout)["steps"]}
    cached = sorted(name for name, s in steps.items() if s["status"] == "cached")
    assert {"ingest", "validate", "split", "profile", "train", "evaluate"} <= set(cached), steps
    assert steps["ingest"]["outputs"]["data"] == hosts.snapshot
