"""The Ray cluster that rung's heavy work runs on: the one place that connects to it.

Pipeline steps (:class:`~rung.pipeline.executors.RayExecutor`), tuning
trials (:mod:`rung.tuning`) and batch scoring (``rung predict --executor
ray``) all connect through :func:`connect_ray`, so an address means the
same to each of them:

- ``None``: a local Ray instance, started for this process and stopped
  when the connection closes;
- ``auto`` or ``HOST:6379`` (the head's GCS): join that cluster as a driver;
- ``ray://HOST:10001``: Ray Client, for a driver outside the cluster's
  network (``ray[client]``, which ``rung[ray]`` installs).

A process that is connected already (a search inside a run on the Ray
executor) reuses that connection and leaves it open: only the one that
connected closes it. Ray is imported only here, and only when asked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

from rung.errors import MissingDependency, RungError

__all__ = ["RayConnection", "connect_ray", "LOCAL_OBJECT_STORE_BYTES", "CLIENT_RETRY_PAUSES_S"]

# A local instance's object store: inputs travel through the artifact store, not Ray's, so a small one does.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024**2
# Ray Client's head starts a server process for each driver that connects; on a busy head that start can fail
# ("Initialization failure from server") and succeed a moment later, so a ray:// connection is tried again after these.
CLIENT_RETRY_PAUSES_S = (2.0, 5.0)


@dataclass
class RayConnection:
    """This process's link to Ray; :meth:`close` shuts Ray down only if this connection started it."""

    ray: ModuleType
    address: str | None
    owns: bool

    @property
    def where(self) -> str:
        return self.address or "a local Ray instance"

    def cluster_cpus(self) -> int:
        """The CPUs the whole cluster has (at least 1)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def unmet(self, wanted: dict[str, float]) -> str | None:
        """Why no node of the cluster could ever hold ``wanted`` (Ray's names: ``CPU``, ``GPU``, ``memory``), or ``None``.

        Ray keeps such a task or trial waiting forever; rung refuses it
        instead. Only the nodes there now count (an autoscaling cluster's
        future nodes do not).
        """
        wanted = {k: v for k, v in wanted.items() if v}
        if not wanted:
            return None
        nodes = [dict(n.get("Resources") or {}) for n in self.ray.nodes() if n.get("Alive")]
        if any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in nodes):
            return None
        largest = max(nodes, key=lambda n: tuple(n.get(k, 0.0) for k in wanted), default={})
        has = ", ".join(f"{_amount(k, largest.get(k, 0.0))}" for k in wanted)
        return f"no node of {self.where} has {', '.join(_amount(k, v) for k, v in wanted.items())} (the largest has {has})"

    def close(self) -> None:
        if self.owns:
            self.owns = False
            self.ray.shutdown()

    def __enter__(self) -> RayConnection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def connect_ray(
    address: str | None,
    *,
    purpose: str,
    local_cpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> RayConnection:
    """Connect to Ray at ``address`` (see the module docstring) for ``purpose`` (named in errors).

    ``local_cpus`` sizes a local instance (default: this machine's CPUs);
    ``runtime_env`` is Ray's, for what the workers need (environment
    variables, a working directory). A missing Ray, or Ray Client for a
    ``ray://`` address, is a :class:`~rung.errors.MissingDependency` naming
    ``rung[ray]``; a cluster that does not answer is a
    :class:`~rung.errors.RungError` naming the address.
    """
    from rung.optional import require

    ray = require("ray", purpose=purpose)
    if ray.is_initialized():
        return RayConnection(ray, address, owns=False)
    if address and address.startswith("ray://"):
        _require_client(purpose, address)
    options: dict[str, Any] = {}
    if not address:
        options = {"num_cpus": max(1, local_cpus or os.cpu_count() or 1), "object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    if runtime_env:
        options["runtime_env"] = runtime_env
    where = address or "a local instance"
    pauses = list(CLIENT_RETRY_PAUSES_S) if address and address.startswith("ray://") else []
    while True:
        try:
            ray.init(
                # "local": a new instance even where `ray start` once left its address in /tmp/ray (None would join that)
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                ignore_reinit_error=True,
                **options,
            )
            break
        except ConnectionAbortedError as exc:  # Ray Client: the head could not start this driver's server (yet)
            if not pauses:
                raise RungError(f"{purpose}: cannot connect to Ray ({where}): {_last_line(exc)}") from exc
            time.sleep(pauses.pop(0))
        except Exception as exc:
            raise RungError(f"{purpose}: cannot connect to Ray ({where}): {_first_line(exc)}") from exc
    return RayConnection(ray, address, owns=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).strip().splitlines()[0]


def _last_line(exc: BaseException) -> str:
    """The server's own error: Ray Client sends the head's traceback, whose last line says what failed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _amount(resource: str, value: float) -> str:
    if resource == "memory":
        return f"{value / 1e9:.1f} GB of memory"
    return f"{value:g} {resource}{'s' if value != 1 else ''}"


def _require_client(purpose: str, address: str) -> None:
    """Ray Client needs grpcio, which ``ray[client]`` brings; without it Ray fails with a bare ValueError."""
    try:
        import grpc  # noqa: F401  (what Ray checks before it builds a client)
    except ImportError as exc:
        raise MissingDependency("ray", extra="ray", package="ray[client]", purpose=f"{purpose} at {address}") from exc
