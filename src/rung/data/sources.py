"""Reading training data from a CSV or Parquet file or a SQL query.

``source_fingerprint`` is what the step cache sees of the outside world: the
sha256 of a file's bytes, so a changed file re-runs ingestion and an
unchanged one does not. A SQL source has no cheap fingerprint; it always
runs, and the steps after it still hit the cache when the rows are equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_source", "source_fingerprint", "describe_source", "read_table"]

_READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def describe_source(source: Any) -> str:
    if isinstance(source, str):
        return source
    return f"sql: {source.query} @ {_hide_password(source.url)}"


def _hide_password(url: str) -> str:
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<url>"


def _path(source: str, root: Path) -> Path:
    path = Path(source)
    return path if path.is_absolute() else root / path


def source_fingerprint(source: Any, root: Path) -> str | None:
    """sha256 of a file source; ``None`` (no caching) for SQL."""
    if not isinstance(source, str):
        return None
    path = _path(source, root)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DataError(f"data source {source} not found (data.source in rung.yaml); check the path") from None
    except OSError as exc:
        raise DataError(f"data source {source} cannot be read: {exc.strerror}") from None
    return digest.hexdigest()


def read_table(path: Path, label: str | None = None) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file, with errors that name the file."""
    import pandas as pd

    label = label or str(path)
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{label}: unsupported file type '{path.suffix}'; use .csv, .tsv or .parquet")
    if not path.is_file():
        raise DataError(f"{label}: file not found; check the path")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            # Only an empty cell is missing: pandas would also read "n/a", "NA", "null" ... as missing,
            # and text in a numeric column is something validation reports, not a gap it ignores.
            frame = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", keep_default_na=False, na_values=[""])
    except Exception as exc:  # pandas and pyarrow raise many types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{label}: cannot be read as {kind}: {first}") from None
    if frame.empty:
        raise DataError(f"{label}: no rows; the data source is empty")
    return frame


def read_source(source: Any, root: Path) -> pd.DataFrame:
    """The training data named by ``data.source``."""
    if isinstance(source, str):
        return read_table(_path(source, root), label=f"data source {source}")
    import pandas as pd
    import sqlalchemy as sa

    from rung.optional import require_sql_driver
    from rung.store import normalise_url

    url = normalise_url(source.url)
    require_sql_driver(url, purpose="a PostgreSQL data source")
    try:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                frame = pd.read_sql(sa.text(source.query), conn)
        finally:
            engine.dispose()
    except Exception as exc:
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DataError(f"data source {describe_source(source)}: query failed: {first}") from None
    if frame.empty:
        raise DataError(f"data source {describe_source(source)}: the query returned no rows")
    return frame
