"""Where batch rows come from: a Parquet file, a CSV file or a SQL query, read in bounded batches.

Each source yields ``pyarrow.RecordBatch`` es of at most ``batch_rows`` rows
and never holds the whole input: Parquet by row groups
(``ParquetFile.iter_batches``), CSV by blocks (``pyarrow.csv.open_csv``),
SQL by cursor chunks. A CSV's columns that the model takes are read with the
signature's types rather than guessed from its first block, so a text column
of digits stays text and a number that does not parse is an error naming the
column and the row, not a surprise 40 blocks in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import DataError, DataValidationError
from rung.models.signature import Column

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Source", "FileSource", "SqlSource", "open_source", "file_sha256"]

CHUNK_BYTES = 8 * 1024 * 1024


def file_sha256(path: Path) -> str:
    """The file's sha256, read in chunks: the input of a batch run is named by its content in the lineage."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _arrow_type(column: Column) -> pa.DataType:
    import pyarrow as pa

    if column.type in ("long", "integer"):
        return pa.int64()
    if column.type in ("double", "float"):
        return pa.float64()
    if column.type == "boolean":
        return pa.bool_()
    return pa.string()


@dataclass
class Source:
    """Rows to score: ``batches()`` yields them; ``lineage()`` says what they were, for the record."""

    columns: Sequence[Column]
    batch_rows: int
    keep: Sequence[str] | None = None

    @property
    def total_rows(self) -> int | None:
        """The number of rows when the source knows it without reading them (Parquet's footer), else ``None``."""
        return None

    @property
    def label(self) -> str:
        raise NotImplementedError

    def batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def lineage(self) -> dict[str, Any]:
        raise NotImplementedError

    def _wanted(self, available: Sequence[str]) -> list[str] | None:
        """The columns to read: all (``None``), or those kept plus those the model takes."""
        if self.keep is None:
            return None
        missing = [k for k in self.keep if k not in available]
        if missing:
            raise DataError(f"{self.label}: no column {', '.join(missing)} to keep; it has {', '.join(available)}")
        model = [c.name for c in self.columns]
        return list(dict.fromkeys([*self.keep, *(n for n in model if n in available)]))


@dataclass
class FileSource(Source):
    """A Parquet or CSV file; the kind is told by its extension (``.parquet``/``.pq``, ``.csv``/``.csv.gz``)."""

    path: Path = field(default_factory=Path)
    kind: str = "parquet"

    @property
    def label(self) -> str:
        return str(self.path)

    @property
    def total_rows(self) -> int | None:
        if self.kind != "parquet":
            return None
        return int(self._parquet().metadata.num_rows)

    def _parquet(self) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:
            raise DataError(f"{self.path}: not a readable Parquet file: {_first_line(exc)}") from exc

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.kind == "parquet":
            parquet = self._parquet()
            wanted = self._wanted(parquet.schema_arrow.names)
            yield from parquet.iter_batches(batch_size=self.batch_rows, columns=wanted)
        else:
            yield from self._csv_batches()

    def _csv_batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        types = {c.name: _arrow_type(c) for c in self.columns}
        # About batch_rows rows a block: the width of a row is guessed from the file's first bytes.
        block = max(1 << 16, min(1 << 26, self.batch_rows * _row_bytes(self.path)))
        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(block_size=block),
                convert_options=pcsv.ConvertOptions(column_types=types),
            )
        except pa.ArrowInvalid as exc:
            if "conversion error" in str(exc):  # in the first block
                raise self._conversion_error(exc, _header(self.path), 0) from None
            raise DataError(f"{self.path}: not a readable CSV file: {_first_line(exc)}") from exc
        names = reader.schema.names
        wanted = self._wanted(names)
        offset = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise self._conversion_error(exc, names, offset) from None
            offset += batch.num_rows
            yield batch.select(wanted) if wanted is not None else batch

    def _conversion_error(self, exc: Exception, names: list[str], offset: int) -> DataError:
        """A value that does not parse as its column's type: find the column and the row, for the message."""
        message = str(exc)
        found = re.search(r"CSV column #(\d+).*invalid value '(.*)'", message)
        if not found:
            return DataError(f"{self.path}: cannot be read after row offset {offset}: {_first_line(exc)}")
        index = int(found.group(1))
        name = names[index] if index < len(names) else f"#{index}"
        value = found.group(2)
        column = next((c for c in self.columns if c.name == name), None)
        expected = "a number" if column is None or column.numeric else column.type
        row = _find_row(self.path, name, value, start=offset)
        where = f"row offset {row}" if row is not None else f"a row after offset {offset}"
        return DataValidationError(f"{self.path}: column {name} at {where}: expected {expected}, got {value!r}; "
                                   f"fix the value or leave the row out")

    def lineage(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path.resolve()), "sha256": file_sha256(self.path)}


def _header(path: Path) -> list[str]:
    """The column names on a CSV file's first line (the error path only)."""
    import csv
    import gzip

    with (gzip.open(path, "rt") if path.name.lower().endswith(".gz") else path.open(newline="")) as fh:
        return next(csv.reader(fh), [])


def _row_bytes(path: Path) -> int:
    """Bytes a row, from the first lines of the file (at least 16)."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    lines = head.count(b"\n")
    return max(16, len(head) // max(1, lines))


def _find_row(path: Path, column: str, value: str, *, start: int) -> int | None:
    """The offset of the first row at or after ``start`` whose ``column`` reads as ``value``: the error path only."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(path, convert_options=pcsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()}))
    offset = 0
    for batch in reader:
        values = batch.column(0).to_pylist()
        for i, v in enumerate(values):
            if offset + i >= start and v == value:
                return offset + i
        offset += batch.num_rows
    return None


@dataclass
class SqlSource(Source):
    """The rows of ``query`` on the database at ``url`` (SQLAlchemy), fetched ``batch_rows`` at a time."""

    url: str = ""
    query: str = ""

    @property
    def label(self) -> str:
        return f"SQL query on {_redacted(self.url)}"

    def batches(self) -> Iterator[pa.RecordBatch]:
        import pandas as pd
        import pyarrow as pa
        import sqlalchemy as sa

        from rung.optional import require_sql_driver

        require_sql_driver(self.url, purpose="reading a batch from PostgreSQL")
        try:
            engine = sa.create_engine(self.url)
        except Exception as exc:
            raise DataError(f"{self.label}: cannot open the database: {_first_line(exc)}") from exc
        schema: pa.Schema | None = None
        try:
            with engine.connect().execution_options(stream_results=True) as conn:
                try:
                    chunks = pd.read_sql_query(sa.text(self.query), conn, chunksize=self.batch_rows)
                    for chunk in chunks:
                        wanted = self._wanted(list(chunk.columns))
                        batch = pa.RecordBatch.from_pandas(chunk if wanted is None else chunk[wanted], preserve_index=False)
                        if schema is None:
                            schema = batch.schema
                        elif batch.schema != schema:
                            batch = _conform(batch, schema)
                        yield batch
                except DataError:
                    raise
                except Exception as exc:
                    raise DataError(f"{self.label}: the query failed: {_first_line(exc)}") from exc
        finally:
            engine.dispose()

    def lineage(self) -> dict[str, Any]:
        return {"kind": "sql", "url": _redacted(self.url), "query": self.query,
                "sha256": hashlib.sha256(self.query.encode()).hexdigest()}


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A later chunk in the first chunk's types (an all-NULL chunk reads as another type)."""
    import pyarrow as pa

    arrays = []
    for f in schema:
        column = batch.column(f.name)
        arrays.append(pa.nulls(len(column), f.type) if column.null_count == len(column) else column.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _redacted(url: str) -> str:
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_source(input: str | Path, columns: Sequence[Column], *, batch_rows: int, keep: Sequence[str] | None = None,
                sql_url: str | None = None) -> Source:
    """The source ``input`` names: a SQL query when ``sql_url`` is given, else a Parquet or CSV file by its extension."""
    if sql_url:
        return SqlSource(columns=columns, batch_rows=batch_rows, keep=keep, url=sql_url, query=str(input))
    path = Path(input)
    if not path.is_file():
        raise DataError(f"no input file {path}; give a CSV or Parquet file, or a query with --sql URL")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        kind = "parquet"
    elif name.endswith((".csv", ".csv.gz")):
        kind = "csv"
    else:
        raise DataError(f"{path}: unknown input format; give a .csv or .parquet file")
    return FileSource(columns=columns, batch_rows=batch_rows, keep=keep, path=path, kind=kind)
