"""CPU, memory and GPU of the serving process, per monitoring window.

``rung up`` runs the gateway, its model workers (child processes) and the
scheduler in one process tree. The scheduler samples that tree on every
tick, and each monitoring window gets the summary of the samples taken in
it: ``ops.cpu_percent`` (mean, in % of one core, workers included),
``ops.memory_mb`` (peak resident memory), and with an NVIDIA GPU
(nvidia-ml-py) ``ops.gpu_utilization`` (mean, 0-1) and ``ops.gpu_memory_mb``
(peak). A scheduler running on its own (``rung scheduler``) does not sample:
it would measure itself, not the gateway.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["ResourceSampler", "summarise"]

log = logging.getLogger(__name__)
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # present where the NVIDIA kernel driver is loaded


class ResourceSampler:
    """Keeps the newest ``keep`` samples of this process tree, each stamped with the loop's clock."""

    def __init__(self, clock: Any, keep: int = 20_000) -> None:
        import psutil

        self.clock = clock
        self.samples: deque[tuple[datetime, dict[str, float]]] = deque(maxlen=keep)
        self._root = psutil.Process()
        self._procs: dict[int, Any] = {}
        self._nvml = _nvml()
        self.sample()  # the first CPU reading of a process is a baseline: not kept
        self.samples.clear()

    def sample(self) -> dict[str, float]:
        import psutil

        cpu = memory = 0.0
        alive: dict[int, Any] = {}
        for proc in [self._root, *self._root.children(recursive=True)]:
            known = self._procs.get(proc.pid, proc)
            try:
                cpu += known.cpu_percent(None)
                memory += known.memory_info().rss
            except psutil.Error:
                continue
            alive[proc.pid] = known
        self._procs = alive
        values = {"cpu_percent": cpu, "memory_mb": memory / 2**20} | _gpu(self._nvml)
        self.samples.append((self.clock.now(), values))
        return values

    def summary(self, start: datetime, end: datetime) -> dict[str, float]:
        """The window's ``ops.*`` resource metrics; {} when no sample fell in it."""
        times = [t for t, _ in self.samples]
        first, last = bisect_left(times, start), bisect_left(times, end)
        return summarise([values for _, values in list(self.samples)[first:last]])


def summarise(samples: list[dict[str, float]]) -> dict[str, float]:
    """Mean of the rates, peak of the memories."""
    if not samples:
        return {}
    out = {"ops.cpu_percent": sum(s["cpu_percent"] for s in samples) / len(samples),
           "ops.memory_mb": max(s["memory_mb"] for s in samples)}
    gpu = [s for s in samples if "gpu_utilization" in s]
    if gpu:
        out["ops.gpu_utilization"] = sum(s["gpu_utilization"] for s in gpu) / len(gpu)
        out["ops.gpu_memory_mb"] = max(s["gpu_memory_mb"] for s in gpu)
    return out


def _nvml() -> Any:
    """NVML when there is a GPU to read, else None: GPU metrics are optional, sampling never fails for them.

    The one case worth a word is a machine with an NVIDIA driver but
    without nvidia-ml-py: the user would expect GPU metrics, so the
    warning says which extra to install.
    """
    from rung.errors import MissingDependency
    from rung.optional import require

    try:
        pynvml = require("pynvml", purpose="reading GPU metrics")
    except MissingDependency as missing:
        if NVIDIA_DRIVER.exists():
            log.warning("%s", missing)
        return None
    try:
        pynvml.nvmlInit()
        return pynvml if pynvml.nvmlDeviceGetCount() > 0 else None
    except Exception:  # no driver or no device: no GPU metrics
        return None


def _gpu(nvml: Any) -> dict[str, float]:
    if nvml is None:
        return {}
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        util = [nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100 for h in handles]
        used = [nvml.nvmlDeviceGetMemoryInfo(h).used for h in handles]
    except Exception:
        return {}
    return {"gpu_utilization": sum(util) / len(util), "gpu_memory_mb": sum(used) / 2**20}
