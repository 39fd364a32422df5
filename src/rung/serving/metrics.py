"""The gateway's Prometheus metrics (``GET /metrics``).

Requests by model, version, variant, protocol and status; latency
histograms; requests in flight; batch sizes; shadow outcomes; the routing
revision in effect per model and whether the store's change channel is
heard (``rung_routing_listening``: PostgreSQL's NOTIFY; 0 while this replica
polls instead); request-log
records dropped by reason (``rung_request_log_dropped_total{reason=...}``:
the name it had before it had reasons, so a ``sum()`` over it is still the
total); process CPU and memory; GPU utilisation and memory when NVIDIA's
management library (``nvidia-ml-py``) finds a GPU. Label children are
cached: on the hot path recording a request is a dict lookup and two
increments.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily

from rung.monitor.requestlog import DROP_REASONS

__all__ = ["GatewayMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "rung_requests", "Prediction requests answered", ["model", "version", "variant", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rung_request_latency_seconds", "Time from request to response", ["model", "version", "variant"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("rung_requests_in_flight", "Prediction requests being answered", registry=self.registry)
        self.batch_rows = Histogram(
            "rung_batch_rows", "Rows per predict call", ["model", "version"], buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.shadow = Counter(
            "rung_shadow_requests", "Shadow predictions by outcome", ["model", "version", "outcome"], registry=self.registry
        )
        self.errors = Counter("rung_request_errors", "Rejected requests by status", ["status"], registry=self.registry)
        self.routing_revision = Gauge("rung_routing_revision", "Routing table revision in effect", ["model"], registry=self.registry)
        self.routing_listening = Gauge("rung_routing_listening",
                                       "1 while this gateway hears routing changes from the store as they commit "
                                       "(PostgreSQL LISTEN/NOTIFY); 0 while it polls", registry=self.registry)
        self.loaded = Gauge("rung_model_loaded", "Versions loaded, with their flavour and the device they predict on (serve.device)",
                            ["model", "version", "flavor", "device"], registry=self.registry)
        self.worker_restarts = Counter("rung_model_worker_restarts", "Model worker processes started again after one died",
                                       ["model", "version"], registry=self.registry)
        self.log_dropped = Counter("rung_request_log_dropped", "Request-log records dropped, by reason: " + ", ".join(DROP_REASONS),
                                   ["reason"], registry=self.registry)
        for reason in DROP_REASONS:  # every reason shows, at 0, from the first scrape
            self.log_dropped.labels(reason)
        self.routing_lag = Histogram(
            "rung_routing_swap_lag_seconds", "From a routing table's commit in the store to its swap into this gateway",
            ["model"], buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0), registry=self.registry,
        )
        self.registry.register(_GpuCollector())
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def observe(self, model: str, version: int, variant: str, protocol: str, status: int, seconds: float) -> None:
        key = (model, str(version), variant, protocol, str(status))
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(*key[:3]))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def request_log_dropped(self, reason: str, records: int) -> None:
        """The request log's ``on_drop``: called from the event loop and from its writer thread (the counter locks)."""
        self.log_dropped.labels(reason).inc(records)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GpuCollector:
    """GPU utilisation and memory per device, read at scrape time; nothing when there is no GPU."""

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self._nvml = pynvml
        except Exception:  # no library, no driver or no device: no GPU metrics
            self._nvml = None

    def collect(self) -> Any:
        if self._nvml is None:
            return
        nvml = self._nvml
        util = GaugeMetricFamily("rung_gpu_utilization_ratio", "GPU utilisation (0-1)", labels=["gpu"])
        used = GaugeMetricFamily("rung_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("rung_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util.add_metric([str(index)], rates.gpu / 100)
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
        yield from (util, used, total)
