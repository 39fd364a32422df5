"""gRPC load for the benchmarks (not a benchmark itself): h2load, and a null gRPC server for its ceiling.

gRPC is HTTP/2: a unary call is a POST to ``/package.Service/Method`` with
``content-type: application/grpc`` and a body of a 5-byte prefix (a
compression flag, a big-endian length) and the serialised message. So
nghttp2's ``h2load`` (Debian package ``nghttp2-client``; no gRPC load
generator such as ghz installs from the registries this machine reaches)
loads a gRPC server from C, as wrk loads a REST one, with one stream in
flight per connection. It counts HTTP statuses, not ``grpc-status`` (a
trailer), so a caller checks the answers another way: one decoded call
before the load, and the server's own count of successes.

:func:`null_server` answers every call with the same bytes: the ceiling
of a Python ``grpc.aio`` server on this machine with this generator.
"""

from __future__ import annotations

import asyncio
import re
import struct
import subprocess
from pathlib import Path
from typing import Any


def grpc_body(message: bytes) -> bytes:
    """A unary call's HTTP/2 body: uncompressed, length-prefixed."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load(url: str, body: Path, connections: int, duration: int) -> dict[str, float]:
    """``connections`` connections, one call in flight on each, for ``duration`` seconds: req/s, p99 and failures.

    The per-request log h2load writes (``--log-file``: start, status,
    microseconds) gives the percentiles.
    """
    log = body.with_suffix(".h2log")
    out = subprocess.run(["h2load", "-D", str(duration), "-c", str(connections), "-m", "1", "-t", "1", f"--log-file={log}",
                          "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    micros = sorted(int(r[2]) for r in rows if r[1] == "200")
    p99 = micros[int(len(micros) * 0.99)] / 1000 if micros else 0.0
    return {"rps": rps, "p99_ms": p99, "failed": int(done.group(4)) + int(done.group(5)) + sum(r[1] != "200" for r in rows),
            "requests": int(done.group(3))}


def null_server(port: int, answer: bytes, ready: Any = None) -> None:
    """A gRPC server answering every unary call with ``answer``: the generator's ceiling (runs until killed)."""
    import grpc

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])

        async def handle(request: bytes, context: Any) -> bytes:
            return answer

        class Generic(grpc.GenericRpcHandler):
            def service(self, details: Any) -> Any:
                return grpc.unary_unary_rpc_method_handler(handle)

        server.add_generic_rpc_handlers((Generic(),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        if ready is not None:
            ready.set()
        await server.wait_for_termination()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve())
