"""Reading the request log: every replica's segments a question needs, and nothing else.

The log (:mod:`rung.monitor.requestlog`) is a folder or an object-store
prefix with one prefix per replica (``replica=ID/``), and under it
``model=NAME/date=DAY/``; logs written before replicas had prefixes
(``model=NAME/...`` at the root) are read beside them. A window of a model
lists only that model's directory of each replica, only the days the window
spans (``date=`` partitions computed from its bounds) and, within a day,
only the segments whose time range (in their name) meets the window. So the
cost grows with the window and the number of replicas, not with the log.

On a folder DuckDB reads the chosen files itself. On an object store the
listing is one call per replica and day (through
:class:`rung.objectstore.Location`, with a delimiter, never the whole
bucket), the chosen segments are read with pyarrow, only the columns asked
for, a few at a time in threads, and the same DuckDB query runs over the
Arrow data (DuckDB's own S3 support would need an extension from the
internet). Feedback lives in the metadata store (small, and changed after
the fact, unlike the log); :func:`request_window` joins it in by feedback id.

Every result says which replicas it read (``frame.attrs["replicas"]``, a
list of :class:`ReplicaSeen`: rows each, and each one's newest record), so
a replica whose log is missing or late shows instead of silently being left
out. A segment that cannot be read (truncated, corrupted, not Parquet at
all) is skipped: logged as a warning once, remembered, and listed in the
result (``frame.attrs["skipped_segments"]``); the other segments still
answer. A store that cannot be reached at all is
:class:`~rung.errors.StoreUnavailable`, naming it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

from rung.clock import utc
from rung.errors import RungError, StoreUnavailable
from rung.monitor.requestlog import (
    FEATURE_PREFIX,
    RECORD_COLUMNS,
    as_location,
    feedback_id,
    log_root,
    parse_feedback_id,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from rung.objectstore import Location
    from rung.project import Project

__all__ = ["RequestLogReader", "ReplicaSeen", "Segment", "LoggedRequests", "request_window", "served",
           "describe_replicas", "CONTROLLER_COLUMNS", "LATE_S"]

log = logging.getLogger(__name__)

# What the controller judges a rollout on (plus the feedback ``value``).
CONTROLLER_COLUMNS = ("request_id", "time", "version", "variant", "shadow", "status", "latency_ms", "prediction", "score")
_HIVE = "hive_partitioning = true, union_by_name = true"
_REPLICA_SOURCE = f"SELECT * FROM read_parquet(?, {_HIVE}, hive_types = {{'replica': 'VARCHAR', 'model': 'VARCHAR', 'date': 'DATE'}})"
_LEGACY_SOURCE = f"SELECT *, NULL::VARCHAR AS replica FROM read_parquet(?, {_HIVE}, hive_types = {{'model': 'VARCHAR', 'date': 'DATE'}})"
_MAX_RANGE_DAYS = 400  # a longer window lists the day directories instead of naming each day
_THREADS = 8  # object-store requests in flight at once (listing and reading)
_WHOLE_BYTES = 8 << 20  # a smaller segment is fetched in one request, a larger one by ranges (its chosen columns)
LATE_S = 60.0  # a replica alive in the registry whose newest logged record is older than this before a window's end is late
_LIVE_S = 30.0  # heard from this recently before the window's end: alive

# Segments found unreadable, by location → (size, mtime): a fact about the file, shared by every reader of this
# process so that a controller reading a window each tick pays for finding a bad segment once.
_BAD: dict[str, tuple[int, int]] = {}
_BAD_LOCK = threading.Lock()
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Segment:
    """One segment of the log: its path under the log's root, whose it is, and (on an object store) its size and time."""

    path: str
    replica: str | None  # None: written before replicas had their own prefix
    model: str
    day: date
    size: int = -1
    mtime_ns: int = -1

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ReplicaSeen:
    """One replica's part in a result: its rows, and the newest record it had logged in the days read.

    ``replica`` is ``""`` for segments written before replicas had their own
    prefix. ``late`` (set by :func:`request_window`): alive in the registry
    of replicas, but its newest record is more than :data:`LATE_S` older
    than the window's end, or it logged nothing.
    """

    replica: str
    rows: int
    newest: datetime | None
    late: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"replica": self.replica, "rows": self.rows, "newest": self.newest.isoformat() if self.newest else None,
                "late": self.late}


class LoggedRequests(list[dict[str, Any]]):
    """The rows :func:`request_window` returns, and ``replicas``: whose logs they came from (:class:`ReplicaSeen`)."""

    replicas: list[ReplicaSeen]

    def __init__(self, rows: Iterable[dict[str, Any]] = (), replicas: Sequence[ReplicaSeen] = ()) -> None:
        super().__init__(rows)
        self.replicas = list(replicas)


def describe_replicas(seen: Iterable[ReplicaSeen | dict[str, Any]]) -> str:
    """``a 533 rows, b 1,064 rows (late)``: the replicas of a result in words."""
    words = []
    for one in seen:
        item = one.to_dict() if isinstance(one, ReplicaSeen) else one
        words.append(f"{item['replica'] or 'unnamed'} {item['rows']:,} rows" + (" (late)" if item.get("late") else ""))
    return ", ".join(words) or "none"


class RequestLogReader:
    """Queries over one request log (a folder or an object-store prefix; any number of replicas and writers)."""

    def __init__(self, root: Location | str | os.PathLike[str]) -> None:
        self.location = as_location(root)

    def __repr__(self) -> str:
        return f"RequestLogReader({self.location.uri!r})"

    # -- which files ---------------------------------------------------------------------------

    def replicas(self) -> list[str | None]:
        """The replicas that have a prefix in the log (None: the segments written before replicas had one)."""
        top = self._dirs("")
        found: list[str | None] = [unquote(n[len("replica="):]) for n in top if n.startswith("replica=")]
        if any(n.startswith("model=") for n in top):
            found.append(None)
        return found

    def segments(self, model: str | None, since: datetime | None = None, until: datetime | None = None) -> list[Segment]:
        """The segments, of every replica, that can hold records of ``model`` (None: every model) in ``[since, until)``."""
        since, until = utc(since), utc(until)
        return [s for s in self._listing(model, since, until) if _overlaps(s.name, s.day, since, until)]

    def _listing(self, model: str | None, since: datetime | None, until: datetime | None) -> list[Segment]:
        """Every segment of the days of ``[since, until)``, of every replica (a window's edges included)."""
        return self._files(self._day_dirs(model, since, until))

    def _day_dirs(self, model: str | None, since: datetime | None,
                  until: datetime | None) -> list[tuple[str, str | None, str, date]]:
        """``(prefix, replica, model, day)`` of each day directory that may hold the records asked for."""
        bases = [(f"replica={quote(r, safe='')}/" if r is not None else "", r) for r in self.replicas()]
        models: list[tuple[str, str | None, str]] = []  # (prefix of the model's directory, replica, model)
        if model is not None:
            models = [(f"{base}model={quote(model, safe='')}", replica, model) for base, replica in bases]
        else:
            for (base, replica), names in zip(bases, self._map(lambda b: self._dirs(b[0]), bases), strict=True):
                models += [(f"{base}{n}", replica, unquote(n[len("model="):])) for n in names if n.startswith("model=")]
        if since is not None and until is not None and (until - since).days < _MAX_RANGE_DAYS:
            days = [since.date() + timedelta(days=i) for i in range((until.date() - since.date()).days + 1)]
            return [(f"{prefix}/date={day.isoformat()}", replica, name, day) for prefix, replica, name in models for day in days]
        found = []
        for (prefix, replica, name), names in zip(models, self._map(lambda m: self._dirs(m[0]), models), strict=True):
            for entry in names:
                try:
                    day = date.fromisoformat(entry[len("date="):]) if entry.startswith("date=") else None
                except ValueError:
                    day = None
                if day is not None and (since is None or day >= since.date()) and (until is None or day <= until.date()):
                    found.append((f"{prefix}/{entry}", replica, name, day))
        return sorted(found, key=lambda d: (d[3], d[0]))

    def _files(self, day_dirs: list[tuple[str, str | None, str, date]]) -> list[Segment]:
        listed = self._map(lambda d: self._segment_files(d[0]), day_dirs)
        out = []
        for (prefix, replica, name, day), files in zip(day_dirs, listed, strict=True):
            out += [Segment(f"{prefix}/{file}", replica, name, day, size, mtime) for file, size, mtime in files]
        return out

    def _dirs(self, prefix: str) -> list[str]:
        """Folder names right under ``prefix``; a prefix that is not there has none."""
        local = self.location.local_path(prefix.rstrip("/"))
        if local is not None:
            try:
                with os.scandir(local) as entries:
                    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                return []
            except OSError as exc:
                raise self._unreachable(exc) from exc
        try:
            return self.location.dirs(prefix.rstrip("/"))
        except OSError as exc:
            raise self._unreachable(exc) from exc

    def _segment_files(self, prefix: str) -> list[tuple[str, int, int]]:
        """``(name, size, mtime)`` of the segments right under ``prefix``, sorted by name (a folder: no stat, -1)."""
        local = self.location.local_path(prefix)
        if local is not None:
            try:
                with os.scandir(local) as entries:
                    names = sorted(e.name for e in entries if e.name.endswith(".parquet") and not e.name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                return []
            except OSError as exc:
                raise self._unreachable(exc) from exc
            return [(n, -1, -1) for n in names]
        try:
            files = self.location.list(prefix, suffix=".parquet", recursive=False)
        except OSError as exc:
            raise self._unreachable(exc) from exc
        return [(f.path.rsplit("/", 1)[-1], f.size, f.mtime_ns) for f in files]

    def _unreachable(self, exc: Exception) -> StoreUnavailable:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreUnavailable(f"the request log at {self.location.uri} cannot be read: {first}")

    def _map(self, work: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``work`` over ``items``: in a few threads on an object store (each item is a request), in order on a folder."""
        if self.location.local or len(items) < 2:
            return [work(item) for item in items]
        with ThreadPoolExecutor(min(_THREADS, len(items)), thread_name_prefix="rung-log-read") as pool:
            return list(pool.map(work, items))

    # -- questions -------------------------------------------------------------------------------

    def window(self, model: str, since: datetime, until: datetime, *, version: int | None = None,
               shadow: bool | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Records of ``model`` with ``since <= time < until``, from every replica: the record columns and the features.

        ``columns`` picks which features (by their own names; None: all of
        them; ``[]``: none). A feature whose name is also a record column
        keeps its ``f_`` prefix. Each row says its ``replica`` (None: a
        segment from before replicas had prefixes).
        """
        where = ["time >= ?", "time < ?"]
        params: list[Any] = [utc(since), utc(until)]
        if version is not None:
            where.append("version = ?")
            params.append(int(version))
        if shadow is not None:
            where.append("shadow = ?")
            params.append(bool(shadow))
        listed = self._listing(model, utc(since), utc(until))
        files = [s for s in listed if _overlaps(s.name, s.day, utc(since), utc(until))]
        wanted = None if columns is None else [FEATURE_PREFIX + c for c in columns]
        frame = self._select(files, [*RECORD_COLUMNS, "model", "replica"], " AND ".join(where), params, features=wanted,
                             order="time, request_id, row")
        frame.attrs["replicas"] = _seen(frame, listed)
        return _feature_names(frame)

    def served(self, request_id: str, *, model: str | None = None, since: datetime | None = None) -> pd.DataFrame:
        """Who answered a request and who saw it as a shadow (``REQ#3``: only that row), with its inputs.

        The log is not indexed by request id: days are read from the newest
        back, every replica's segments of a day together, until the request
        is found (and the day before, which may hold the answer of a shadow
        copy logged after midnight).
        """
        import pandas as pd

        request, row = parse_feedback_id(request_id)
        where, params = "request_id = ?", list[Any]([request])
        if request != request_id:  # one row of a multi-row request
            where, params = where + " AND row = ?", [request, row]
        columns = [*RECORD_COLUMNS, "model", "replica"]
        days: dict[date, list[tuple[str, str | None, str, date]]] = {}
        for found_dir in self._day_dirs(model, utc(since), None):
            days.setdefault(found_dir[3], []).append(found_dir)
        found: list[pd.DataFrame] = []
        skipped: list[str] = []
        listed: list[Segment] = []
        for day in sorted(days, reverse=True):
            segments = self._files(days[day])
            listed += segments
            frame = self._select(segments, columns, where, params, features=None, order="shadow, time, row")
            skipped += frame.attrs.get("skipped_segments", [])
            if len(frame):
                found.append(frame)
            elif found:
                break
        if found:  # the answer first, then shadow copies, whichever day each was logged on
            result = pd.concat(found, ignore_index=True).sort_values(["shadow", "time", "row"], kind="stable", ignore_index=True)
        else:
            result = self._select([], columns, where, params)
        result.attrs["skipped_segments"] = skipped
        result.attrs["replicas"] = _seen(result, listed)
        return _feature_names(result)

    def match(self, ids: Iterable[str], *, since: datetime, until: datetime | None = None) -> dict[str, str]:
        """``{feedback id: model}`` for the ids answered (not as a shadow) in ``[since, until)``, all models and replicas."""
        import pyarrow as pa

        wanted = {fid: parse_feedback_id(fid) for fid in ids}
        if not wanted:
            return {}
        files = self.segments(None, since, until)
        keys = pa.table({"fid": list(wanted), "request_id": [r for r, _ in wanted.values()],
                         "row": pa.array([n for _, n in wanted.values()], pa.int32())})
        where, params = "NOT shadow AND time >= ?", [utc(since)]
        if until is not None:
            where, params = where + " AND time < ?", [*params, utc(until)]
        frame = self._select(files, ["fid", "model"], where, params, join=("wanted", keys, "USING (request_id, row)"))
        return dict(zip(frame["fid"], frame["model"], strict=False))

    # -- running a query ---------------------------------------------------------------------------

    def _select(self, segments: list[Segment], columns: Sequence[str], where: str, params: list[Any], *,
                features: Sequence[str] | None = (), order: str | None = None,
                join: tuple[str, Any, str] | None = None) -> pd.DataFrame:
        """``columns`` and the ``features`` columns (None: all of them) of the records in ``segments`` matching ``where``.

        On a folder DuckDB reads the files; a segment that cannot be read is
        found by reading the segments one by one (only after the query over
        all of them failed), remembered and left out; the query then runs
        again without it. On an object store the segments are read first
        (:meth:`_fetch`), then queried.
        """
        import duckdb
        import pandas as pd

        usable = [s for s in segments if not self._known_bad(s)]
        skipped = [self._where(s) for s in segments if s not in usable]
        table = None
        if usable and not self.location.local:
            table, unreadable = self._fetch(usable, features)
            skipped += unreadable
            usable = usable if table is not None else []
        while True:
            if not usable:
                frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
                break
            con = _connect()
            try:
                if join is not None:
                    con.register(join[0], join[1])
                if table is not None:
                    con.register("segments", table)
                    source, files_params = "segments", list[Any]()
                    present = table.column_names
                else:
                    source, files_params = self._source(usable)
                    wide = features is None or features
                    present = [r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {source}", params=files_params).fetchall()] if wide else []
                chosen = [c for c in present if c.startswith(FEATURE_PREFIX) and (features is None or c in features)]
                select = ", ".join(_quote(c) for c in [*columns, *chosen])
                source = f"{source} JOIN {join[0]} {join[2]}" if join is not None else source
                query = f"SELECT {select} FROM {source} WHERE {where}" + (f" ORDER BY {order}" if order else "")
                frame = con.sql(query, params=[*files_params, *params]).to_arrow_table().to_pandas()
                for name in features or []:
                    if name not in frame.columns:
                        frame[name] = None  # asked for, in none of these segments
                break
            except duckdb.Error as exc:
                if table is not None:
                    raise
                bad = [s for s in usable if not _readable(self._where(s))]
                if not bad:
                    raise
                for segment in bad:
                    self._remember_bad(segment, exc)
                usable = [s for s in usable if s not in bad]
                skipped += [self._where(s) for s in bad]
            finally:
                con.close()
        frame.attrs["skipped_segments"] = skipped
        return frame

    def _source(self, segments: list[Segment]) -> tuple[str, list[Any]]:
        """The FROM clause over a folder's segments (and its parameters): replicas' and older segments side by side."""
        current = [self._where(s) for s in segments if s.replica is not None]
        older = [self._where(s) for s in segments if s.replica is None]
        parts = [(sql, files) for sql, files in ((_REPLICA_SOURCE, current), (_LEGACY_SOURCE, older)) if files]
        return "(" + " UNION ALL BY NAME ".join(sql for sql, _ in parts) + ")", [files for _, files in parts]

    def _fetch(self, segments: list[Segment], features: Sequence[str] | None) -> tuple[pa.Table | None, list[str]]:
        """An object store's segments read into one Arrow table (the record columns and the features asked for).

        Returns the table (None: nothing readable) and the segments skipped
        as unreadable. :class:`~rung.errors.StoreUnavailable` when the store
        itself stops answering.
        """
        import pyarrow as pa

        wanted = None if features is None else set(features)

        def read(segment: Segment) -> pa.Table | Exception:
            try:
                return self._read_segment(segment, wanted)
            except Exception as exc:  # judged below: the store away, or this segment unreadable
                return exc

        tables, bad = [], []
        for segment, result in zip(segments, self._map(read, segments), strict=True):
            if not isinstance(result, Exception):
                tables.append(result)
                continue
            if isinstance(result, OSError) and not self._reachable(segment):
                raise self._unreachable(result) from result
            if not isinstance(result, (OSError, pa.ArrowException, ValueError)):
                raise result
            self._remember_bad(segment, result)
            bad.append(self._where(segment))
        return (_concat(tables) if tables else None), bad

    def _read_segment(self, segment: Segment, wanted: set[str] | None) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        filesystem = self.location.filesystem
        full = self.location.full(segment.path)
        if 0 <= segment.size <= _WHOLE_BYTES:
            with filesystem.open_input_stream(full) as stream:
                source: Any = pa.BufferReader(stream.read())  # one request for the whole segment
        else:
            source = filesystem.open_input_file(full)  # the footer, then the chosen columns' ranges
        parquet = pq.ParquetFile(source, pre_buffer=True)
        names = parquet.schema_arrow.names
        chosen = [c for c in names if c in RECORD_COLUMNS or (c.startswith(FEATURE_PREFIX) and (wanted is None or c in wanted))]
        table = parquet.read(columns=chosen)
        rows = table.num_rows
        return (table.append_column("model", pa.array([segment.model] * rows, pa.string()))
                .append_column("replica", pa.array([segment.replica] * rows, pa.string())))

    def _reachable(self, segment: Segment) -> bool:
        """Whether the store answers about ``segment`` (a failed read is then the segment's fault)."""
        try:
            self.location.filesystem.get_file_info(self.location.full(segment.path))
            return True
        except OSError:
            return False

    def _where(self, segment: Segment) -> str:
        """The segment as a path (a folder) or a URI (an object store): what is reported and remembered."""
        return self.location.full(segment.path) if self.location.local else f"{self.location.uri}/{segment.path}"

    def _stat(self, segment: Segment) -> tuple[int, int]:
        if not self.location.local:
            return segment.size, segment.mtime_ns
        stat = os.stat(self._where(segment))
        return stat.st_size, stat.st_mtime_ns

    def _known_bad(self, segment: Segment) -> bool:
        seen = _BAD.get(self._where(segment))
        if seen is None:
            return False
        try:
            return seen == self._stat(segment)
        except OSError:
            return True

    def _remember_bad(self, segment: Segment, exc: Exception) -> None:
        try:
            key = self._stat(segment)
        except OSError:
            key = (-1, -1)
        with _BAD_LOCK:
            _BAD[self._where(segment)] = key
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("request log: skipping segment %s, which cannot be read (%s)", self._where(segment), first)


def request_window(project: Project, model: str, since: datetime, until: datetime, *,
                   reader: RequestLogReader | None = None) -> LoggedRequests:
    """What the controller judges a rollout on: records of ``[since, until)`` with their feedback ``value``.

    One dict per record (per input row), with the keys of
    :data:`CONTROLLER_COLUMNS` and ``value``; ``request_id`` is the row's
    feedback id (``REQ``, ``REQ#3``), so that each row stands on its own
    in the analysis (agreement of shadow answers pairs rows by it). The
    result's ``replicas`` say whose logs were read, rows each, and name the
    replicas that the registry knows to be serving but whose log is missing
    or late (:data:`LATE_S`).
    """
    frame = (reader or RequestLogReader(log_root(project))).window(model, since, until, columns=[])
    seen = _against_registry(project, frame.attrs.get("replicas", []), since, until)
    if frame.empty:
        return LoggedRequests([], seen)
    ids = [feedback_id(r, int(n)) for r, n in zip(frame["request_id"], frame["row"], strict=False)]
    values = project.store.feedback_values(sorted(set(ids)))
    frame = frame.assign(request_id=ids)[list(CONTROLLER_COLUMNS)]
    rows = _records(frame)
    for row in rows:
        row["value"] = values.get(row["request_id"])
    return LoggedRequests(rows, seen)


def served(project: Project, request_id: str, *, model: str | None = None,
           reader: RequestLogReader | None = None) -> list[dict[str, Any]]:
    """For ``rung history --request``: each record of the request (answer and shadow copies, any replica), with its feedback."""
    frame = (reader or RequestLogReader(log_root(project))).served(request_id, model=model)
    if frame.empty:
        return []
    ids = [feedback_id(r, int(n)) for r, n in zip(frame["request_id"], frame["row"], strict=False)]
    values = project.store.feedback_values(sorted(set(ids)))
    rows = _records(frame)
    for row, fid in zip(rows, ids, strict=False):
        row["feedback_id"] = fid
        row["feedback"] = values.get(fid)
    return rows


# -- helpers ------------------------------------------------------------------------------------------


def _against_registry(project: Project, seen: list[ReplicaSeen], since: datetime, until: datetime) -> list[ReplicaSeen]:
    """``seen``, plus the replicas heard from during the window that logged nothing; the live ones behind marked late."""
    try:
        registered = project.store.replicas()
    except (RungError, AttributeError):  # no registry (an older store), or it cannot be read: the log's word stands
        return seen
    since, until = utc(since), utc(until)
    alive = {r.id for r in registered if utc(r.last_seen) >= until - timedelta(seconds=_LIVE_S)
             and utc(r.started_at) <= until}
    during = {r.id for r in registered if utc(r.last_seen) >= since and utc(r.started_at) <= until}
    out = []
    for one in seen:
        behind = one.newest is None or one.newest < until - timedelta(seconds=LATE_S)
        out.append(ReplicaSeen(one.replica, one.rows, one.newest, late=one.replica in alive and behind))
    named = {one.replica for one in seen}
    out += [ReplicaSeen(r, 0, None, late=r in alive) for r in sorted(during - named)]
    return out


def _seen(frame: pd.DataFrame, listed: list[Segment]) -> list[ReplicaSeen]:
    """Each replica's rows in ``frame`` and its newest record (in the rows, or named by its segments in the days read)."""
    newest: dict[str, datetime] = {}
    for segment in listed:
        span = _span(segment.name, segment.day)
        if span is not None:
            key = segment.replica or ""
            newest[key] = max(newest.get(key, span[1]), span[1])
    rows: dict[str, int] = {key: 0 for key in newest}
    if len(frame) and "replica" in frame:
        names = frame["replica"].fillna("")
        for key, count in names.value_counts().items():
            rows[str(key)] = int(count)
        if "time" in frame:
            for key, latest in frame.groupby(names)["time"].max().items():
                moment = latest.to_pydatetime() if hasattr(latest, "to_pydatetime") else latest
                if moment is not None and moment == moment:  # not NaT
                    newest[str(key)] = max(newest.get(str(key), moment), moment)
    return [ReplicaSeen(key, rows[key], newest.get(key)) for key in sorted(rows)]


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Segments' tables as one: missing columns null, numbers widened, and text where segments disagree on a type."""
    import pyarrow as pa

    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    kinds: dict[str, set[Any]] = {}
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):
                kinds.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, types in kinds.items() if len(types) > 1}
    as_text = []
    for table in tables:
        for name in mixed & set(table.column_names):
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).cast(pa.string()))
        as_text.append(table)
    return pa.concat_tables(as_text, promote_options="permissive")


def _connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _readable(path: str) -> bool:
    """Whether DuckDB can read every value of one segment."""
    import duckdb

    con = _connect()
    try:
        con.sql("SELECT * FROM read_parquet(?)", params=[path]).to_arrow_table()
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _feature_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``f_age`` → ``age``, unless that would clash with a record column."""
    taken = set(RECORD_COLUMNS) | {"model", "date", "replica"}
    renames = {c: c[len(FEATURE_PREFIX):] for c in frame.columns
               if c.startswith(FEATURE_PREFIX) and c[len(FEATURE_PREFIX):] not in taken}
    renamed = frame.rename(columns=renames) if renames else frame
    renamed.attrs = dict(frame.attrs)
    return renamed


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain dicts with None (not NaN) for what is missing, and ``datetime`` times."""
    plain = frame.astype(object).where(frame.notna(), None)
    rows: list[dict[str, Any]] = plain.to_dict("records")
    for row in rows:
        moment = row.get("time")
        if moment is not None and hasattr(moment, "to_pydatetime"):
            row["time"] = moment.to_pydatetime()
        for key in ("version", "status", "row"):
            if row.get(key) is not None:
                row[key] = int(row[key])
        if row.get("shadow") is not None:
            row["shadow"] = bool(row["shadow"])
    return rows


def _span(name: str, day: date) -> tuple[datetime, datetime] | None:
    """The times of a segment's oldest and newest record, from its name ``<first>-<last>-...`` (None: another name)."""
    parts = name.split("-", 2)
    try:
        first = datetime.combine(day, datetime.strptime(parts[0], "%H%M%S%f").time(), UTC)
        last = datetime.combine(day, datetime.strptime(parts[1], "%H%M%S%f").time(), UTC)
    except (IndexError, ValueError):
        return None
    return first, last


def _overlaps(name: str, day: date, since: datetime | None, until: datetime | None) -> bool:
    """Whether a segment named ``<first>-<last>-...`` may hold records in ``[since, until)`` (unknown names: yes)."""
    span = _span(name, day)
    if span is None:
        return True
    return (since is None or span[1] >= since) and (until is None or span[0] < until)
