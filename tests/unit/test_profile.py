"""rung.data.profile.reference_profile: what drift statistics need, without the raw rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rung.data.profile import BINS, QUANTILES, reference_profile


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 500
    income = rng.normal(100, 15, n)
    income[:25] = np.nan
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    region[:10] = None
    return pd.DataFrame({"income": income, "age": rng.integers(18, 90, n), "region": region, "y": rng.integers(0, 2, n)})


def test_rows_and_roles(frame) -> None:
    profile = reference_profile(frame, target="y")
    assert profile["rows"] == len(frame)
    assert set(profile["features"]) == {"income", "age", "region", "y"}
    assert profile["features"]["y"]["role"] == "target"
    assert profile["features"]["income"]["role"] == "feature"


def test_numeric_histogram_counts_sum_to_non_missing(frame) -> None:
    entry = reference_profile(frame)["features"]["income"]
    assert entry["kind"] == "numeric"
    assert entry["count"] == 475
    assert entry["missing_rate"] == pytest.approx(25 / 500)
    counts = entry["histogram"]["counts"]
    edges = entry["histogram"]["edges"]
    assert len(counts) == BINS and len(edges) == BINS + 1
    assert sum(counts) == entry["count"]
    values = frame["income"].dropna()
    assert edges[0] == pytest.approx(values.min())
    assert edges[-1] == pytest.approx(values.max())


def test_numeric_quantiles(frame) -> None:
    entry = reference_profile(frame)["features"]["income"]
    values = frame["income"].dropna().to_numpy()
    quantiles = entry["quantiles"]
    assert list(quantiles) == [str(q) for q in QUANTILES]
    for q in QUANTILES:
        assert quantiles[str(q)] == pytest.approx(np.quantile(values, q))
    assert list(quantiles.values()) == sorted(quantiles.values())
    assert entry["mean"] == pytest.approx(values.mean())
    assert entry["std"] == pytest.approx(values.std())


def test_integer_column_is_numeric(frame) -> None:
    entry = reference_profile(frame)["features"]["age"]
    assert entry["kind"] == "numeric"
    assert sum(entry["histogram"]["counts"]) == len(frame)
    assert entry["missing_rate"] == 0.0


def test_categorical_frequencies_sum_to_one(frame) -> None:
    entry = reference_profile(frame)["features"]["region"]
    assert entry["kind"] == "categorical"
    assert entry["count"] == 490
    assert entry["unique"] == 4
    freq = entry["frequencies"]
    assert set(freq) == {"north", "south", "east", "west"}
    assert sum(freq.values()) == pytest.approx(1.0)
    assert entry["other_rate"] == pytest.approx(0.0, abs=1e-9)
    expected = frame["region"].dropna().value_counts(normalize=True)
    for key, value in expected.items():
        assert freq[key] == pytest.approx(value)


def test_many_categories_keep_the_top_and_an_other_rate() -> None:
    frame = pd.DataFrame({"c": [f"v{i % 80}" for i in range(800)]})
    entry = reference_profile(frame)["features"]["c"]
    assert len(entry["frequencies"]) == 50
    assert sum(entry["frequencies"].values()) + entry["other_rate"] == pytest.approx(1.0)
    assert entry["other_rate"] == pytest.approx(30 / 80)


def test_bool_column_is_categorical() -> None:
    entry = reference_profile(pd.DataFrame({"flag": [True, False, True, True]}))["features"]["flag"]
    assert entry["kind"] == "categorical"
    assert entry["frequencies"] == {"True": 0.75, "False": 0.25}


def test_all_missing_numeric_column() -> None:
    entry = reference_profile(pd.DataFrame({"x": [np.nan, np.nan]}))["features"]["x"]
    assert entry == {"count": 0, "missing_rate": 1.0, "role": "feature", "kind": "numeric"}


def test_constant_numeric_column() -> None:
    entry = reference_profile(pd.DataFrame({"x": [2.0] * 10}))["features"]["x"]
    assert sum(entry["histogram"]["counts"]) == 10
    assert entry["quantiles"]["0.5"] == 2.0
