"""Questions to the request log: a window of a model, who served a request, which model answered an id.

This exists to answer those questions for the controller, the monitor,
feedback and ``rung history``; which segment files a question needs and
how they are read (a folder or an object store, unreadable segments
skipped) is :mod:`rung.monitor.segments`. Feedback lives in the metadata
store (small, and changed after the fact, unlike the log);
:func:`request_window` joins it in by feedback id.

Every result says which replicas it read (``frame.attrs["replicas"]``, a
list of :class:`ReplicaSeen`: rows each, and each one's newest record), so
a replica whose log is missing or late shows instead of silently being left
out; the segments skipped as unreadable are in
``frame.attrs["skipped_segments"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rung.clock import utc
from rung.errors import RungError
from rung.monitor.records import FEATURE_PREFIX, RECORD_COLUMNS
from rung.monitor.requestlog import feedback_id, log_root, parse_feedback_id
from rung.monitor.segments import Segment, SegmentReader, day_span, overlaps

if TYPE_CHECKING:
    import pandas as pd

    from rung.project import Project

__all__ = ["RequestLogReader", "ReplicaSeen", "LoggedRequests", "request_window", "served",
           "describe_replicas", "CONTROLLER_COLUMNS", "LATE_S"]

# What the controller judges a rollout on (plus the feedback ``value``).
CONTROLLER_COLUMNS = ("request_id", "time", "version", "variant", "shadow", "status", "latency_ms", "prediction", "score")
LATE_S = 60.0  # a replica alive in the registry whose newest logged record is older than this before a window's end is late
_LIVE_S = 30.0  # heard from this recently before the window's end: alive


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


class RequestLogReader(SegmentReader):
    """Queries over one request log (a folder or an object-store prefix; any number of replicas and writers)."""

    def __repr__(self) -> str:
        return f"RequestLogReader({self.location.uri!r})"

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
        files = [s for s in listed if overlaps(s.name, s.day, utc(since), utc(until))]
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
        span = day_span(segment.name, segment.day)
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
