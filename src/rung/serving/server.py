"""Running the gateway under uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT, readiness turns false at once (a load balancer stops
sending), uvicorn and the gRPC server stop accepting connections, requests
and calls in flight finish, the request log writes what it still holds, then
the process exits.

The Open Inference Protocol's gRPC service (``serve.grpc_port``, 0: off) runs
on uvicorn's event loop, beside the REST app: the gateway's runtimes and
futures belong to that loop. Its port is bound before the models load, so a
port in use fails at once, in one line.

:func:`start_gateway` runs the same gateway in a thread of the current
process (the demo, tests): it can share a manual clock with a controller in
the same process, so the request log records simulated time.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rung.clock import SYSTEM, Clock
from rung.errors import RungError

if TYPE_CHECKING:
    import uvicorn

    from rung.project import Project
    from rung.serving.gateway import Gateway
    from rung.serving.grpc.service import GrpcServer

__all__ = ["announce", "run_gateway", "serve_forever", "start_gateway", "RunningGateway", "where"]

ACCEPTED_GRACE_S = 0.3


def run_gateway(project: Project, *, host: str | None = None, port: int | None = None, grpc_port: int | None = None,
                graceful_s: float = 30.0) -> None:
    """Serve ``project`` from this process until SIGTERM or SIGINT (``rung serve``; several: :mod:`rung.serving.processes`).

    ``None`` is the setting: ``serve.host``, ``serve.port``, ``serve.grpc_port``.
    """
    host, port, grpc_port = where(project, host, port, grpc_port)
    announce(host, port, grpc_port, 1)
    serve_forever(project, host=host, port=port, grpc_port=grpc_port, graceful_s=graceful_s)


def where(project: Project, host: str | None, port: int | None, grpc_port: int | None) -> tuple[str, int, int]:
    """The host, port and gRPC port to serve on: those given, else the project's settings."""
    settings = project.settings.serve
    return host or settings.host, port or settings.port, settings.grpc_port if grpc_port is None else grpc_port


def announce(host: str, port: int, grpc_port: int, processes: int) -> None:
    """The line ``rung serve`` prints first: where each protocol is served."""
    grpc_line = f"; OIP gRPC on {_address(host, grpc_port)}" if grpc_port else ""
    many = f", {processes} processes" if processes > 1 else ""
    print(f"rung gateway on http://{_address(host, port)} (OIP v2 under /v2, MLflow scoring under "
          f"/invocations; /metrics, /openapi.json){grpc_line}{many}", flush=True)


def serve_forever(project: Project, *, host: str, port: int, grpc_port: int, graceful_s: float,
                  sockets: list[socket.socket] | None = None, replica: str | None = None, describe: bool = True,
                  on_ready: Callable[[], None] | None = None) -> None:
    """One gateway process under uvicorn until SIGTERM or SIGINT: alone, or one of several on ``sockets``.

    ``replica`` names it among the replicas (``None``: ``serve.replica`` or
    ``<hostname>-<port>``); ``describe`` prints what it serves once up;
    ``on_ready`` is called once it listens with its models loaded.
    """
    import uvicorn

    from rung.serving.app import create_app

    # The event loop and the prediction threads share the GIL; a shorter switch interval
    # lets the loop answer, route and parse while a long predict runs.
    sys.setswitchinterval(0.001)
    app = create_app(project, host=host, port=port, replica=replica)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=_LOOP,
        http=_HTTP,
        access_log=False,
        proxy_headers=False,  # the gateway reads no client address: X-Forwarded-For would cost every request
        log_level="warning",
        timeout_graceful_shutdown=math.ceil(graceful_s),
        lifespan="on",
    )
    server = _server(config, app.state.gateway, grpc_port, graceful_s, standalone=True, describe=describe,
                     shared=sockets is not None, on_ready=on_ready)
    server.run(sockets=sockets)


_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
_HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _server(config: uvicorn.Config, gateway: Gateway, grpc_port: int, graceful_s: float, *, standalone: bool,
            describe: bool = False, shared: bool = False, on_ready: Callable[[], None] | None = None) -> uvicorn.Server:
    """uvicorn's server for the gateway's app, with the gRPC service on its loop (``grpc_port`` 0: none).

    ``standalone`` (``rung serve``, a process of its own): freeze what
    startup loaded out of the collector, and on shutdown give connections
    accepted a moment ago the time to have their request read; ``describe``:
    print what is served once it is up; ``shared``: one of several gateway
    processes on the ports (the supervisor checked they were free).
    """
    import uvicorn

    class GatewayServer(uvicorn.Server):
        grpc: GrpcServer | None = None

        async def startup(self, sockets: Any = None) -> None:
            if grpc_port:
                from rung.serving.grpc.service import GrpcServer

                self.grpc = GrpcServer(gateway, config.host, grpc_port, shared=shared)
                self.grpc.bind()  # before the models load: a port in use fails at once
            try:
                await super().startup(sockets)  # the app's startup included: the models are loaded
            except BaseException:
                await self._stop_grpc(0)
                raise
            if self.should_exit:  # the app's startup failed; uvicorn will not call shutdown
                await self._stop_grpc(0)
                return
            if self.grpc is not None:
                await self.grpc.start()
            if on_ready is not None:
                on_ready()
            if describe:
                for runtime in gateway.pool.runtimes.values():
                    print(f"  {runtime.describe()}", flush=True)
                for gap in gateway.pool.not_served():
                    print(f"  {gap['model']}:{gap['version']}: NOT SERVED: {gap['reason']}", flush=True)
            if not standalone:
                return
            # What is loaded now (libraries, models) lives as long as the process. Frozen, it is left out
            # of the garbage collector's full passes, which otherwise walk it every time objects of
            # requests in flight pile up: under 1,000 connections, passes of 0.2 s, a third of the time.
            gc.freeze()

        def handle_exit(self, sig: int, frame: Any) -> None:
            gateway.draining = True  # readiness goes false before anything else
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            # Stop accepting (REST and gRPC at once); calls in flight finish before the app's shutdown
            # stops the gateway they need.
            stopping = asyncio.ensure_future(self._stop_grpc(graceful_s))
            if standalone:
                # Give connections accepted a moment ago the time to have their request read: uvicorn
                # closes a connection with no request under way at once, and a request still unread in
                # the socket's buffer would be answered by a reset.
                for listener in self.servers:
                    listener.close()
                await asyncio.sleep(ACCEPTED_GRACE_S)
            await stopping
            await super().shutdown(sockets)

        async def _stop_grpc(self, grace_s: float) -> None:
            if self.grpc is not None:
                await self.grpc.stop(grace_s)

    return GatewayServer(config)


class RunningGateway:
    """A gateway serving from a thread of this process; :meth:`stop` (or leaving the ``with``) shuts it down."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, gateway: Gateway, url: str) -> None:
        self.server, self.thread, self.gateway, self.url = server, thread, gateway, url
        self.grpc_target: str | None = None  # ``host:port`` of the gRPC service once ready; None when it is off

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful: readiness false, requests in flight finish, the request log is written out."""
        if not self.thread.is_alive():
            return
        self.gateway.draining = True
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"the gateway at {self.url} did not stop within {timeout_s:g} s")

    def __enter__(self) -> RunningGateway:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_gateway(project: Project, *, host: str = "127.0.0.1", port: int = 0, grpc_port: int | None = None,
                  clock: Clock = SYSTEM, graceful_s: float = 10.0, ready_s: float = 120.0) -> RunningGateway:
    """Serve ``project`` from a background thread; returns once it is ready (``port=0``: any free port).

    ``grpc_port`` ``None`` is ``serve.grpc_port``, ``0`` no gRPC service;
    :attr:`RunningGateway.grpc_target` is where it listens.
    """
    import uvicorn

    from rung.serving.app import create_app

    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    bound = listener.getsockname()[1]
    try:
        app = create_app(project, clock=clock, host=host, port=bound)  # the port bound names the replica
    except BaseException:
        listener.close()
        raise
    gateway = app.state.gateway
    config = uvicorn.Config(app, host=host, loop=_LOOP, http=_HTTP, access_log=False, proxy_headers=False, log_level="warning",
                            timeout_graceful_shutdown=math.ceil(graceful_s), lifespan="on")
    grpc_port = project.settings.serve.grpc_port if grpc_port is None else grpc_port
    server = _server(config, gateway, grpc_port, graceful_s, standalone=False)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[listener])
        except BaseException as exc:  # reported to the caller waiting for readiness
            failure.append(exc)
        finally:
            listener.close()

    thread = threading.Thread(target=serve, name=f"rung-gateway-{bound}", daemon=True)
    thread.start()
    running = RunningGateway(server, thread, gateway, f"http://{_address(host, bound)}")
    deadline = time.monotonic() + ready_s
    while not (server.started and gateway.ready):
        if not thread.is_alive():
            cause = failure[0] if failure else None
            if isinstance(cause, RungError):
                raise cause  # a port in use: the CLI's one line
            raise RuntimeError(f"the gateway did not start: {cause or 'see the log'}") from cause
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"the gateway at {running.url} was not ready within {ready_s:g} s")
        time.sleep(0.02)
    grpc = getattr(server, "grpc", None)
    running.grpc_target = grpc.target if grpc is not None else None
    return running
