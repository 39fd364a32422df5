"""One request log for every replica, on an object store: a real S3-compatible server (moto's) over HTTP on loopback.

Each replica writes its own prefix; readers (windows, the controller's
window, ``rung history --request``, feedback matching) read them all and
say how many rows each gave. The faults are real too: the server's process
is killed while a gateway serves, and a writer is killed with SIGKILL in
the middle of a segment.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rung.clock import ManualClock
from rung.delivery import feedback
from rung.delivery.controller import Controller
from rung.errors import ConfigError, StoreUnavailable
from rung.monitor.logreader import RequestLogReader, describe_replicas, request_window, served
from rung.monitor.requestlog import RETRY_MAX_S, RequestLog, log_root, open_request_log
from rung.monitor.windows import Monitor
from rung.objectstore import open_location
from rung.project import Project
from tests.conftest import RUNG, S3Server, http_ok, one_line_error, rung_cli, s3_server, stop_processes, wait_until

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
START = datetime(2026, 3, 1, 23, 59, 58, tzinfo=UTC)
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _one(log: RequestLog, request_id: str, version: int = 1, *, rows: int = 1, shadow: bool = False,
         features: dict[str, Sequence[Any]] | None = None) -> None:
    log.record(request_id, "churn", version, "shadow" if shadow else "champion", status=200, latency_s=0.002, rows=rows,
               predictions=np.arange(rows) % 2, scores=np.linspace(0.1, 0.9, rows),
               features=features or {"age": list(range(40, 40 + rows)), "contract": ["one-year"] * rows}, shadow=shadow)


@pytest.fixture
def project(tmp_path: Path, s3: S3Server) -> Iterator[Project]:
    """A bare project whose request log is a fresh bucket's ``log/`` prefix."""
    (tmp_path / "rung.yaml").write_text(f"name: churn\nmonitor:\n  request_log: {{uri: 's3://{s3.bucket()}/log'}}\n")
    made = Project.open(tmp_path)
    yield made
    made.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    root = tmp_path_factory.mktemp("request-log-remote") / "churn"
    shutil.copytree(template_project, root)
    run = rung_cli("run", cwd=root)
    assert run.returncode == 0, run.stderr
    return root


def test_two_replicas_prefixes_are_read_together_with_rows_per_replica(project: Project) -> None:
    root = log_root(project)
    assert not root.local and root.uri.endswith("/log")
    clock = ManualClock(START)
    a = RequestLog(root, clock=clock, replica="a")
    b = RequestLog(root, clock=clock, replica="b")
    for i in range(3):
        _one(a, f"a{i}")
    _one(b, "b0", rows=4)
    clock.advance(3)  # past midnight: b's next records land in the next day's partition
    _one(b, "b1", features={"age": [30], "tenure_months": [5]})  # another feature than the others had
    _one(b, "b0", version=2, shadow=True, rows=4)
    assert a.flush() == 3 and b.flush() == 9
    names = sorted(f.path.rsplit("/", 1)[0] for f in root.list(suffix=".parquet"))
    assert names == ["replica=a/model=churn/date=2026-03-01", "replica=b/model=churn/date=2026-03-01",
                     "replica=b/model=churn/date=2026-03-02"]

    reader = RequestLogReader(root)
    assert reader.replicas() == ["a", "b"]
    frame = reader.window("churn", *EVER, shadow=False)
    assert len(frame) == 8 and frame.attrs["skipped_segments"] == []
    assert frame.groupby("replica").size().to_dict() == {"a": 3, "b": 5}
    seen = {s.replica: (s.rows, s.newest) for s in frame.attrs["replicas"]}
    assert seen == {"a": (3, START), "b": (5, START + timedelta(seconds=3))}
    assert describe_replicas(frame.attrs["replicas"]) == "a 3 rows, b 5 rows"
    assert list(frame.loc[frame["request_id"] == "b1", "tenure_months"]) == [5]
    assert frame.loc[frame["request_id"] == "a0", "tenure_months"].isna().all()
    day_one = reader.window("churn", START, START + timedelta(seconds=1), columns=[])
    assert sorted(day_one["request_id"]) == ["a0", "a1", "a2", "b0", "b0", "b0", "b0"]

    who = served(project, "b0#3", model="churn")
    assert [(r["version"], r["shadow"], r["row"], r["replica"]) for r in who] == [(1, False, 3, "b"), (2, True, 3, "b")]
    assert served(project, "a1")[0]["replica"] == "a" and served(project, "nope") == []

    outcome = feedback.record(project.store, [("a2", 1.0), ("b0#1", 0.0), ("b1", 1.0), ("ghost", 1.0)], source="test",
                              clock=ManualClock(START + timedelta(hours=1)), log=reader)
    assert outcome["accepted"] == ["a2", "b0#1", "b1", "ghost"] and outcome["unmatched"] == ["ghost"]
    rows = request_window(project, "churn", START, START + timedelta(seconds=10))
    assert {r["request_id"]: r["value"] for r in rows if not r["shadow"]} == {
        "a0": None, "a1": None, "a2": 1.0, "b0": None, "b0#1": 0.0, "b0#2": None, "b0#3": None, "b1": 1.0}
    assert [(s.replica, s.rows, s.late) for s in rows.replicas] == [("a", 3, False), ("b", 9, False)]


def test_a_log_written_before_replicas_and_a_bad_segment_are_read_beside_them(project: Project) -> None:
    root = log_root(project)
    clock = ManualClock(START)
    log = RequestLog(root, clock=clock, replica="new")
    _one(log, "current", rows=2)
    log.flush()
    older = pa.table({"request_id": ["old"], "row": pa.array([0], pa.int32()), "time": pa.array([START], pa.timestamp("us", "UTC")),
                      "version": [1], "variant": ["champion"], "shadow": [False], "status": pa.array([200], pa.int32()),
                      "latency_ms": [1.0], "prediction": ["0"], "score": [0.5], "f_age": [77]})
    root.write_table("model=churn/date=2026-03-01/235900000000-235959000000-1-old-1.parquet", older)
    root.write_bytes("replica=new/model=churn/date=2026-03-01/235958000000-235958999999-1-bad-1.parquet", b"PAR1 not parquet")
    reader = RequestLogReader(root.uri)
    frame = reader.window("churn", *EVER)
    assert sorted(frame["request_id"]) == ["current", "current", "old"]
    assert frame.attrs["skipped_segments"] == [f"{root.uri}/replica=new/model=churn/date=2026-03-01/"
                                               "235958000000-235958999999-1-bad-1.parquet"]
    assert {s.replica: s.rows for s in frame.attrs["replicas"]} == {"": 1, "new": 2}
    assert list(frame.loc[frame["request_id"] == "old", "age"]) == [77]
    assert reader.window("churn", *EVER).attrs["skipped_segments"]  # known bad now: still listed, not read again


def test_monitoring_windows_and_the_controllers_window_record_the_replicas(project: Project) -> None:
    root = log_root(project)
    clock = ManualClock(datetime(2026, 3, 2, 10, tzinfo=UTC))
    writers = {name: RequestLog(root, clock=clock, replica=name) for name in ("a", "b")}
    for i in range(30):
        _one(writers["a" if i % 3 else "b"], f"r{i}")
        clock.advance(1)
    for writer in writers.values():
        writer.flush()
    start = datetime(2026, 3, 2, 10, tzinfo=UTC)
    [window] = Monitor(project, clock).check_window("churn", start, start + timedelta(hours=1))
    assert window.rows == 30
    assert [(r["replica"], r["rows"]) for r in window.report["replicas"]] == [("a", 20), ("b", 10)]
    [stored] = project.store.windows("churn")
    assert stored.report["replicas"] == window.report["replicas"]

    # A replica the registry knows to be serving, whose log has nothing in the window, is named (and late).
    until = clock.now()
    project.store.heartbeat("c", host="elsewhere", pid=1, url="http://elsewhere:8700", started_at=start,
                            revisions={}, now=until)
    rows = request_window(project, "churn", start, until)
    assert len(rows) == 30
    assert [(s.replica, s.rows, s.late) for s in rows.replicas] == [("a", 20, False), ("b", 10, False), ("c", 0, True)]
    assert describe_replicas(rows.replicas) == "a 20 rows, b 10 rows, c 0 rows (late)"

    # The controller's judgement keeps the same account in its evidence (what its rollout event records).
    rollout = SimpleNamespace(model="churn", version=1, baseline=None, step_started_at=start, plan={"outcome": "accuracy"})
    candidate, _, evidence = Controller(project, clock=clock)._window(rollout)  # type: ignore[arg-type]
    assert candidate.n == 30
    assert [(r["replica"], r["rows"], r["late"]) for r in evidence["replicas"]] == [
        ("a", 20, False), ("b", 10, False), ("c", 0, True)]


def test_the_setting_its_old_name_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rung.yaml").write_text("name: churn\nmonitor:\n  request_log: {path: logs/requests}\n")
    assert log_root(Project.open(tmp_path)).local_path() == tmp_path / "logs" / "requests"
    monkeypatch.setenv("RUNG_REQUEST_LOG_URI", "s3://shared-bucket/requests")
    overridden = log_root(Project.open(tmp_path))
    assert overridden.uri == "s3://shared-bucket/requests" and not overridden.local
    monkeypatch.delenv("RUNG_REQUEST_LOG_URI")
    (tmp_path / "rung.yaml").write_text("name: churn\nmonitor:\n  request_log: {uri: 'ftp://host/x'}\n")
    with pytest.raises(ConfigError, match=r"monitor.request_log.uri.*ftp://"):
        Project.open(tmp_path).settings  # noqa: B018
    (tmp_path / "rung.yaml").write_text("name: churn\nmonitor:\n  request_log: {uri: a, path: b}\n")
    with pytest.raises(ConfigError, match="not both"):
        Project.open(tmp_path).settings  # noqa: B018
    (tmp_path / "rung.yaml").write_text("name: churn\n")
    made = open_request_log(Project.open(tmp_path), clock=ManualClock(), replica="gw-1")
    assert made is not None and made.replica == "gw-1"
    with pytest.raises(ConfigError, match="replica"):
        RequestLog(tmp_path, clock=ManualClock(), replica="../escape")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_store_that_cannot_be_reached_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(StoreUnavailable, match=r"s3://nowhere/log cannot be read"):
        RequestLogReader("s3://nowhere/log").window("churn", *EVER)
    (tmp_path / "rung.yaml").write_text("name: churn\n")
    env = {"RUNG_REQUEST_LOG_URI": "s3://nowhere/log", "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}
    shown = rung_cli("history", "churn", "--request", "abc", cwd=tmp_path, env=env)
    one_line_error(shown, "s3://nowhere/log cannot be read")


@contextlib.contextmanager
def _gateway_process(root: Path, env: dict[str, str]) -> Iterator[str]:
    port = _closed_port()
    log_path = root / "serve-remote.log"
    with open(log_path, "w") as out:
        process = subprocess.Popen([RUNG, "serve", "--port", str(port)], cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env})
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                assert process.poll() is None, log_path.read_text()
                return http_ok(f"{url}/v2/health/ready", timeout=1)

            wait_until(ready, timeout=120, interval=0.2, message="rung serve with the request log on S3")
            yield url
        finally:
            stop_processes(process)  # SIGTERM: graceful, the log is written out


def test_rung_serve_logs_to_the_bucket_and_history_finds_the_request(trained: Path, s3: S3Server) -> None:
    uri = f"s3://{s3.bucket()}/requests"
    env = {**s3.env, "RUNG_REQUEST_LOG_URI": uri, "RUNG_REPLICA": "host-b"}
    with _gateway_process(trained, env) as url:
        answers = [httpx.post(f"{url}/invocations", json={"dataframe_records": [ROW | {"age": 30 + i}]},
                              headers={"x-request-id": f"remote-{i}"}, timeout=30) for i in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        wait_until(lambda: len(RequestLogReader(uri).window("churn", *EVER, columns=[])) == 5, timeout=30,
                   message="the records in the bucket")
    assert not (trained / ".rung" / "requests" / "replica=host-b").exists()  # nothing went to the local folder
    shown = rung_cli("history", "churn", "--request", "remote-3", "--json", cwd=trained, env=env)
    assert shown.returncode == 0, shown.stderr
    [record] = json.loads(shown.stdout)
    assert (record["replica"], record["age"], record["shadow"], record["version"]) == ("host-b", 33, False, 1)
    text = rung_cli("history", "churn", "--request", "remote-3", cwd=trained, env=env)
    assert text.returncode == 0 and "answered" in text.stdout, text.stderr


def _dropped(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r'^rung_request_log_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)}


def _make_bucket(endpoint: str, name: str) -> None:
    import pyarrow.fs as pafs

    pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", access_key="rung-test",
                      secret_key="rung-test", region="us-east-1", allow_bucket_creation=True).create_dir(name)


@contextlib.contextmanager
def _moto_again(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """moto's server started again on the port the dead one had (its buckets are gone: it keeps them in memory)."""
    process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), timeout=30, message="moto_server again")
        yield process
    finally:
        stop_processes(process)


def test_the_store_going_away_keeps_records_within_capacity_drops_the_rest_and_writes_once_back(trained: Path) -> None:
    from rung.serving.server import start_gateway

    with s3_server() as store:
        bucket = store.bucket()
        uri = f"s3://{bucket}/log"
        port = int(store.endpoint.rsplit(":", 1)[1])
        project = Project.open(trained, overrides={"monitor.request_log.uri": uri, "monitor.request_log.capacity": 200,
                                                   "monitor.request_log.flush_s": 0.05})
        statuses: list[int] = []
        with start_gateway(project) as running, httpx.Client(base_url=running.url, timeout=30) as client:
            log = running.gateway.requests
            assert log is not None

            def send(phase: str, n: int) -> None:
                for i in range(n):
                    answer = client.post("/invocations", json={"dataframe_records": [ROW]},
                                         headers={"x-request-id": f"{phase}-{i}"})
                    statuses.append(answer.status_code)

            send("before", 10)
            wait_until(lambda: log.written == 10, message="the first records in the bucket")
            store.process.kill()  # the object store goes away
            store.process.wait()
            send("away", 150)
            wait_until(lambda: log.queued == 0 and log.kept == 150, message="150 records kept for the store")
            send("later", 150)  # 300 in all for a bound of 200: the oldest 100 go
            wait_until(lambda: log.queued == 0 and log.kept + log.drops["store_unavailable"] == 300,
                       message="the records past the bound dropped")
            assert log.kept == 200 and log.drops["store_unavailable"] == 100
            assert _dropped(running.url)["store_unavailable"] == 100
            events = wait_until(lambda: [e for e in project.store.events() if e.kind == "request_log.dropped"],
                                message="the drop event")
            assert events[0].data["store_unavailable"] > 0 and events[0].data["location"] == uri
            assert "NETWORK_CONNECTION" in (events[0].data["error"] or "") and events[0].data["replica"] == log.replica

            with _moto_again(port) as again:
                _make_bucket(store.endpoint, bucket)  # a new server: the bucket made again, empty
                wait_until(lambda: log.kept == 0, timeout=RETRY_MAX_S * 3, message="the kept records written")
                frame = RequestLogReader(uri).window("churn", *EVER, columns=[])
                ids = list(frame["request_id"])
                assert len(ids) == 200 and set(ids) == {f"away-{i}" for i in range(100, 150)} | {f"later-{i}" for i in range(150)}
                assert frame.attrs["replicas"][0].replica == log.replica

                again.kill()  # away again, for less than the bound this time
                again.wait()
                send("brief", 50)
                wait_until(lambda: log.queued == 0 and log.kept == 50, message="50 records kept")
            with _moto_again(port):
                _make_bucket(store.endpoint, bucket)
                wait_until(lambda: log.kept == 0, timeout=RETRY_MAX_S * 3, message="the 50 kept records written")
                frame = RequestLogReader(uri).window("churn", *EVER, columns=[])
                assert sorted(frame["request_id"]) == sorted(f"brief-{i}" for i in range(50))
                assert log.drops["store_unavailable"] == 100  # nothing more was lost
                assert set(statuses) == {200} and len(statuses) == 360  # serving never failed
        project.close()


WRITER = """
import sys, time
from datetime import UTC, datetime
import numpy as np
from rung.clock import ManualClock
from rung.monitor.requestlog import RequestLog

log = RequestLog(sys.argv[1], clock=ManualClock(datetime(2026, 3, 1, tzinfo=UTC)), capacity=10**7,
                 max_request_rows=10**7, replica="doomed")
commit = log.root.write_table


def traced(path, table):  # says when the segment's bytes start to go out, so that the kill lands in the commit
    print(f"writing {time.monotonic()}", flush=True)
    commit(path, table)


log.root.write_table = traced
rows = int(sys.argv[2])
for i in range(10**6):
    log.record(f"r{i}", "churn", 1, "champion", status=200, latency_s=0.001, rows=rows, predictions=np.zeros(rows),
               scores=np.linspace(0, 1, rows), features={"age": np.arange(rows), "note": ["x" * 20] * rows})
    assert log.flush() == rows
    print(f"done {time.monotonic()}", flush=True)
    log.clock.advance(1)
"""


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_writer_killed_mid_segment_leaves_nothing_a_reader_chokes_on(where: str, tmp_path: Path, s3: S3Server) -> None:
    uri = str(tmp_path / "log") if where == "folder" else f"s3://{s3.bucket()}/log"
    rows = 100_000
    process = subprocess.Popen([sys.executable, "-c", WRITER, uri, str(rows)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, **s3.env})
    assert process.stdout is not None
    began = 0.0
    took: list[float] = []  # how long each commit (the write of a segment's bytes) took
    try:
        for line in process.stdout:
            kind, moment = line.split()
            if kind == "writing":
                began = float(moment)
                if len(took) >= 3:  # kill inside this commit, from what the last ones took
                    time.sleep(random.uniform(0.1, 0.8) * min(took[-3:]))
                    process.send_signal(signal.SIGKILL)
                    break
            else:
                took.append(float(moment) - began)
    finally:
        process.kill()
        process.wait()
    done = len(took)
    frame = RequestLogReader(uri).window("churn", *EVER, columns=["age"])
    assert len(frame) in (done * rows, (done + 1) * rows)  # whole segments only: the last one is there or not at all
    assert frame.attrs["skipped_segments"] == []
    assert frame.groupby("request_id").size().eq(rows).all()
    location = open_location(uri)
    assert all(f.path.endswith(".parquet") for f in location.list())  # a folder's temporary file is hidden from readers
    for stored in location.list():
        assert pq.read_metadata(pa.BufferReader(location.read_bytes(stored.path))).num_rows == rows
