"""Several gateway processes on one port (``serve.processes``): the gateway toward the machine's cores.

One Python process parses, routes and answers on one core at most: under
many connections it is the bottleneck while the model's worker idles. With
``serve.processes`` N > 1, ``rung serve`` starts N gateway processes that
each bind the same port with ``SO_REUSEPORT`` (and the gRPC port, which
grpcio binds that way already): the kernel spreads new connections across
them. A process listens only once its models are loaded and warm, so no
connection reaches one that cannot answer.

Each process is a replica of its own, ``<replica>.<i>``: its heartbeat in
``rung status``, its request-log prefix, its routing follower. Sticky
routing (a hash of the key over the shared table), swaps without failed
requests and draining are each process's, as they are each host's; a
deploy waits for every process to load its candidate as it waits for every
host.

The parent only supervises (:func:`run_processes`):

* it checks that the ports are free before anything starts, so a port in
  use is one line, not N children failing;
* children are spawned (a fresh interpreter each: never a fork of a process
  with threads);
* a child that dies (``kill -9``, out of memory) is started again, after a
  pause that doubles while it keeps dying; one that fails its first start
  stops them all, with the child's error above;
* SIGTERM or SIGINT is passed to every child, which drains as a lone
  gateway does (readiness false, requests in flight answered, the request
  log written out); the parent exits when all have;
* a child whose parent is gone (``kill -9`` of the parent) drains and
  exits by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import ConfigError, RungError
from rung.serving.replica import replica_id
from rung.serving.server import announce, serve_forever, where

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.synchronize import Event

    from rung.project import Project

__all__ = ["run_processes", "reuse_port_socket"]

log = logging.getLogger("rung.gateway")

RESTART_FIRST_S, RESTART_MAX_S = 0.5, 30.0  # the pause before a dead child starts again, doubling while it keeps dying
HEALTHY_S = 30.0  # a child that lived this long died of something new: its next restart waits RESTART_FIRST_S again
PARENT_CHECK_S = 1.0  # how often a child looks for its parent


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes of this user may bind too (not listening yet)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def check_free(host: str, port: int, what: str) -> None:
    """A one-line :class:`~rung.errors.ConfigError` if anything holds ``host:port``, a gateway sharing it included."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: any holder makes this fail
        probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"the {what} {port} on {host} is in use ({exc.strerror}); stop what holds it or pick "
                          f"another with --{what.replace(' ', '-').lower()}") from exc
    finally:
        probe.close()


@dataclass
class _Child:
    index: int
    process: BaseProcess
    ready: Event
    started: float = field(default_factory=time.monotonic)
    pause_s: float = RESTART_FIRST_S


def run_processes(project: Project, *, processes: int, host: str | None = None, port: int | None = None,
                  grpc_port: int | None = None, graceful_s: float = 30.0) -> int:
    """Serve ``project`` from ``processes`` gateway processes until SIGTERM or SIGINT; the exit code.

    ``None`` is the setting (``serve.host``, ``serve.port``,
    ``serve.grpc_port``). Blocks; returns 0 after a drain, 1 when a child
    failed its first start.
    """
    host, port, grpc_port = where(project, host, port, grpc_port)
    check_free(host, port, "port")
    if grpc_port:
        check_free(host, grpc_port, "gRPC port")
    announce(host, port, grpc_port, processes)
    context = multiprocessing.get_context("spawn")
    base = replica_id(project.settings.serve.replica, port)
    stopping = threading.Event()

    def start(index: int) -> _Child:
        ready = context.Event()
        process = context.Process(target=_child, name=f"rung-gateway-{index}",
                                  args=(str(project.root), index, f"{base}.{index}", host, port, grpc_port, graceful_s,
                                        ready, os.getpid(), list(sys.path)))
        process.start()
        return _Child(index, process, ready)

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    children = [start(i) for i in range(processes)]
    code = 0
    try:
        code = _supervise(children, start, stopping)
    finally:
        for child in children:
            if child.process.is_alive():
                child.process.terminate()  # SIGTERM: the child drains
        deadline = time.monotonic() + graceful_s + 15
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.error("gateway process %d did not drain within %.0f s; killing it", child.index, graceful_s + 15)
                child.process.kill()
                child.process.join(5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _supervise(children: list[_Child], start: Callable[[int], _Child], stopping: threading.Event) -> int:
    """Restart children that die until ``stopping``; 1 at once if one dies before its first readiness."""
    first = set(range(len(children)))  # children that have not been ready yet since the gateway started
    while not stopping.is_set():
        wait([c.process.sentinel for c in children], timeout=0.2)
        for i, child in enumerate(children):
            if child.index in first and child.ready.is_set():
                first.discard(child.index)
            if child.process.is_alive() or stopping.is_set():
                continue
            code = child.process.exitcode
            if child.index in first:
                print(f"rung serve: gateway process {child.index} failed to start (exit code {code}); stopping",
                      file=sys.stderr, flush=True)
                return 1
            lived = time.monotonic() - child.started
            pause = RESTART_FIRST_S if lived > HEALTHY_S else child.pause_s
            print(f"rung serve: gateway process {child.index} died (exit code {code}); starting it again in "
                  f"{pause:.1f} s", file=sys.stderr, flush=True)
            if stopping.wait(pause):
                break
            children[i] = start(child.index)
            children[i].pause_s = min(pause * 2, RESTART_MAX_S)
    return 0


def _child(root: str, index: int, replica: str, host: str, port: int, grpc_port: int, graceful_s: float,
           ready: Event, parent: int, path: list[str]) -> None:
    """One gateway process: the project opened afresh, the shared port bound, served until told to stop."""
    sys.path[:0] = [entry for entry in path if entry not in sys.path]
    from rung.project import Project

    threading.Thread(target=_watch_parent, args=(parent,), name="rung-parent", daemon=True).start()
    try:
        project = Project.open(Path(root))
        sock = reuse_port_socket(host, port)
        serve_forever(project, host=host, port=port, grpc_port=grpc_port, graceful_s=graceful_s, sockets=[sock],
                      replica=replica, describe=index == 0, on_ready=ready.set)
    except RungError as exc:  # the one line the CLI would print; the supervisor says which process it was
        print(f"rung serve: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _watch_parent(parent: int) -> None:
    """Drain and exit once the supervisor is gone (its ``kill -9`` leaves no one to stop this process)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os.kill(os.getpid(), signal.SIGTERM)
