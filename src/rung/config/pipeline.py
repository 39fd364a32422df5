"""The sections of ``rung.yaml`` a pipeline's steps read: data, validation, split, evaluation.

With ``name``, ``task``, ``train``, ``tracking`` and ``registry`` they make up
:data:`rung.config.project.PIPELINE_SECTIONS`, the part of the settings that is
in every step's cache key; where steps run is apart (:mod:`rung.config.project`).
"""

from __future__ import annotations

from pydantic import Field

from rung.config.section import Section

__all__ = ["SqlSource", "DataSettings", "ValidationSettings", "SplitSettings", "EvaluateSettings"]


class SqlSource(Section):
    url: str = Field(description="SQLAlchemy URL of the database to read from")
    query: str = Field(description="SQL query whose result is the training data")


class DataSettings(Section):
    source: str | SqlSource = Field(
        default="data/train.csv",
        description="CSV or Parquet path (relative to the project), or {url, query} for SQL",
    )
    target: str = "target"
    schema_file: str = Field(default="schema.yaml", alias="schema")
    # The model's inputs: ``features`` when declared; otherwise every column the schema knows
    # but the target, the ``id`` column(s) and ``drop``. A column new in the data is never one.
    features: list[str] | None = None
    id: str | list[str] | None = None
    drop: list[str] = Field(default_factory=list)

    @property
    def id_columns(self) -> list[str]:
        return [] if self.id is None else [self.id] if isinstance(self.id, str) else list(self.id)


class ValidationSettings(Section):
    min_rows: int = Field(default=100, ge=0)
    max_missing_rate: float = Field(default=0.05, ge=0, le=1)
    max_duplicate_rate: float = Field(default=0.01, ge=0, le=1)
    missing_rate: dict[str, float] = Field(default_factory=dict)
    sample_rows: int = Field(default=5, ge=0, le=100)


class SplitSettings(Section):
    test_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    stratify: bool = True


class EvaluateSettings(Section):
    slices: list[str] = Field(default_factory=list)
    primary_metric: str | None = None
    max_slice_values: int = Field(default=20, ge=1)
