"""Starting a server, loading it with wrk and pricing the load: req/s, p99, failures, CPU per request, memory.

CPU and memory are those of the server's whole process tree (the process
started and every process below it, by ``psutil``): a server that hands
requests to worker processes pays for them too. CPU is user + system time,
the tree's total after a load minus before it, over the requests wrk
completed; a child that exited during the load is not counted. Memory is
the tree's RSS (a page shared between processes counted once per process)
and PSS (shared pages shared out; ``None`` where ``/proc`` does not let us
read it).

wrk itself (``gateway.wrk``: two threads, a Lua script posting one body) is
shared with ``bench/gateway.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import _cpu_s, stop, wait_ready, wrk
from peers import Peer, Unavailable

MIB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    rows: int  # per request
    connections: int


SETTINGS = [
    Setting("c8", "single-row requests, 8 connections", 1, 8),
    Setting("c64", "single-row requests, 64 connections", 1, 64),
    Setting("rows100", "100-row requests, 8 connections", 100, 8),
]


@dataclass
class Server:
    peer: Peer
    process: subprocess.Popen
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def launch(peer: Peer, command: list[str], cwd: Path, env: dict[str, str], port: int, log: Path) -> Server:
    """Start ``command`` in a process group of its own (so that all of it can be killed), its output to ``log``."""
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(peer, process, port, log)


def ready(server: Server, timeout: float = 300) -> None:
    """Wait until the server's ready path answers; raises :class:`Unavailable` with its log's tail if it never does."""
    try:
        wait_ready(server.url(server.peer.ready), server.process, timeout=timeout)
    except SystemExit as exc:  # gateway.wait_ready's way of saying it gave up
        tail = " | ".join(server.log.read_text(errors="replace").strip().splitlines()[-3:])
        raise Unavailable(f"did not start: {exc}; {server.log}: {tail}") from None


def halt(server: Server) -> None:
    """SIGTERM the server's process group, SIGKILL it after 30 s, and kill any of its tree that left the group."""
    import psutil

    tree: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(server.process.pid).children(recursive=True)
    stop(server.process)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGKILL)
    for process in tree:
        with contextlib.suppress(psutil.Error):
            process.kill()


def ask(url: str, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def memory(pid: int) -> dict[str, float | None]:
    """RSS and PSS (MiB) of a process and all its descendants, and how many processes that is."""
    import psutil

    rss, pss, count = 0, 0, 0
    pss_readable = True
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            rss += process.memory_info().rss
            count += 1
        except psutil.Error:
            continue
        try:
            pss += process.memory_full_info().pss
        except (psutil.Error, AttributeError):
            pss_readable = False
    return {"rss_mib": rss / MIB, "pss_mib": pss / MIB if pss_readable else None, "processes": count}


def load(server: Server, body: Path, setting: Setting, duration: int, work: Path) -> dict[str, float]:
    """One wrk run on the server: req/s, rows/s, p99 (ms), failed requests, CPU ms per request of its tree."""
    before = _cpu_s(server.process.pid)
    result = wrk(server.url(server.peer.path), body, setting.connections, duration, work)
    cpu = _cpu_s(server.process.pid) - before
    return result | {"rows_s": result["rps"] * setting.rows, "cpu_ms": cpu * 1e3 / max(result["requests"], 1)}
