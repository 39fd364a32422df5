"""The gateway's request log: every answer (and shadow answer) as append-only Parquet segments.

The log lives at ``monitor.request_log.uri``: a folder (by default
``.rung/requests``) or an object store (``s3://bucket/prefix``, ``gs://``,
``abfs://``, see :mod:`rung.objectstore`). Each gateway replica writes its
own prefix, hive-partitioned so that a reader opens only the replicas'
model and the days it asks for::

    ROOT/replica=ID/model=NAME/date=YYYY-MM-DD/<first>-<last>-<pid>-<writer>-<seq>.parquet

``first`` and ``last`` are the times of day (``HHMMSSffffff``, UTC) of the
segment's oldest and newest record, so a reader also skips the segments of
a day that lie outside its window; ``writer`` is random per process. The
replica id is the gateway's (``serve.replica``, else ``<hostname>-<port>``;
``<hostname>-<pid>`` for a writer given none). A segment is committed whole
or not at all (:meth:`rung.objectstore.Location.write_table`: a hidden
temporary name and a rename on a folder, one upload on an object store):
readers never see half a file, and no file is ever changed again. Logs
written before replicas had prefixes (``ROOT/model=NAME/...``) are still
read.

One record per input *row*: request id, row (0-based), time, version,
variant, shadow, status, latency, prediction (text), score, and the row's
input features, one column each, named ``f_<feature>`` (the reader gives
them back under their own names). Feedback names a row by its *feedback
id*: the request id for row 0 (so single-row requests need nothing more),
``REQ#<row>`` for the other rows of a multi-row request. ``#`` cannot occur
in a request id the gateway accepts, so the two never collide.

Why this shape: the gateway's event loop only appends one tuple per request
(:meth:`RequestLog.record`); a background thread turns what accumulated
into Arrow columns (:mod:`rung.monitor.records`, the tuple's layout and
the columns) and writes a segment every ``flush_s``. This module is the
writer: the queue, the segments' names and commits, the drops and the
retries of an object store that went away.

A record the log cannot keep is dropped and counted by reason, never
silently, and serving goes on (see :data:`DROP_REASONS`): the queue is
bounded in rows (``capacity``), one request may take at most
``max_request_rows`` of it (a quarter by default, so one huge request
cannot starve the ones after it: it is logged whole or not at all), and a
segment that cannot be written to a folder (a full disk) counts its
records lost. An object store that cannot be reached is expected to come
back: its segments are *kept* in memory and tried again with a growing
pause (:data:`RETRY_FIRST_S` doubling to :data:`RETRY_MAX_S`), new records
joining them meanwhile, as long as the records kept and queued stay within
``capacity``; past it the oldest kept records are dropped
(``store_unavailable``). Each drop goes to ``on_drop(reason, records)``
(the gateway's ``rung_request_log_dropped_total{reason=...}``), and the
thread records an event (``request_log.dropped``) at most once a minute with
the counts. So every record is either in a readable segment or counted
(short of the process being killed: what was queued or kept then is gone).
:meth:`RequestLog.stop` writes everything still queued, and counts what it
cannot.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rung.clock import Clock, utc
from rung.errors import ConfigError
from rung.monitor.records import MODEL, ROWS, TIME, records_table
from rung.objectstore import Location, open_location

if TYPE_CHECKING:
    import pyarrow as pa
    from numpy.typing import NDArray

    from rung.project import Project
    from rung.store import MetadataStore

__all__ = ["RequestLog", "open_request_log", "log_root", "as_location", "default_replica", "feedback_id",
           "parse_feedback_id", "partition_dir", "DROP_EVENT_EVERY_S", "DROP_REASONS",
           "RETRY_FIRST_S", "RETRY_MAX_S"]

log = logging.getLogger(__name__)

DROP_EVENT_EVERY_S = 60.0
# Why records were dropped: no room in the queue; one request above ``max_request_rows``; a segment that could
# not be written because the disk (or quota) is full; any other failure to write one; records kept for an object
# store that stayed unreachable until they no longer fitted in ``capacity`` (or the gateway stopped).
DROP_REASONS = ("queue_full", "too_large", "disk_full", "write_error", "store_unavailable")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
TIME_OF_DAY = "%H%M%S%f"
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0  # an unreachable store is tried again after these (doubling)
_REPLICA = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def feedback_id(request_id: str, row: int) -> str:
    """The id feedback uses for one row: ``REQ`` for row 0, ``REQ#3`` for row 3."""
    return request_id if row == 0 else f"{request_id}#{row}"


def parse_feedback_id(value: str) -> tuple[str, int]:
    """``REQ#3`` → ``("REQ", 3)``; anything else is row 0 of itself."""
    request_id, sep, row = value.rpartition("#")
    if sep and request_id and row.isdigit():
        return request_id, int(row)
    return value, 0


def partition_dir(replica: str | None, model: str, day: date) -> str:
    """Where one replica's segments of one model and day live, relative to the log's root.

    The model's name is quoted (DuckDB decodes it back); ``replica`` None is
    the layout of logs written before replicas had their own prefix.
    """
    model_day = f"model={quote(model, safe='')}/date={day.isoformat()}"
    return model_day if replica is None else f"replica={replica}/{model_day}"


def default_replica() -> str:
    """``<hostname>-<pid>``: the id of a writer that was given none (a gateway passes its own)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "localhost"
    return f"{host[:80]}-{os.getpid()}"


def as_location(root: Location | str | os.PathLike[str]) -> Location:
    """A folder's path or a URI as a :class:`~rung.objectstore.Location`; a location as it is."""
    return root if isinstance(root, Location) else open_location(root)


def log_root(project: Project) -> Location:
    """``monitor.request_log.uri`` (a folder relative to the project, or an object store), by default ``.rung/requests``.

    :class:`~rung.errors.ConfigError` naming the setting when the URI
    cannot be opened.
    """
    configured = project.settings.monitor.request_log.uri
    if configured is None:
        return open_location(project.state_dir / "requests")
    try:
        return open_location(configured, root=project.root)
    except ConfigError as exc:
        raise ConfigError(f"monitor.request_log.uri: {exc}", field="monitor.request_log.uri") from exc


def open_request_log(project: Project, *, clock: Clock, on_drop: Callable[[str, int], None] | None = None,
                     replica: str | None = None) -> RequestLog | None:
    """The project's request log as configured, for replica ``replica`` (None: ``<hostname>-<pid>``), not yet started.

    None when ``enabled: false``.
    """
    settings = project.settings.monitor.request_log
    if not settings.enabled:
        return None
    return RequestLog(log_root(project), clock=clock, capacity=settings.capacity, flush_s=settings.flush_s,
                      max_request_rows=settings.max_request_rows, on_drop=on_drop, store=project.store, replica=replica)


@dataclass
class _Kept:
    """A segment the object store did not take yet: its table, and its name once it was tried (kept for retries)."""

    model: str
    day: date
    table: pa.Table
    first: datetime
    last: datetime
    name: str | None = None

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


class RequestLog:
    """Writer of the request log; one per gateway process, under its replica's prefix of ``root``.

    ``record`` is called from one thread (the event loop); everything else
    happens in the writer thread, or in the caller's with :meth:`flush`.
    ``on_drop(reason, records)`` is called from either (a Prometheus counter
    is safe there). ``max_request_rows`` (None: a quarter of ``capacity``)
    is at most ``capacity``. ``root`` is a :class:`~rung.objectstore.Location`
    or a folder's path.
    """

    def __init__(self, root: Location | str | os.PathLike[str], *, clock: Clock, capacity: int = 100_000,
                 flush_s: float = 0.5, segment_rows: int = 250_000, max_request_rows: int | None = None,
                 on_drop: Callable[[str, int], None] | None = None, store: MetadataStore | None = None,
                 replica: str | None = None) -> None:
        self.root = as_location(root)
        self.replica = replica or default_replica()
        if not _REPLICA.fullmatch(self.replica):
            raise ConfigError(f"replica {self.replica!r}: a request log's replica id is 1 to 100 letters, digits, '.', "
                              "'_' or '-'", field="serve.replica")
        self.clock = clock
        self.capacity = capacity
        self.max_request_rows = min(capacity, max_request_rows or max(1, capacity // 4))
        self.flush_s = flush_s
        self.segment_rows = segment_rows
        self.on_drop = on_drop or (lambda reason, n: None)
        self.store = store
        # records dropped, by reason: the event loop counts the first two, the writer the others (no key is shared)
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self.written = 0  # records in segments
        self.segments = 0
        self._queue: deque[tuple[Any, ...]] = deque()
        self._queued_in = 0  # rows appended (event loop only) ...
        self._queued_out = 0  # ... and taken (writer only): no lock needed for the difference
        self._kept: deque[_Kept] = deque()  # segments an unreachable object store did not take yet, oldest first
        self._kept_rows = 0
        self._retry_at = 0.0  # time.monotonic() of the next try of the kept segments
        self._backoff = 0.0
        self._reported = 0
        self._last_report = -math.inf
        self._error: str | None = None  # the last failure to write a segment, for the drop event
        self._failing: str | None = None  # its reason while writes keep failing: one traceback per streak
        self._writer_id = os.urandom(3).hex()
        self._seq = 0
        self._lock = threading.Lock()  # one writer at a time (the thread, or flush() from a caller)
        self._early = max(1, capacity // 2)
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rung-request-log", daemon=True)

    # -- the event loop's side ---------------------------------------------------------------

    def record(self, request_id: str, model: str, version: int, variant: str, *, status: int, latency_s: float,
               rows: int = 1, predictions: Sequence[Any] | NDArray[Any] | None = None,
               scores: Sequence[Any] | NDArray[Any] | None = None,
               features: Mapping[str, Sequence[Any] | NDArray[Any]] | None = None, shadow: bool = False) -> None:
        """Queue the records of one request: a tuple append, nothing more.

        ``predictions`` and ``scores`` (one per row, e.g. the model's numpy
        outputs) are kept by reference and converted in the writer thread:
        callers must not change them afterwards. ``features`` (column →
        values, as the request was parsed) that are lists are copied into
        tuples (the note above the queue's layout says why); numpy arrays are
        kept by reference, as the outputs are. A request's rows share its status,
        latency and time. Without ``scores``, numeric predictions are the
        scores. A queue past half full wakes the writer early. A request
        above ``max_request_rows``, or one the queue has no room for, is
        dropped whole and counted.
        """
        queued = self._queued_in - self._queued_out
        if rows > self.max_request_rows:
            self._drop("too_large", rows)
            return
        if queued + rows > self.capacity:
            self._drop("queue_full", rows)
            return
        self._queued_in += rows
        names = values = None
        if features:
            names, values = tuple(features), tuple([tuple(v) if type(v) is list else v for v in features.values()])
        self._queue.append((request_id, model, version, variant, shadow, status, latency_s * 1000.0, self.clock.now(),
                            rows, predictions, scores, names, values))
        if queued + rows >= self._early:
            self._wake.set()

    @property
    def queued(self) -> int:
        """Records waiting to be written."""
        return self._queued_in - self._queued_out

    @property
    def kept(self) -> int:
        """Records in segments an unreachable object store did not take yet (tried again, within ``capacity``)."""
        return self._kept_rows

    @property
    def dropped(self) -> int:
        """Records dropped so far, for any reason."""
        return sum(self.drops.values())

    def _drop(self, reason: str, records: int) -> None:
        self.drops[reason] += records
        self.on_drop(reason, records)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write everything still queued or kept; what the store will not take is counted.

        Kept segments get one more try whatever the pause; if the store is
        still away, they are dropped (``store_unavailable``) and reported.
        """
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        with self._lock:
            self._retry_at = 0.0
            self._write_queued()
            self._drop_kept(self._kept_rows)
        self.report_drops(final=True)

    def flush(self) -> int:
        """Write what is queued now (and what was kept, when its pause is over), in the caller's thread.

        Returns the number of records written.
        """
        with self._lock:
            return self._write_queued()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
                self.report_drops()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("request log: writing a segment failed")

    # -- the writer's side ------------------------------------------------------------------------

    def _write_queued(self) -> int:
        written = self._retry_kept()
        pending = len(self._queue)  # only what is here now: under load the queue never empties
        while pending:
            batch, rows = [], 0
            while pending and rows < self.segment_rows:
                item = self._queue.popleft()
                pending -= 1
                batch.append(item)
                rows += item[ROWS]
            try:
                written += self._write(batch)
            finally:  # taken off the queue whatever happened: written, kept or counted lost
                self._queued_out += rows
        self._trim_kept()
        self.written += written
        return written

    def _write(self, batch: list[tuple[Any, ...]]) -> int:
        """One segment per model and day of ``batch``; the records written (a failed segment is kept or counted lost)."""
        times = [item[TIME] for item in batch]
        first, last = utc(min(times)), utc(max(times))
        models = {item[MODEL] for item in batch}
        if len(models) == 1 and first.date() == last.date():  # the usual case: no need to look at each record
            groups = {(models.pop(), first.date()): batch}
        else:
            groups = {}
            for item in batch:
                groups.setdefault((item[MODEL], utc(item[TIME]).date()), []).append(item)
        written = 0
        for (model, day), items in groups.items():
            rows = sum(item[ROWS] for item in items)
            try:
                table = records_table(items)
            except Exception as exc:  # a value Arrow cannot hold: nothing to retry
                self._lost(model, rows, exc)
                continue
            segment_times = [item[TIME] for item in items]
            segment = _Kept(model, day, table, utc(min(segment_times)), utc(max(segment_times)))
            if self._kept:  # the store is away: the new records wait with the others, in order
                self._keep(segment)
                continue
            outcome = self._commit(segment)
            if outcome == "written":
                written += rows
            elif outcome == "unreachable":
                self._keep(segment)
        return written

    def _commit(self, segment: _Kept) -> str:
        """Write one segment: ``written``, ``unreachable`` (an object store did not answer: keep it) or ``lost`` (counted)."""
        if segment.name is None:  # named once: a retry writes the same object again, never a second copy
            self._seq += 1
            segment.name = (f"{segment.first.strftime(TIME_OF_DAY)}-{segment.last.strftime(TIME_OF_DAY)}-{os.getpid()}-"
                            f"{self._writer_id}-{self._seq:06d}.parquet")
        path = f"{partition_dir(self.replica, segment.model, segment.day)}/{segment.name}"
        try:
            self.root.write_table(path, segment.table)
        except OSError as exc:
            if not self.root.local:
                self._unreachable(exc)
                return "unreachable"
            self._lost(segment.model, segment.rows, exc)
            return "lost"
        except Exception as exc:  # an unwritable value: count the loss, keep serving
            self._lost(segment.model, segment.rows, exc)
            return "lost"
        if self._failing == "store_unavailable":
            log.warning("request log: %s answers again; writing the records kept for it", self.root.uri)
        self._failing = None
        self._backoff = 0.0
        self.segments += 1
        return "written"

    def _unreachable(self, exc: Exception) -> None:
        """The object store did not take a segment: log it once per outage, and pause longer before the next try."""
        self._error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if self._failing != "store_unavailable":
            log.error("request log: %s cannot be reached (%s); records are kept and tried again, up to "
                      "monitor.request_log.capacity = %d", self.root.uri, self._error, self.capacity)
            self._failing = "store_unavailable"
        self._backoff = min(RETRY_MAX_S, self._backoff * 2 if self._backoff else RETRY_FIRST_S)
        self._retry_at = time.monotonic() + self._backoff

    def _keep(self, segment: _Kept) -> None:
        """Add a segment to the kept ones, into the newest of them when it was never tried (fewer uploads later)."""
        import pyarrow as pa

        newest = self._kept[-1] if self._kept else None
        if (newest is not None and newest.name is None and (newest.model, newest.day) == (segment.model, segment.day)
                and newest.rows + segment.rows <= self.segment_rows):
            try:
                newest.table = pa.concat_tables([newest.table, segment.table], promote_options="permissive")
            except (pa.ArrowException, TypeError, ValueError):  # features of other types: a segment of its own
                pass
            else:
                newest.first, newest.last = min(newest.first, segment.first), max(newest.last, segment.last)
                self._kept_rows += segment.rows
                return
        self._kept.append(segment)
        self._kept_rows += segment.rows

    def _retry_kept(self) -> int:
        """Write the kept segments, oldest first, once their pause is over; stop at the first the store refuses."""
        written = 0
        while self._kept and time.monotonic() >= self._retry_at:
            segment = self._kept[0]
            outcome = self._commit(segment)
            if outcome == "unreachable":
                break
            self._kept.popleft()
            self._kept_rows -= segment.rows
            if outcome == "written":
                written += segment.rows
        return written

    def _trim_kept(self) -> None:
        """Drop the oldest kept records while the records kept and queued are more than ``capacity``."""
        excess = self._kept_rows + self.queued - self.capacity
        if excess > 0 and self._kept:
            self._drop_kept(excess)

    def _drop_kept(self, records: int) -> None:
        """Drop ``records`` of the oldest kept records (``store_unavailable``)."""
        dropped = 0
        while self._kept and dropped < records:
            oldest = self._kept[0]
            take = min(oldest.rows, records - dropped)
            if take == oldest.rows:
                self._kept.popleft()
            else:  # the newer rows of that segment stay (its name, tried already, still covers their times)
                oldest.table = oldest.table.slice(take)
            self._kept_rows -= take
            dropped += take
        if dropped:
            self._drop("store_unavailable", dropped)

    def _lost(self, model: str, records: int, exc: Exception) -> None:
        """Count the records of a segment that could not be written; the traceback once per streak of failures."""
        reason = "disk_full" if isinstance(exc, OSError) and exc.errno in _DISK_FULL else "write_error"
        self._error = f"{type(exc).__name__}: {exc}"
        if reason != self._failing:
            log.error("request log: %d records of %s lost (%s); later losses are counted, not logged each time",
                      records, model, reason, exc_info=exc)
            self._failing = reason
        self._drop(reason, records)

    def report_drops(self, *, final: bool = False) -> None:
        """An event with the count of records lost since the last one, at most once a minute (the writer calls it).

        ``final`` (at :meth:`stop`) reports what is left regardless of the minute.
        """
        counts = dict(self.drops)
        total = sum(counts.values())
        unreported = total - self._reported
        if not unreported or (not final and time.monotonic() - self._last_report < DROP_EVENT_EVERY_S):
            return
        self._last_report = time.monotonic()
        data = {"dropped": unreported, "total": total, **counts, "capacity": self.capacity,
                "max_request_rows": self.max_request_rows, "error": self._error, "replica": self.replica,
                "location": self.root.uri, "kept": self._kept_rows}
        causes = ", ".join(f"{reason} {n}" for reason, n in counts.items() if n)
        advice = ("raise monitor.request_log.capacity or max_request_rows, or check the disk" if not counts["store_unavailable"]
                  else f"{self.root.uri} could not be reached; {self._kept_rows} records are kept for it")
        log.warning("request log: %d records dropped (%d in all: %s); %s", unreported, total, causes, advice)
        if self.store is None:
            self._reported = total
            return
        try:
            self.store.append_event("request_log.dropped", actor="gateway", subject="request_log", data=data,
                                    time=self.clock.now())
            self._reported = total
        except Exception:  # the store is away: the count carries over to the next report
            log.exception("request log: could not record the drop event")
