"""The scheduler closes the loop: monitor ▸ alert ▸ trigger ▸ retrain, tick after tick, with no human.

Each tick checks the monitoring windows that closed since the last one,
feeds their metrics to the alert rules (notices go to the sinks and into the
event log), then asks the retraining triggers (schedule, new data, drift,
performance) whether to retrain, and if so runs the chain of
:func:`rung.triggers.retrain.retrain`. Rules that need "N consecutive
windows" see each window once, however often the scheduler ticks. While a
rollout is being judged no retraining starts: the controller decides first.

Like the controller, it holds a lease in the store, so several ``rung up``
processes on one shared database run one scheduler; what it must remember
(alert states, trigger states, the source's fingerprint, the last window)
is in the store, so a restart resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rung.clock import SYSTEM, Clock
from rung.store.records import MonitorWindow, Retrain

if TYPE_CHECKING:
    from rung.monitor.alerts import Notice
    from rung.project import Project

__all__ = ["Scheduler", "Tick"]

log = logging.getLogger(__name__)
LEASE = "scheduler"


@dataclass
class Tick:
    """What one tick did."""

    windows: list[MonitorWindow] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    retrain: Retrain | None = None
    led: bool = True  # False: another scheduler holds the lease


class Scheduler:
    def __init__(self, project: Project, *, clock: Clock = SYSTEM, holder: str | None = None, lease_s: float = 120.0,
                 on_update: Callable[[str, Any], None] | None = None, sample_resources: bool = False) -> None:
        """``sample_resources``: this process also serves (``rung up``, the demo); record its CPU, memory and GPU."""
        from rung.monitor.resources import ResourceSampler
        from rung.monitor.windows import Monitor

        self.project = project
        self.store = project.store
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_s = lease_s
        self.resources = ResourceSampler(clock) if sample_resources else None
        self.monitor = Monitor(project, clock, resources=self.resources)
        self.on_update = on_update or (lambda kind, value: None)

    @property
    def model(self) -> str:
        return self.project.settings.model_name

    def tick(self) -> Tick:
        now = self.clock.now()
        if not self.store.acquire_lease(LEASE, self.holder, now=now, ttl_s=self.lease_s):
            return Tick(led=False)
        result = Tick()
        if self.resources is not None:
            self.resources.sample()
        result.windows = self.monitor.check(self.model)
        result.notices = self._alerts(result.windows)
        result.retrain = self._triggers(result.windows)
        return result

    def run(self, interval_s: float = 5.0, stop: Callable[[], bool] = lambda: False, wait: Callable[[float], Any] | None = None) -> None:
        """Tick until ``stop()``; a failing tick is logged and retried, never fatal."""
        import time

        wait = wait or time.sleep
        while not stop():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again in %.0f s", interval_s)
            wait(interval_s)

    def release(self) -> None:
        self.store.release_lease(LEASE, self.holder)

    # -- alerts --------------------------------------------------------------------------------

    def _alerts(self, windows: list[MonitorWindow]) -> list[Notice]:
        from rung.monitor.alerts import AlertBook
        from rung.monitor.notify import deliver

        settings = self.project.settings.alerts
        if not settings.rules or not windows:
            return []
        name = f"alerts:{self.model}"
        book = AlertBook(settings, self.store.state(name))
        notices: list[Notice] = []
        for window in sorted(windows, key=lambda w: (w.end, w.version)):
            notices += book.observe(f"{window.model}:{window.version}", window.metrics, window.end)
        self.store.save_state(name, book.state(), time=self.clock.now())
        for notice in notices:
            results = deliver(notice, settings.sinks_for(notice.rule))
            data = notice.to_dict() | {"delivered": [dataclasses.asdict(r) for r in results]}
            self.store.append_event("alert", actor="scheduler", subject=self.model, data=data, time=notice.at)
            self.on_update("alert", notice)
        return notices

    # -- triggers -----------------------------------------------------------------------------

    def _triggers(self, windows: list[MonitorWindow]) -> Retrain | None:
        """Feed each new window of the champion to the triggers once; start a retraining when one fires and the guard allows."""
        from rung.triggers.decision import TriggerReason, evaluate, record_start
        from rung.triggers.guards import Guard
        from rung.triggers.retrain import in_flight, retrain

        settings = self.project.settings.triggers
        if not settings.enabled:
            return None
        name = f"triggers:{self.model}"
        state = self.store.state(name)
        now = self.clock.now()
        champion = self.project.tracking.aliases().get(self.model, {}).get("champion")
        observed = [w for w in sorted(windows, key=lambda w: w.end) if w.version == champion]
        data = self._fingerprint() if settings.new_data else None
        reasons: list[TriggerReason] = []
        # no window yet: the schedule and new data still count
        candidates: list[MonitorWindow | None] = list(observed) or [None]
        for window in candidates:
            reasons, state = evaluate(settings, now=now, metrics=window.metrics if window else None, data=data, state=state)
        busy = self.store.deployments(self.model, active=True) or in_flight(self.project, self.model)
        allowed, _ = Guard.from_settings(settings).allow(self.store.retrains(self.model, limit=100), now)
        if not reasons or busy or not allowed:
            # pending triggers stay pending: they fire when the rollout is judged and the guard allows
            self.store.save_state(name, state, time=now)
            return None
        self.store.save_state(name, record_start(state, now=now, data=data), time=now)
        why = "; ".join(r.why for r in reasons)
        details = {"reasons": [r.to_dict() for r in reasons]}
        record = retrain(self.project, TriggerReason(reasons[0].kind, why, details), clock=self.clock)
        self.on_update("retrain", record)
        return record

    def _fingerprint(self) -> Any:
        from rung.errors import RungError
        from rung.triggers.newdata import fingerprint

        source = self.project.settings.data.source
        if not isinstance(source, str):
            return None
        try:
            return fingerprint(self.project.root / source)
        except RungError as exc:
            log.warning("new-data trigger: %s", exc)
            return None

