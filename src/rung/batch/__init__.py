"""Batch scoring: a registered version over a CSV, a Parquet file or a SQL query, into a Parquet or CSV file.

::

    from rung.batch import predict_file
    result = predict_file(project, "churn@champion", "data/new.parquet", "scored.parquet")
    print(result.rows, result.rows_per_s, result.output_sha256)

``rung predict`` is this on the command line. Memory stays bounded (one
batch at a time), the output appears whole or not at all, and each run is
recorded with its lineage (``rung history``).
"""

from __future__ import annotations

from rung.batch.scoring import BatchResult, predict_file, resolve_version

__all__ = ["BatchResult", "predict_file", "resolve_version"]
