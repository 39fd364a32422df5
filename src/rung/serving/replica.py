"""This gateway among the replicas sharing one metadata store: its name, its heartbeat, and the change channel it hears.

* :func:`replica_id`: ``serve.replica`` (or ``RUNG_REPLICA``), else
  ``<hostname>-<port>``: the name it has in the registry of replicas and
  the folder of its request log.
* :class:`Heartbeat`: a thread that records the replica in the store
  (``replicas`` table) about once a second, and at once after a routing
  table is swapped in, with the revision it now serves per model. A
  heartbeat that cannot be written (the database stalled or gone) is
  retried at the next beat; it never touches the event loop. A clean stop
  removes the row.
* :class:`RouteWatcher`: a thread holding PostgreSQL's ``LISTEN`` on a
  connection of its own; each announced change wakes the routing refresh
  at once. When the connection drops, the gateway polls every
  ``serve.refresh_s`` until it is back (tried again after 0.5 s, then up to
  every 10 s), and refreshes once on reconnecting for what it may have
  missed. On SQLite there is nothing to hear, and no thread.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rung.clock import utcnow
from rung.errors import StoreError
from rung.store import MetadataStore, RouteListener, route_listener

__all__ = ["Heartbeat", "Replica", "RouteWatcher", "replica_id"]

log = logging.getLogger("rung.gateway")

HEARTBEAT_S = 1.0  # how often a replica tells the store it is alive, and what it serves
LISTEN_WAIT_S = 0.5  # one wait for an announcement (a stop is noticed within this)
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0  # a dropped listener is tried again after these (doubling)


def _hostname() -> str:
    """This machine's name as a safe path component (the characters a replica id may hold)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "localhost"


def replica_id(configured: str | None, port: int) -> str:
    """``configured`` (``serve.replica``, already checked by the settings), else ``<hostname>-<port>``."""
    return configured or f"{_hostname()}-{port}"


@dataclass(frozen=True)
class Replica:
    """Who this replica is, as the registry records it."""

    id: str
    host: str
    pid: int
    url: str
    started_at: datetime

    @classmethod
    def here(cls, replica: str, host: str, port: int) -> Replica:
        """This process, listening on ``host:port`` (an address for all interfaces is shown as the hostname)."""
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        address = f"[{shown}]" if ":" in shown else shown
        return cls(replica, socket.gethostname(), os.getpid(), f"http://{address}:{port}", utcnow())


class Heartbeat:
    """Records ``replica`` with ``revisions()`` every :data:`HEARTBEAT_S`, and at once after :meth:`soon`."""

    def __init__(self, store: MetadataStore, replica: Replica, revisions: Callable[[], dict[str, int]],
                 *, every_s: float = HEARTBEAT_S) -> None:
        self.store, self.replica, self.revisions, self.every_s = store, replica, revisions, every_s
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rung-heartbeat", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def soon(self) -> None:
        """Beat now rather than at the next second (a new revision applied); safe from any thread."""
        self._due.set()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop beating and remove this replica's row (best effort: a stalled database is given ``timeout_s``)."""
        self._stopping.set()
        self._due.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._beat()
            self._due.wait(self.every_s)
            self._due.clear()
        try:
            self.store.forget_replica(self.replica.id)
        except StoreError as exc:
            log.warning("replica %s could not remove itself from the registry: %s", self.replica.id, exc)

    def _beat(self) -> None:
        r = self.replica
        try:
            self.store.heartbeat(r.id, host=r.host, pid=r.pid, url=r.url, started_at=r.started_at,
                                 revisions=self.revisions(), now=utcnow())
        except StoreError as exc:
            if not self._failing:
                log.warning("replica %s: heartbeat not recorded (tried again every %g s): %s", r.id, self.every_s, exc)
            self._failing = True
        else:
            if self._failing:
                log.info("replica %s: heartbeat recorded again", r.id)
            self._failing = False


class RouteWatcher:
    """Calls ``wake()`` for each routing change the store announces, and ``listening(bool)`` as the channel comes and goes.

    Both callbacks run in the watcher's thread: hand them to the event
    loop with ``call_soon_threadsafe``. :meth:`create` gives ``None`` for
    a store without a change channel (SQLite).
    """

    def __init__(self, listener: RouteListener, wake: Callable[[], None], listening: Callable[[bool], None]) -> None:
        self._listener = listener
        self.wake, self.listening = wake, listening
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rung-route-listener", daemon=True)

    @classmethod
    def create(cls, store: MetadataStore, wake: Callable[[], None], listening: Callable[[bool], None],
               *, name: str) -> RouteWatcher | None:
        """A watcher of ``store``'s change channel, its connection named ``name`` (``application_name``); None on SQLite."""
        listener = route_listener(store, name=name)
        return None if listener is None else cls(listener, wake, listening)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        down_since_logged = False
        while not self._stopping.is_set():
            try:
                self._listener.connect()
            except StoreError as exc:
                if not down_since_logged:
                    log.warning("not hearing routing changes from the store (polling every refresh_s meanwhile): %s", exc)
                    down_since_logged = True
                self._stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            if down_since_logged:
                log.info("hearing routing changes from the store again")
            down_since_logged, delay = False, RECONNECT_FIRST_S
            self.listening(True)
            self.wake()  # whatever changed while nobody listened
            try:
                while not self._stopping.is_set():
                    if self._listener.wait(LISTEN_WAIT_S):
                        self.wake()
            except StoreError as exc:
                log.warning("the routing change channel dropped (polling every refresh_s until it is back): %s", exc)
                down_since_logged = True
            finally:
                self.listening(False)
        self._listener.close()
