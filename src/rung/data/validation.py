"""Validating a data batch: the project's pandera schema plus quality checks.

The schema (``schema.yaml``, pandera's own YAML format) is inferred by
``rung init`` from the sample data and is the user's to edit: types,
nullability, ranges, category sets. On top of it rung checks what a schema
does not express: the row count, missing rates per column, the rate of
duplicated rows, and text in a column the schema declares numeric (``n/a``,
``unknown``): only an empty cell is a missing value, anything else that is
not a number is reported with its count and examples. Every failing check is
collected (pandera runs lazily), so one run shows the whole list, each with
sample values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Check", "ValidationReport", "infer_schema", "load_schema", "validate_frame"]

MAX_CATEGORIES = 50


@dataclass(frozen=True)
class Check:
    name: str
    column: str | None
    passed: bool
    observed: Any = None
    expected: Any = None
    failures: int = 0
    samples: list[Any] = field(default_factory=list)
    warning: bool = False  # passed, but worth a look (a column new in the data)


@dataclass(frozen=True)
class ValidationReport:
    rows: int
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.warning]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "checks": [asdict(c) for c in self.checks]}

    def summary(self) -> str:
        """One line naming the failed checks; a check whose ``observed`` is text (an explanation) shows it."""
        parts = [
            f"{c.column + ': ' if c.column else ''}{c.name}" + (f" ({c.observed})" if isinstance(c.observed, str) else "")
            for c in self.failed
        ]
        shown = "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")
        return f"{len(parts)} of {len(self.checks)} data checks failed ({shown})"


def infer_schema(frame: pd.DataFrame, *, margin: float = 0.5) -> Any:
    """A pandera schema from sample data, meant to be edited.

    Numeric ranges are widened by ``margin`` of the observed span on each
    side (never below zero for a column that is never negative), because a
    schema that rejects the next honest batch is worse than none. Text
    columns with at most 50 distinct values get their category set.
    """
    import pandas as pd
    import pandera.pandas as pa

    columns = {}
    for name in frame.columns:
        series = frame[name]
        nullable = bool(series.isna().any())
        checks = []
        if pd.api.types.is_bool_dtype(series):
            dtype: Any = bool
        elif pd.api.types.is_numeric_dtype(series):
            dtype = int if pd.api.types.is_integer_dtype(series) else float
            lo, hi = float(series.min()), float(series.max())
            span = (hi - lo) or abs(hi) or 1.0
            low = lo - margin * span
            if lo >= 0:
                low = max(0.0, low)
            checks.append(pa.Check.in_range(_round(low), _round(hi + margin * span)))
        else:
            dtype = str
            values = sorted(series.dropna().astype(str).unique().tolist())
            if 0 < len(values) <= MAX_CATEGORIES:
                checks.append(pa.Check.isin(values))
        columns[str(name)] = pa.Column(dtype, checks=checks, nullable=nullable, coerce=dtype is float)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _round(value: float) -> float | int:
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


def schema_columns(path: Path) -> list[str] | None:
    """The columns a pandera YAML schema declares, or ``None`` when there is no schema file."""
    if not path.is_file():
        return None
    return [str(name) for name in load_schema(path).columns]


def load_schema(path: Path) -> Any:
    import pandera.pandas as pa

    try:
        return pa.DataFrameSchema.from_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"{path.name}: schema file not found; set data.schema in rung.yaml to your pandera YAML schema") from None
    except Exception as exc:
        raise ConfigError(f"{path.name}: not a valid pandera schema: {str(exc).splitlines()[0]}") from None


def validate_frame(
    frame: pd.DataFrame, schema: Any, settings: Any, *, target: str | None = None, slice_columns: Sequence[str] = ()
) -> ValidationReport:
    """Run every check on ``frame``; the report lists each one, passed or not.

    ``slice_columns`` (from ``evaluate.slices``) must exist too: a typo there
    should stop the run here, not after training.
    """
    import pandera.pandas as pa

    sample_n = settings.sample_rows
    checks: list[Check] = [
        Check("row count", None, len(frame) >= settings.min_rows, observed=len(frame), expected=f">= {settings.min_rows}")
    ]
    if target is not None:
        checks.append(_column_present("target column present", target, frame, expected=target))
    checks += [_column_present("slice column present", column, frame, expected="a column named in evaluate.slices")
               for column in slice_columns]
    new = [str(c) for c in frame.columns if c not in schema.columns]
    if new and not schema.strict:  # a strict schema fails them itself
        # A warning: never silently a model input (rung.data.features).
        checks.append(Check("new columns", None, True, observed=", ".join(new[:10]),
                            expected="only the schema's columns (add them to the schema to use them as inputs)",
                            failures=len(new), warning=True))
    frame, non_numeric = _read_numbers(frame, schema, sample_n)
    checks.extend(non_numeric)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        checks.extend(_schema_failures(exc.failure_cases, sample_n))
    except pa.errors.SchemaError as exc:
        checks.append(Check("schema", getattr(exc, "column_name", None), False, observed=str(exc).splitlines()[0]))
    else:
        checks.append(Check("schema", None, True, expected=f"{len(schema.columns)} columns"))

    missing = frame.isna().mean()
    for column, rate in missing.items():
        bound = settings.missing_rate.get(str(column), settings.max_missing_rate)
        checks.append(
            Check("missing rate", str(column), float(rate) <= bound, observed=round(float(rate), 4), expected=f"<= {bound}")
        )
    duplicated = frame.duplicated()
    dup_rate = float(duplicated.mean()) if len(frame) else 0.0
    samples = frame[duplicated].head(sample_n).to_dict(orient="records") if dup_rate else []
    checks.append(
        Check(
            "duplicate rows",
            None,
            dup_rate <= settings.max_duplicate_rate,
            observed=round(dup_rate, 4),
            expected=f"<= {settings.max_duplicate_rate}",
            failures=int(duplicated.sum()),
            samples=_plain(samples),
        )
    )
    return ValidationReport(rows=len(frame), checks=checks)


def _column_present(name: str, column: str, frame: pd.DataFrame, *, expected: str) -> Check:
    """A named column must exist; when it does not, the check lists the columns that do (a typo is then plain)."""
    if column in frame.columns:
        return Check(name, column, True, expected=expected)
    return Check(name, column, False, observed="columns: " + ", ".join(map(str, frame.columns)), expected=expected)


def _read_numbers(frame: pd.DataFrame, schema: Any, sample_n: int) -> tuple[pd.DataFrame, list[Check]]:
    """Report text in the columns the schema declares numeric; return the frame with those columns as numbers.

    The bad cells become missing in the returned frame only so that the
    schema's dtype and range checks do not pile three findings on top of
    this one; the batch still fails here.
    """
    import pandas as pd

    out, checks = frame, []
    for name, column in schema.columns.items():
        declared = getattr(column.dtype, "type", None)
        if name not in frame.columns or declared is None or not _numeric(declared) or _numeric(frame[name].dtype):
            continue
        numbers = pd.to_numeric(frame[name], errors="coerce")
        bad = frame[name].notna() & numbers.isna()
        if not bad.any():
            continue
        if out is frame:
            out = frame.copy()
        out[name] = numbers
        values = frame.loc[bad, name].astype(str).unique()[:sample_n].tolist()
        checks.append(Check("non-numeric values", str(name), False, expected="numbers (an empty cell for a missing value)",
                            failures=int(bad.sum()), samples=values))
    return out, checks


def _numeric(dtype: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))
    except TypeError:
        return False


def _schema_failures(cases: pd.DataFrame, sample_n: int) -> list[Check]:
    out = []
    frame_level = "\0frame"  # groupby turns None into NaN; a sentinel keeps frame-level failures apart
    cases = cases.copy()
    cases["column"] = cases["column"].astype(object).where(cases["column"].notna(), frame_level)
    for (column, check), group in cases.groupby(["column", "check"], sort=False):
        column = None if column == frame_level else column
        values = group["failure_case"].head(sample_n).tolist()
        rows = group["index"].head(sample_n).tolist() if "index" in group else []
        out.append(
            Check(
                name=str(check),
                column=None if column is None else str(column),
                passed=False,
                failures=len(group),
                samples=_plain([{"row": r, "value": v} for r, v in zip(rows, values, strict=False)] if rows else values),
            )
        )
    return out


def _plain(value: Any) -> Any:
    """JSON-safe copy of sample values (numpy scalars, NaN, timestamps)."""
    import json

    return json.loads(json.dumps(value, default=str))
