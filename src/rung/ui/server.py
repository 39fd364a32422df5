"""Running the dashboard: on its own (``rung ui``) or in a thread beside the gateway (``rung up``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["serve_ui", "start_ui"]


def _server(project: Project, host: str | None, port: int | None) -> object:
    import uvicorn

    from rung.ui.app import create_app

    settings = project.settings.ui
    config = uvicorn.Config(create_app(project), host=host or settings.host, port=port or settings.port,
                            log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def serve_ui(project: Project, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM."""
    server = _server(project, host, port)
    server.run()  # type: ignore[attr-defined]


@contextmanager
def start_ui(project: Project, *, host: str | None = None, port: int | None = None) -> Iterator[str]:
    """The dashboard in a background thread; yields its URL once it listens, stops it on exit."""
    server = _server(project, host, port)
    thread = threading.Thread(target=server.run, name="rung-ui", daemon=True)  # type: ignore[attr-defined]
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    if not server.started:  # type: ignore[attr-defined]
        from rung.errors import RungError

        config = server.config  # type: ignore[attr-defined]
        raise RungError(f"the dashboard could not listen on {config.host}:{config.port} (in use? pick another "
                        "with --ui-port)")
    try:
        yield f"http://{server.config.host}:{server.config.port}"  # type: ignore[attr-defined]
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=10)
