"""Shared fixtures: a fresh project per test, and a PostgreSQL database when the server answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    import httpx
    import psutil

RUNG = str(Path(sys.executable).with_name("rung"))
os.environ.setdefault("GIT_AUTHOR_NAME", "rung tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@rung.local")
os.environ.setdefault("GIT_COMMITTER_NAME", "rung tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@rung.local")


# Tests on two workers start gateways at once: none serves gRPC unless its test asks for a port
# (``--grpc-port``), so no two of them race for the default 8702.
os.environ.setdefault("RUNG_GRPC_PORT", "0")


def rung_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``rung`` console script."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([RUNG, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Assert the CLI failed with exactly one ``error:`` line (no traceback) holding every fragment; return that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error:"), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05,
               message: str = "the condition") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; AssertionError after ``timeout`` s.

    Tests wait for the condition they need (a server up, a row written, a
    process gone) rather than for a fixed time: as fast as the machine when
    it is quick, still right when it is loaded.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {message}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers 200 now (False while nothing listens yet); a predicate for :func:`wait_until`."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Load:
    """Client threads that send requests until the block ends: what a server must keep answering through a change.

    ``send(client)`` makes one request on the thread's own ``httpx.Client``
    (or opens a new connection itself, where the test needs the kernel to
    pick a process). Every outcome is kept in order: the status code, or
    ``refused`` (nothing listens: the thread stops, as a client would), or
    ``broken: ...`` for a connection cut mid-request (the thread stops too).
    ``answers`` holds each 200 with the time it came back.
    """

    def __init__(self, send: Callable[[httpx.Client], httpx.Response], *, base_url: str = "", threads: int = 2,
                 pause_s: float = 0.0) -> None:
        self.send, self.base_url, self.pause_s = send, base_url, pause_s
        self.outcomes: list[str] = []
        self.answers: list[tuple[float, httpx.Response]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def ok(self) -> int:
        return self.outcomes.count("200")

    def failures(self, *allowed: str) -> list[str]:
        """Every outcome that is neither a 200 nor one of ``allowed`` (e.g. ``refused`` while a server drains)."""
        return [o for o in self.outcomes if o != "200" and o not in allowed]

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = self.send(client)
                except httpx.ConnectError:
                    self.outcomes.append("refused")
                    return
                except httpx.HTTPError as exc:
                    self.outcomes.append(f"broken: {exc!r}")
                    return
                if response.status_code == 200:
                    self.answers.append((time.monotonic(), response))
                    self.outcomes.append("200")
                else:
                    self.outcomes.append(f"{response.status_code}: {response.text[:300]}")
                if self.pause_s:
                    time.sleep(self.pause_s)


def stop_processes(*processes: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM to each, then wait for each (killed past ``timeout``): how tests end the servers they started."""
    import signal

    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification project created once; tests copy it (creating one is the slow part)."""
    from rung.templates import create_project

    root = tmp_path_factory.mktemp("template") / "churn"
    create_project("churn", "tabular-classification", root, rows=1500, git=False)
    return root


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`rung demo --keep DIR`, run once per session: the loop's tests read it, the dashboard's tests copy it."""
    root = tmp_path_factory.mktemp("demo") / "churn"
    result = rung_cli("demo", "--keep", str(root), timeout=600, env={"COLUMNS": "200"})
    return root, result


@pytest.fixture(autouse=True)
def _mlflow_environment_restored() -> Iterator[None]:
    """Undo what a test's ``mlflow.set_tracking_uri``/``set_registry_uri`` exported.

    MLflow writes those URIs into ``os.environ``, so every later child process
    of this worker (a team's script, a ``rung`` command) would otherwise talk
    to the previous test's store.
    """
    saved = {key: value for key, value in os.environ.items() if key.startswith("MLFLOW_")}
    yield
    for key in [key for key in os.environ if key.startswith("MLFLOW_")]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Kill the processes a test started and left running: a test stopped by its timeout skips its own cleanup."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    # A process started by one that was already there (a module fixture's gateway starting a model worker) is its own.
    theirs: set[int] = set()
    for process in me.children(recursive=True):
        if process.pid in before:
            with contextlib.suppress(psutil.Error):
                theirs.update(child.pid for child in process.children(recursive=True))
    leftovers = [
        p for p in me.children(recursive=True) if p.pid not in before and p.pid not in theirs and not _multiprocessing_helper(p)
    ]
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(leftovers, timeout=10)


def _multiprocessing_helper(process: psutil.Process) -> bool:
    """multiprocessing's fork server and resource tracker live for the whole session: killing them breaks later pools."""
    import psutil

    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "multiprocessing.forkserver" in command or "multiprocessing.resource_tracker" in command


@pytest.fixture
def project_dir(template_project: Path, tmp_path: Path) -> Path:
    target = tmp_path / "churn"
    shutil.copytree(template_project, target)
    return target


@pytest.fixture
def git_project(project_dir: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=project_dir, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project_dir, check=True)
    subprocess.run(["git", "commit", "-qm", "initial"], cwd=project_dir, check=True)
    return project_dir


def _postgres_admin_url() -> str:
    return os.environ.get("RUNG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards.

    In CI (CI=true) a missing server fails the test: the PostgreSQL path must be exercised.
    """
    import sqlalchemy as sa

    admin_url = _postgres_admin_url()
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        message = f"PostgreSQL at {admin_url} is not reachable ({type(exc).__name__}); start it with scripts/postgres"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"rung_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    with postgres_database() as url:
        yield url


class S3Server:
    """A local S3-compatible server (moto's) on loopback, and the environment a rung process needs to reach it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "rung-test", "AWS_SECRET_ACCESS_KEY": "rung-test",
                    "AWS_REGION": "us-east-1"}

    def bucket(self) -> str:
        """A new, empty bucket; its name."""
        import pyarrow.fs as pafs

        name = f"rung-{uuid.uuid4().hex[:12]}"
        filesystem = pafs.S3FileSystem(endpoint_override=self.endpoint.removeprefix("http://"), scheme="http",
                                       access_key="rung-test", secret_key="rung-test", region="us-east-1",
                                       allow_bucket_creation=True)
        filesystem.create_dir(name)
        return name


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in its own process, stopped afterwards (CI fails without it; elsewhere the test skips)."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        message = "moto_server is not installed (pip install 'moto[server]', part of rung's dev extras)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), timeout=30, message="moto_server to start")
        saved = {key: os.environ.get(key) for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
        running = S3Server(process, port)
        os.environ.update(running.env)  # this process (a test's in-process reader or writer) reaches it too
        try:
            yield running
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        stop_processes(process)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """One local S3-compatible server per test module; each test takes its own bucket (``s3.bucket()``)."""
    with s3_server() as running:
        yield running
