"""Running the gateway under uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT, readiness turns false at once (a load balancer stops
sending), uvicorn stops accepting connections, requests in flight finish,
then the process exits.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rung.project import Project

__all__ = ["run_gateway"]

ACCEPTED_GRACE_S = 0.3


def run_gateway(project: Project, *, host: str | None = None, port: int | None = None, graceful_s: float = 30.0) -> None:
    import uvicorn

    from rung.serving.gateway import create_app

    settings = project.settings.serve
    # The event loop and the prediction threads share the GIL; a shorter switch interval
    # lets the loop answer, route and parse while a long predict runs.
    sys.setswitchinterval(0.001)
    app = create_app(project)
    gateway = app.state.gateway
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=graceful_s,
        lifespan="on",
    )

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            gateway.draining = True  # readiness goes false before anything else
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            # Stop accepting, then give connections accepted a moment ago the time to have their
            # request read: uvicorn closes a connection with no request under way at once, and a
            # request still unread in the socket's buffer would be answered by a reset.
            for listener in self.servers:
                listener.close()
            await asyncio.sleep(ACCEPTED_GRACE_S)
            await super().shutdown(sockets)

    server = _Server(config)
    print(f"rung gateway on http://{config.host}:{config.port} (OIP v2 under /v2, MLflow scoring under /invocations; /metrics, /openapi.json)", flush=True)
    server.run()
