"""The serving process's CPU, memory and GPU per window: sampled on the loop's clock, summarised per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rung.clock import ManualClock
from rung.monitor.resources import ResourceSampler, summarise

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_window_gets_the_mean_rate_and_the_peak_memory_of_its_samples() -> None:
    assert summarise([]) == {}
    found = summarise([{"cpu_percent": 50.0, "memory_mb": 300.0}, {"cpu_percent": 150.0, "memory_mb": 200.0},
                       {"cpu_percent": 100.0, "memory_mb": 250.0, "gpu_utilization": 0.4, "gpu_memory_mb": 900.0}])
    assert found == {"ops.cpu_percent": 100.0, "ops.memory_mb": 300.0, "ops.gpu_utilization": 0.4,
                     "ops.gpu_memory_mb": 900.0}


def test_samples_are_stamped_by_the_loops_clock_and_picked_by_window() -> None:
    clock = ManualClock(T0)
    sampler = ResourceSampler(clock)
    assert not sampler.samples  # the baseline reading is not kept
    for _ in range(6):
        values = sampler.sample()
        assert values["memory_mb"] > 10 and values["cpu_percent"] >= 0
        clock.advance(600)
    hour = sampler.summary(T0, T0 + timedelta(hours=1))
    assert set(hour) >= {"ops.cpu_percent", "ops.memory_mb"}
    assert sampler.summary(T0 + timedelta(hours=1), T0 + timedelta(hours=2)) == {}
    half = [v for t, v in sampler.samples if t < T0 + timedelta(minutes=30)]
    assert sampler.summary(T0, T0 + timedelta(minutes=30))["ops.memory_mb"] == max(v["memory_mb"] for v in half)
