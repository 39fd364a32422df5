"""A GPU machine without nvidia-ml-py: resource sampling goes on, and the log names the extra to install."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rung.clock import ManualClock
from rung.monitor.resources import ResourceSampler

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_without_nvidia_ml_py_sampling_goes_on_and_a_gpu_machine_hears_which_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rung.monitor import resources

    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    monkeypatch.setattr(resources, "NVIDIA_DRIVER", tmp_path / "no-driver")
    with caplog.at_level(logging.WARNING, logger="rung.monitor.resources"):
        sampler = ResourceSampler(ManualClock(T0))
        assert "gpu_utilization" not in sampler.sample()
    assert caplog.records == []  # no GPU here: nothing to say

    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module\n")
    monkeypatch.setattr(resources, "NVIDIA_DRIVER", driver)
    with caplog.at_level(logging.WARNING, logger="rung.monitor.resources"):
        ResourceSampler(ManualClock(T0)).sample()
    assert [r.getMessage() for r in caplog.records] == ["reading GPU metrics needs nvidia-ml-py, which is not installed: pip install 'rung[gpu]'"]
