"""Monitoring windows are aligned to the epoch, so every process agrees where they start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from rung.monitor.windows import window_bounds


def test_an_hour_window_starts_on_the_hour() -> None:
    start, end = window_bounds(datetime(2026, 3, 2, 10, 42, 7, tzinfo=UTC), 3600)
    assert (start, end) == (datetime(2026, 3, 2, 10, tzinfo=UTC), datetime(2026, 3, 2, 11, tzinfo=UTC))


def test_a_day_window_starts_at_midnight_utc_and_a_boundary_opens_the_next() -> None:
    midnight = datetime(2026, 3, 3, tzinfo=UTC)
    assert window_bounds(midnight, 86400) == (midnight, midnight + timedelta(days=1))
    assert window_bounds(midnight - timedelta(microseconds=1), 86400)[1] == midnight


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
       st.sampled_from([60.0, 300.0, 3600.0, 86400.0, 7 * 86400.0]))
def test_the_window_holds_the_moment_and_has_the_length(moment: datetime, length: float) -> None:
    moment = moment.replace(tzinfo=UTC)
    start, end = window_bounds(moment, length)
    assert start <= moment < end
    assert (end - start).total_seconds() == length
    assert window_bounds(start, length) == (start, end)
