"""How drift reads a column's values as numbers: which columns are numeric, and their float64 values."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["NUMERIC_SHARE", "as_numbers", "looks_numeric"]

NUMERIC_SHARE = 0.95  # a text column is numeric when this share of its values parse as numbers


def as_numbers(series: pd.Series) -> tuple[np.ndarray, int]:
    """Float64 values (NaN where missing or not a number) and how many present values were not numbers."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        as_float = series.dtype == np.float64  # already float64: no copy
        values = series.to_numpy() if as_float else series.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, 0
    missing = int(series.isna().sum())
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, int(np.count_nonzero(np.isnan(values))) - missing


def looks_numeric(series: pd.Series) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    present = series.dropna()
    if present.empty:
        return False
    sample = present.iloc[:: max(1, len(present) // 10_000)]
    return bool(pd.to_numeric(sample, errors="coerce").notna().mean() >= NUMERIC_SHARE)
