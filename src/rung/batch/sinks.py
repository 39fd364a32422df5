"""Where scored rows go: a Parquet or CSV file that appears whole or not at all.

Batches are written one after another to a hidden temporary file next to the
output (same directory, so same file system) and the file is moved under its
final name with ``os.replace`` only once the last batch is written and
flushed to disk. A run that fails, is interrupted or is killed leaves no file
under the final name: at worst a ``.NAME.*.part`` file, which an error or
Ctrl-C removes and ``kill -9`` cannot.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rung.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["AtomicOutput", "output_kind", "copy_parquet"]


def output_kind(path: Path) -> str:
    """``parquet`` or ``csv``, from the output's extension."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise DataError(f"{path}: unknown output format; name it .parquet or .csv")


class AtomicOutput:
    """A writer of record batches into ``path``, which only exists once :meth:`commit` has run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = output_kind(path)
        if not path.parent.is_dir():
            raise DataError(f"no directory {path.parent} for the output; create it first")
        self.temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
        self._writer: Any = None
        self.schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self.schema = batch.schema
            self._writer = self._open(batch.schema)
        elif batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self._writer.write_batch(batch)

    def _open(self, schema: pa.Schema) -> Any:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(self.temp, schema, compression="snappy")
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(self.temp, schema)

    def commit(self) -> None:
        """Flush to disk and move the file under its final name (replacing any file there)."""
        if self._writer is None:
            raise DataError("the input has no rows; nothing was written")
        self._writer.close()
        self._writer = None
        with self.temp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None or self.temp.exists():
            self.abort()


def copy_parquet(parts: list[Path], output: AtomicOutput) -> None:
    """Append the batches of each Parquet part, in order, to ``output``: one row group at a time in memory."""
    import pyarrow.parquet as pq

    for part in parts:
        parquet = pq.ParquetFile(part)
        for group in range(parquet.num_row_groups):
            for batch in parquet.read_row_group(group).to_batches():
                output.write(batch)
