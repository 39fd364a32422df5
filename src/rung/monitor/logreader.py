"""Reading the request log: DuckDB over the Parquet segments a question needs, and nothing else.

A window of a model reads only that model's directory, only the days the
window spans (``date=`` partitions computed from its bounds) and, within a
day, only the segments whose time range (in their name) meets the window;
then DuckDB filters by time. So the cost grows with the window, not with
the log. Feedback lives in the metadata store (small, and changed after the
fact, unlike the log); :func:`request_window` joins it in by feedback id.

A segment DuckDB cannot read (truncated, corrupted, not Parquet at all) is
skipped: logged as a warning once, remembered, and listed in the result
(``frame.attrs["skipped_segments"]``); the other segments still answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rung.clock import utc
from rung.monitor.requestlog import FEATURE_PREFIX, RECORD_COLUMNS, feedback_id, log_root, parse_feedback_id

if TYPE_CHECKING:
    import pandas as pd

    from rung.project import Project

__all__ = ["RequestLogReader", "request_window", "served", "CONTROLLER_COLUMNS"]

log = logging.getLogger(__name__)

# What the controller judges a rollout on (plus the feedback ``value``).
CONTROLLER_COLUMNS = ("request_id", "time", "version", "variant", "shadow", "status", "latency_ms", "prediction", "score")
SOURCE = ("read_parquet(?, hive_partitioning = true, union_by_name = true, "
          "hive_types = {'model': 'VARCHAR', 'date': 'DATE'})")
_MAX_RANGE_DAYS = 400  # a longer window lists the day directories instead of naming each day

# Segments found unreadable, by path → (size, mtime): a fact about the file, shared by every reader of this
# process so that a controller reading a window each tick pays for finding a bad segment once.
_BAD: dict[Path, tuple[int, int]] = {}
_BAD_LOCK = threading.Lock()


class RequestLogReader:
    """Queries over one request-log directory (any number of writers)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- which files ---------------------------------------------------------------------------

    def segments(self, model: str | None, since: datetime | None = None, until: datetime | None = None) -> list[Path]:
        """The segments that can hold records of ``model`` (None: every model) in ``[since, until)``."""
        since, until = utc(since), utc(until)
        out = []
        for model_dir in self._model_dirs(model):
            for day_dir, day in self._day_dirs(model_dir, since, until):
                out += [p for p in sorted(day_dir.glob("*.parquet")) if _overlaps(p.name, day, since, until)]
        return out

    def _model_dirs(self, model: str | None) -> list[Path]:
        if model is not None:
            directory = self.root / f"model={quote(model, safe='')}"
            return [directory] if directory.is_dir() else []
        return sorted(p for p in self.root.glob("model=*") if p.is_dir())

    @staticmethod
    def _day_dirs(model_dir: Path, since: datetime | None, until: datetime | None) -> list[tuple[Path, date]]:
        if since is not None and until is not None and (until - since).days < _MAX_RANGE_DAYS:
            days = [since.date() + timedelta(days=i) for i in range((until.date() - since.date()).days + 1)]
            found = [(model_dir / f"date={day.isoformat()}", day) for day in days]
            return [(path, day) for path, day in found if path.is_dir()]
        listed = []
        for path in model_dir.glob("date=*"):
            try:
                day = date.fromisoformat(path.name[len("date="):])
            except ValueError:
                continue
            if (since is None or day >= since.date()) and (until is None or day <= until.date()):
                listed.append((path, day))
        return sorted(listed, key=lambda found: found[1])

    # -- questions -------------------------------------------------------------------------------

    def window(self, model: str, since: datetime, until: datetime, *, version: int | None = None,
               shadow: bool | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Records of ``model`` with ``since <= time < until``: the record columns and the features.

        ``columns`` picks which features (by their own names; None: all of
        them; ``[]``: none). A feature whose name is also a record column
        keeps its ``f_`` prefix.
        """
        where = ["time >= ?", "time < ?"]
        params: list[Any] = [utc(since), utc(until)]
        if version is not None:
            where.append("version = ?")
            params.append(int(version))
        if shadow is not None:
            where.append("shadow = ?")
            params.append(bool(shadow))
        files = self.segments(model, since, until)
        wanted = None if columns is None else [FEATURE_PREFIX + c for c in columns]
        frame = self._select(files, [*RECORD_COLUMNS, "model"], " AND ".join(where), params, features=wanted,
                             order="time, request_id, row")
        return _feature_names(frame)

    def served(self, request_id: str, *, model: str | None = None, since: datetime | None = None) -> pd.DataFrame:
        """Who answered a request and who saw it as a shadow (``REQ#3``: only that row), with its inputs.

        The log is not indexed by request id: days are read from the newest
        back until the request is found (and the day before, which may hold
        the answer of a shadow copy logged after midnight).
        """
        import pandas as pd

        request, row = parse_feedback_id(request_id)
        where, params = "request_id = ?", list[Any]([request])
        if request != request_id:  # one row of a multi-row request
            where, params = where + " AND row = ?", [request, row]
        days: dict[date, list[Path]] = {}
        for path in self.segments(model, since, None):
            days.setdefault(date.fromisoformat(path.parent.name[len("date="):]), []).append(path)
        found: list[pd.DataFrame] = []
        skipped: list[str] = []
        for day in sorted(days, reverse=True):
            frame = self._select(days[day], [*RECORD_COLUMNS, "model"], where, params, features=None,
                                 order="shadow, time, row")
            skipped += frame.attrs.get("skipped_segments", [])
            if len(frame):
                found.append(frame)
            elif found:
                break
        result = pd.concat(found, ignore_index=True) if found else self._select([], [*RECORD_COLUMNS, "model"], where, params)
        result.attrs["skipped_segments"] = skipped
        return _feature_names(result)

    def match(self, ids: Iterable[str], *, since: datetime, until: datetime | None = None) -> dict[str, str]:
        """``{feedback id: model}`` for the ids answered (not as a shadow) in ``[since, until)``, all models."""
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

    def _select(self, files: list[Path], columns: Sequence[str], where: str, params: list[Any], *,
                features: Sequence[str] | None = (), order: str | None = None,
                join: tuple[str, Any, str] | None = None) -> pd.DataFrame:
        """``columns`` and the ``features`` columns (None: all of them) of the records in ``files`` matching ``where``.

        A segment that cannot be read is found by reading the segments one
        by one (only after the query over all of them failed), remembered
        and left out; the query then runs again without it.
        """
        import duckdb
        import pandas as pd

        usable = [f for f in files if not self._known_bad(f)]
        skipped = [str(f) for f in files if f not in usable]
        while True:
            if not usable:
                frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
                break
            con = _connect()
            try:
                if join is not None:
                    con.register(join[0], join[1])
                present = _columns(con, usable) if features is None or features else []
                chosen = [c for c in present if c.startswith(FEATURE_PREFIX) and (features is None or c in features)]
                select = ", ".join(_quote(c) for c in [*columns, *chosen])
                source = f"{SOURCE} JOIN {join[0]} {join[2]}" if join is not None else SOURCE
                query = f"SELECT {select} FROM {source} WHERE {where}" + (f" ORDER BY {order}" if order else "")
                frame = con.sql(query, params=[[str(f) for f in usable], *params]).to_arrow_table().to_pandas()
                for name in features or []:
                    if name not in frame.columns:
                        frame[name] = None  # asked for, in none of these segments
                break
            except duckdb.Error as exc:
                bad = [f for f in usable if not _readable(f)]
                if not bad:
                    raise
                for path in bad:
                    self._remember_bad(path, exc)
                usable = [f for f in usable if f not in bad]
                skipped += [str(f) for f in bad]
            finally:
                con.close()
        frame.attrs["skipped_segments"] = skipped
        return frame

    @staticmethod
    def _known_bad(path: Path) -> bool:
        seen = _BAD.get(path)
        if seen is None:
            return False
        try:
            stat = path.stat()
        except OSError:
            return True
        return seen == (stat.st_size, stat.st_mtime_ns)

    @staticmethod
    def _remember_bad(path: Path, exc: Exception) -> None:
        try:
            stat = path.stat()
            key = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = (-1, -1)
        with _BAD_LOCK:
            _BAD[path] = key
        log.warning("request log: skipping segment %s, which cannot be read (%s)", path, str(exc).splitlines()[0])


def request_window(project: Project, model: str, since: datetime, until: datetime, *,
                   reader: RequestLogReader | None = None) -> list[dict[str, Any]]:
    """What the controller judges a rollout on: records of ``[since, until)`` with their feedback ``value``.

    One dict per record (per input row), with the keys of
    :data:`CONTROLLER_COLUMNS` and ``value``; ``request_id`` is the row's
    feedback id (``REQ``, ``REQ#3``), so that each row stands on its own
    in the analysis (agreement of shadow answers pairs rows by it).
    """
    frame = (reader or RequestLogReader(log_root(project))).window(model, since, until, columns=[])
    if frame.empty:
        return []
    ids = [feedback_id(r, int(n)) for r, n in zip(frame["request_id"], frame["row"], strict=False)]
    values = project.store.feedback_values(sorted(set(ids)))
    frame = frame.assign(request_id=ids)[list(CONTROLLER_COLUMNS)]
    rows = _records(frame)
    for row in rows:
        row["value"] = values.get(row["request_id"])
    return rows


def served(project: Project, request_id: str, *, model: str | None = None,
           reader: RequestLogReader | None = None) -> list[dict[str, Any]]:
    """For ``rung history --request``: each record of the request (answer and shadow copies), with its feedback."""
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


def _connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _columns(con: Any, files: list[Path]) -> list[str]:
    """The union of the segments' column names (DuckDB reads only the footers)."""
    described = con.sql(f"DESCRIBE SELECT * FROM {SOURCE}", params=[[str(f) for f in files]]).fetchall()
    return [row[0] for row in described]


def _readable(path: Path) -> bool:
    """Whether DuckDB can read every value of one segment."""
    import duckdb

    con = _connect()
    try:
        con.sql("SELECT * FROM read_parquet(?)", params=[str(path)]).to_arrow_table()
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _feature_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``f_age`` → ``age``, unless that would clash with a record column."""
    taken = set(RECORD_COLUMNS) | {"model", "date"}
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


def _overlaps(name: str, day: date, since: datetime | None, until: datetime | None) -> bool:
    """Whether a segment named ``<first>-<last>-...`` may hold records in ``[since, until)`` (unknown names: yes)."""
    parts = name.split("-", 2)
    try:
        first = datetime.combine(day, datetime.strptime(parts[0], "%H%M%S%f").time(), UTC)
        last = datetime.combine(day, datetime.strptime(parts[1], "%H%M%S%f").time(), UTC)
    except (IndexError, ValueError):
        return True
    return (since is None or last >= since) and (until is None or first < until)


