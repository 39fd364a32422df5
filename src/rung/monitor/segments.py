"""Which segments of the request log a question needs, and how they are read.

This exists so that :mod:`rung.monitor.logreader` can ask its questions
(a window, who served a request) without knowing the log's layout or
where it is stored. The log (:mod:`rung.monitor.requestlog`) is a folder
or an object-store prefix with one prefix per replica (``replica=ID/``),
and under it ``model=NAME/date=DAY/``; logs written before replicas had
prefixes (``model=NAME/...`` at the root) are read beside them. A window
of a model lists only that model's directory of each replica, only the
days the window spans (``date=`` partitions computed from its bounds) and,
within a day, only the segments whose time range (in their name) meets
the window. So the cost grows with the window and the number of replicas,
not with the log.

On a folder DuckDB reads the chosen files itself. On an object store the
listing is one call per replica and day (through
:class:`rung.objectstore.Location`, with a delimiter, never the whole
bucket), the chosen segments are read with pyarrow, only the columns asked
for, a few at a time in threads, and the same DuckDB query runs over the
Arrow data (DuckDB's own S3 support would need an extension from the
internet).

A segment that cannot be read (truncated, corrupted, not Parquet at all)
is skipped: logged as a warning once, remembered for the process
(``_BAD``, by its size and time), and listed in the result
(``frame.attrs["skipped_segments"]``); the other segments still answer. A
store that cannot be reached at all is
:class:`~rung.errors.StoreUnavailable`, naming it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

from rung.clock import utc
from rung.errors import StoreUnavailable
from rung.monitor.records import FEATURE_PREFIX, RECORD_COLUMNS
from rung.monitor.requestlog import as_location

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from rung.objectstore import Location

__all__ = ["Segment", "SegmentReader", "overlaps", "day_span"]

log = logging.getLogger(__name__)

_HIVE = "hive_partitioning = true, union_by_name = true"
_REPLICA_SOURCE = f"SELECT * FROM read_parquet(?, {_HIVE}, hive_types = {{'replica': 'VARCHAR', 'model': 'VARCHAR', 'date': 'DATE'}})"
_LEGACY_SOURCE = f"SELECT *, NULL::VARCHAR AS replica FROM read_parquet(?, {_HIVE}, hive_types = {{'model': 'VARCHAR', 'date': 'DATE'}})"
_MAX_RANGE_DAYS = 400  # a longer window lists the day directories instead of naming each day
_THREADS = 8  # object-store requests in flight at once (listing and reading)
_WHOLE_BYTES = 8 << 20  # a smaller segment is fetched in one request, a larger one by ranges (its chosen columns)

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



class SegmentReader:
    """The segments of one request log (a folder or an object-store prefix): which ones a question needs, and reading them.

    :class:`~rung.monitor.logreader.RequestLogReader` asks its questions on top of this.
    """

    def __init__(self, root: Location | str | os.PathLike[str]) -> None:
        self.location = as_location(root)

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
        return [s for s in self._listing(model, since, until) if overlaps(s.name, s.day, since, until)]

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



def day_span(name: str, day: date) -> tuple[datetime, datetime] | None:
    """The times of a segment's oldest and newest record, from its name ``<first>-<last>-...`` (None: another name)."""
    parts = name.split("-", 2)
    try:
        first = datetime.combine(day, datetime.strptime(parts[0], "%H%M%S%f").time(), UTC)
        last = datetime.combine(day, datetime.strptime(parts[1], "%H%M%S%f").time(), UTC)
    except (IndexError, ValueError):
        return None
    return first, last


def overlaps(name: str, day: date, since: datetime | None, until: datetime | None) -> bool:
    """Whether a segment named ``<first>-<last>-...`` may hold records in ``[since, until)`` (unknown names: yes)."""
    span = day_span(name, day)
    if span is None:
        return True
    return (since is None or span[1] >= since) and (until is None or span[0] < until)
