"""Fakes for testing code that uses rung, as httpx ships ``MockTransport``.

What a test of a rung project needs and should not have to build itself:

* :func:`temporary_project`: a fresh project from a template, on SQLite and
  the local executor whatever the environment says (a ``RUNG_DATABASE_URL``
  pointing at the team's PostgreSQL must not receive test runs), closed on exit;
* :class:`ManualClock`: time that moves only when told to, for rollouts,
  monitoring windows and retraining guards (``clock=`` on what takes one);
* :class:`WebhookReceiver`: a local HTTP endpoint that keeps what it is sent,
  to check that an alert sink fires and with what.

With pytest::

    from rung.testing import WebhookReceiver, temporary_project

    def test_the_template_trains_and_registers(tmp_path):
        with temporary_project(tmp_path, rows=600) as project:
            result = project.run()
            assert result.run.model_version == 1
            assert project.lineage("churn:1")["data"]["rows"] > 0

    def test_my_sink_posts_json(notice):  # notice: a rung.monitor.alerts.Notice
        from rung.config.alerts import SinkSettings
        from rung.monitor.notify import deliver

        with WebhookReceiver() as hook:
            deliver(notice, [SinkSettings(name="hook", kind="webhook", url=hook.url)])
        assert hook.received[0]["text"] == notice.message
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from rung.clock import ManualClock
from rung.project import Project

__all__ = ["temporary_project", "ManualClock", "WebhookReceiver", "HERMETIC"]

# What a test project ignores from the environment: the metadata store and
# MLflow default to SQLite files in the project's own .rung/, steps run here.
HERMETIC: dict[str, Any] = {"store.database_url": None, "tracking.uri": None, "executor.kind": "local"}


@contextlib.contextmanager
def temporary_project(
    directory: str | Path,
    *,
    template: str = "tabular-classification",
    name: str | None = None,
    rows: int = 1000,
    git: bool = False,
    overrides: dict[str, Any] | None = None,
) -> Iterator[Project]:
    """A new project in ``directory``/``name``, opened, and closed when the block ends.

    ``name`` defaults to the template's dataset (``churn``, ``demand``), so
    refs read as in the docs (``churn:1``). ``rows`` is kept small so a
    run takes seconds; ``git=True`` starts a repository as ``rung init``
    does (``rung reproduce`` extracts the recorded commit). ``overrides``
    (dotted keys, as for :meth:`Project.open`) apply on top of
    :data:`HERMETIC`. The files stay: ``directory`` is the caller's, e.g.
    pytest's ``tmp_path``.
    """
    from rung.templates import TEMPLATES, create_project

    project_name = name or (TEMPLATES[template].dataset if template in TEMPLATES else "project")
    root = create_project(project_name, template, Path(directory) / project_name, rows=rows, git=git)
    with Project.open(root, overrides={**HERMETIC, **(overrides or {})}) as project:
        yield project


class WebhookReceiver:
    """A JSON endpoint on ``127.0.0.1`` that records each POST; use it as a context manager.

    ``received`` holds the decoded bodies, ``requests`` the ``(path,
    body)`` pairs. ``statuses`` are the HTTP codes to answer with, in
    order (then 200), to test a sink's retries. Keep proxies out of the
    way (``NO_PROXY=127.0.0.1``) if the test environment sets one.
    """

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread: threading.Thread | None = None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def received(self) -> list[Any]:
        with self._lock:
            return [body for _, body in self.requests]

    def _record(self, path: str, body: Any) -> int:
        with self._lock:
            self.requests.append((path, body))
            return self.statuses.pop(0) if self.statuses else 200

    def start(self) -> WebhookReceiver:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="rung-webhook-receiver", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            self.send_response(receiver._record(self.path, body))
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # a test's output is not an access log
            pass

    return Handler
