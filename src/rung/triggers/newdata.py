"""Has the training data changed since the last retraining? A fingerprint of a file source says.

A fingerprint lists the source's files (name, size, mtime, rows when cheap)
and a sha256 of their contents, streamed in chunks. The hash is over contents
and names, not mtimes, so copying or touching an unchanged file is not "new
data". Sources past ``sample_above`` bytes (256 MiB by default) are not read
whole on every tick: their hash covers names, sizes, mtimes and the first and
last MiB of each file, and the fingerprint's ``note`` says so.

SQL sources have no cheap fingerprint: :func:`fingerprint` returns None for
them and new-data triggering needs a file source (a ``row_count_query`` would
be the way to add it).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rung.errors import DataError

__all__ = ["FileEntry", "DataFingerprint", "fingerprint", "changed", "SQL_NOTE"]

logger = logging.getLogger(__name__)

SQL_NOTE = "new-data triggering needs a file source (CSV or Parquet); a SQL source would need a row_count_query, not supported yet"
DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")  # the files taken from a directory or glob
_TEXT_SUFFIXES = (".csv", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CHUNK = 1 << 20
_MIB = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the source's directory
    size: int
    mtime_ns: int
    rows: int | None  # data rows (CSV: lines after the header), None when not counted


@dataclass(frozen=True)
class DataFingerprint:
    """What a data source held at one moment, JSON-safe through :meth:`to_dict`."""

    source: str
    files: tuple[FileEntry, ...]
    content_hash: str
    hash_mode: Literal["full", "sampled"]
    note: str | None = None

    @property
    def rows(self) -> int | None:
        """Rows over all files, when every file's were counted."""
        counts = [f.rows for f in self.files]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self), "files": [asdict(f) for f in self.files]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataFingerprint:
        try:
            files = tuple(FileEntry(str(f["path"]), int(f["size"]), int(f["mtime_ns"]), None if f["rows"] is None else int(f["rows"])) for f in data["files"])
            mode = data["hash_mode"]
            if mode not in ("full", "sampled"):
                raise ValueError(mode)
            return cls(str(data["source"]), files, str(data["content_hash"]), mode, data.get("note"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a data fingerprint ({type(exc).__name__}: {exc})") from exc


def fingerprint(source: object, *, root: Path | None = None, sample_above: int = 256 * _MIB) -> DataFingerprint | None:
    """Fingerprint a file, a directory (its CSV and Parquet files, recursively) or a glob pattern.

    ``source`` is ``data.source`` from ``rung.yaml``; a relative path is
    relative to ``root`` (the project directory; default: the working
    directory). A SQL source (anything not a path) gives None, see
    :data:`SQL_NOTE`.
    """
    if not isinstance(source, (str, os.PathLike)):
        logger.info("%s", SQL_NOTE)
        return None
    files = _files(str(source), root or Path.cwd())
    total = sum(path.stat().st_size for path, _ in files)
    sampled = total > sample_above
    digest = hashlib.sha256()
    entries = []
    for path, name in files:
        stat = path.stat()
        newlines: tuple[int, bool] | None
        digest.update(f"{name}\0{stat.st_size}\0".encode())
        if sampled:
            digest.update(f"{stat.st_mtime_ns}\0".encode())
            _sample(path, stat.st_size, digest)
            newlines = None
        else:
            newlines = _stream(path, digest)
        entries.append(FileEntry(name, stat.st_size, stat.st_mtime_ns, _rows(path, newlines)))
    note = None
    if sampled:
        note = (f"sampled hash: the source holds {total / _MIB:,.0f} MiB (over {sample_above / _MIB:,.0f} MiB), so it covers "
                "names, sizes, mtimes and the first and last MiB of each file; CSV rows are not counted")  # fmt: skip
    return DataFingerprint(str(source), tuple(entries), digest.hexdigest(), "sampled" if sampled else "full", note)


def changed(previous: Mapping[str, Any] | DataFingerprint | None, current: DataFingerprint) -> str | None:
    """Why ``current`` differs from ``previous`` ("2 new files (b.csv, c.csv)", "rows 4,000 -> 4,600"), or None.

    With no previous fingerprint there is nothing to compare with: None.
    """
    if previous is None:
        return None
    before = previous if isinstance(previous, DataFingerprint) else DataFingerprint.from_dict(previous)
    old, new = {f.path: f for f in before.files}, {f.path: f for f in current.files}
    reasons = []
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    if added:
        reasons.append(f"{len(added)} new file{'s' if len(added) > 1 else ''} ({_names(added)})")
    if removed:
        reasons.append(f"{len(removed)} file{'s' if len(removed) > 1 else ''} removed ({_names(removed)})")
    if before.rows is not None and current.rows is not None and before.rows != current.rows:
        reasons.append(f"rows {before.rows:,} -> {current.rows:,}")
    if not reasons and before.content_hash != current.content_hash:
        sampled = "sampled" in (before.hash_mode, current.hash_mode)
        reasons.append("content changed (sampled hash: sizes, mtimes, first and last MiB)" if sampled else "content hash changed")
    return "; ".join(reasons) or None


def _files(source: str, root: Path) -> list[tuple[Path, str]]:
    """The data files of ``source``, sorted, each with its name relative to the source's directory."""
    given = Path(source).expanduser()
    where = given if given.is_absolute() else root / given
    if glob.has_magic(source):
        anchor = Path() if given.is_absolute() else root
        base = anchor.joinpath(*_until_magic(given.parts))
        pattern = str(given) if given.is_absolute() else os.path.join(glob.escape(str(root)), str(given))
        found = [Path(p) for p in glob.glob(pattern, recursive=True)]
        paths = sorted(p for p in found if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
        if not paths:
            raise DataError(f"data source {source}: matches no CSV or Parquet files; check data.source in rung.yaml")
        return [(p, p.relative_to(base).as_posix()) for p in paths]
    if where.is_file():
        return [(where, where.name)]
    if where.is_dir():
        paths = sorted(
            p for p in where.rglob("*")
            if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not any(part.startswith((".", "_")) for part in p.relative_to(where).parts)
        )  # fmt: skip
        if not paths:
            raise DataError(f"data source {source}: the directory {where} holds no CSV or Parquet files")
        return [(p, p.relative_to(where).as_posix()) for p in paths]
    raise DataError(f"data source {source}: not found (looked for {where}); check data.source in rung.yaml")


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")


def _until_magic(parts: tuple[str, ...]) -> list[str]:
    kept = []
    for part in parts:
        if glob.has_magic(part):
            break
        kept.append(part)
    return kept


def _stream(path: Path, digest: Any) -> tuple[int, bool]:
    """Hash the whole file; its newline count and whether it ends without one (for CSV rows)."""
    newlines, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    return newlines, last != b"\n"


def _sample(path: Path, size: int, digest: Any) -> None:
    with path.open("rb") as handle:
        digest.update(handle.read(_MIB))
        if size > _MIB:
            handle.seek(max(_MIB, size - _MIB))
            digest.update(handle.read(_MIB))


def _rows(path: Path, newlines: tuple[int, bool] | None) -> int | None:
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError: not a readable Parquet file
            return None
    if suffix in _TEXT_SUFFIXES and newlines is not None:
        count, unterminated = newlines
        lines = count + (1 if unterminated else 0)
        return max(lines - 1, 0)  # the header; quoted newlines inside fields would count as rows
    return None
