"""``rung demo``: the whole Level-4 loop on the bundled scenario, under a simulated clock, in about a minute.

From nothing: a churn project is created, v1 is trained, certified and
deployed; simulated customers are scored over real HTTP by an in-process
gateway, day after simulated day, and their true labels come back later as
feedback. On ``drift_day`` the world changes (:mod:`rung.demo.scenario`).
Nobody touches anything after the start: the scheduler's monitoring windows
see the drift and alert; the retraining trigger fires; the pipeline retrains
on the current data window; the candidate is certified and rolled out as an
A/B test; the controller's sequential test picks the winner and promotes it;
accuracy recovers. The demo only plays the world (traffic, labels, the data
warehouse) and the clock.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rung.demo.scenario import FEATURES, TARGET, Scenario

if TYPE_CHECKING:
    import pandas as pd

    from rung.project import Project

__all__ = ["DemoResult", "run_demo", "loop_gap", "DEMO_SETTINGS", "START"]

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
SLOTS_PER_DAY = 6  # traffic arrives in 4-hour slots; the controller looks after each
ROWS_PER_REQUEST = 10  # the team's app scores customers in small batches
DATA_WINDOW_DAYS = 3  # the warehouse export the pipeline trains on: the last three days of labelled customers
LABEL_DELAY = timedelta(hours=12)

# What the demo project adds to the template's rung.yaml: daily windows, the rules that close the loop, an A/B rollout.
DEMO_SETTINGS = """
monitor:
  window: 1d                  # one monitoring window per day
  label_delay: 1d             # labels arrive within a day: windows are re-checked until then
  min_rows: 100
  drift:
    max_rows_multivariate: 2000     # a daily window is a few hundred rows: a small domain classifier says enough

alerts:
  rules:
    - {name: feature-drift, metric: "drift.feature.*", condition: "> 0.25", for: 2, severity: warning}
    - {name: accuracy-drop, metric: performance.accuracy.change, condition: "< -0.08", for: 2, severity: critical}
  sinks:
    - {name: log, kind: log}

triggers:
  drift: {metric: "drift.feature.*", condition: "> 0.25", for: 3}      # sustained drift, not a blip
  performance: {metric: performance.accuracy.change, condition: "< -0.08", for: 3}
  new_data: false             # the warehouse export changes every day: retrain on evidence, not on every export
  cooldown: 3d
  max_per_day: 1

certify:
  latency: {repeats: 30}

deploy:
  strategy: ab
  ab:
    split: 50
    min_samples: 100
    check_every_s: 3600
    max_duration_s: 604800
"""


@dataclass
class DemoResult:
    """What the demo saw, day by day: ``retrain_day`` is the first retraining triggered, whatever became of it;
    ``chain`` is the retraining whose candidate was certified and rolled out; ``retrain_failures`` say why others were not."""

    root: Path
    days: int
    drift_day: int
    drift_alert_day: int | None = None
    retrain_day: int | None = None
    promoted_day: int | None = None
    accuracy: dict[str, float | None] = field(default_factory=dict)
    requests: int = 0
    failed: int = 0
    seconds: float = 0.0
    chain: str | None = None
    v1_failed: list[str] = field(default_factory=list)
    retrain_failures: list[str] = field(default_factory=list)


def loop_gap(result: DemoResult) -> str | None:
    """Why the loop did not close (no retraining triggered, none certified and rolled out, none promoted); None when it did.

    The demo's promise is the whole loop without a human, so ``rung demo``
    exits non-zero with this reason rather than print a summary of a loop
    that stopped halfway.
    """
    v1 = f" (v1 was not certified either: {', '.join(result.v1_failed)} failed)" if result.v1_failed else ""
    if result.retrain_day is None:
        seen = (f"the drift alert fired on day {result.drift_alert_day}" if result.drift_alert_day is not None
                else "no drift alert fired")
        return f"no retraining was triggered in {result.days} days ({seen})"
    if result.chain is None:
        tried = len(result.retrain_failures)
        first = f"; the first: {result.retrain_failures[0]}" if result.retrain_failures else ""
        return f"no retraining reached an A/B test ({tried} failed{first}){v1}"
    if result.promoted_day is None:
        return f"the A/B test did not promote the retrained version within {result.days} days"
    return None


class Warehouse:
    """The team's labelled data: customers scored so far, whose true labels have arrived."""

    def __init__(self, history: pd.DataFrame) -> None:
        self.frames = [history]

    def add(self, frame: pd.DataFrame) -> None:
        self.frames.append(frame)

    def export(self, path: Path, since_day: int) -> int:
        """Write the current data window (days >= ``since_day``) where the pipeline reads it."""
        import pandas as pd

        frame = pd.concat(self.frames, ignore_index=True)
        window = frame[frame["day"] >= since_day].drop(columns=["day"])
        window.to_csv(path, index=False)
        return len(window)


class Traffic:
    """Customers scored over real HTTP (keep-alive connections, a few in parallel), with their feedback ids."""

    def __init__(self, url: str, model: str, threads: int = 4) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = f"/models/{model}/invocations"
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="rung-demo-client")
        self.failed = 0

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return conn

    def _one(self, key: str, rows: list[dict[str, Any]]) -> tuple[str | None, int]:
        body = json.dumps({"dataframe_records": rows})
        for attempt in range(3):
            conn = self._conn()
            try:
                conn.request("POST", self.path, body, {"content-type": "application/json", "x-rung-key": key})
                response = conn.getresponse()
                response.read()
                if response.status == 503 and attempt < 2:
                    time.sleep(0.05)
                    continue
                return response.getheader("x-request-id"), response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
        return None, 0

    def score(self, frame: pd.DataFrame) -> list[str | None]:
        """Score every row, ``ROWS_PER_REQUEST`` to a request; the feedback id of each row (None when it failed)."""
        import math

        from rung.monitor.requestlog import feedback_id

        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in frame[FEATURES].to_dict(orient="records")]
        batches = [rows[i:i + ROWS_PER_REQUEST] for i in range(0, len(rows), ROWS_PER_REQUEST)]
        keys = [f"batch-{frame['day'].iloc[0]}-{frame.index[i]}" for i in range(0, len(rows), ROWS_PER_REQUEST)]
        answers = list(self.pool.map(self._one, keys, batches))
        ids: list[str | None] = []
        for batch, (rid, status) in zip(batches, answers, strict=False):
            ok = status == 200 and rid is not None
            self.failed += 0 if ok else 1
            ids += [feedback_id(rid, n) if rid is not None and ok else None for n in range(len(batch))]
        return ids

    def feedback(self, pairs: list[tuple[str, int]]) -> None:
        if not pairs:
            return
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            for i in range(0, len(pairs), 1000):
                body = json.dumps({"feedback": [{"request_id": r, "value": v} for r, v in pairs[i:i + 1000]]})
                conn.request("POST", "/v2/feedback", body, {"content-type": "application/json"})
                conn.getresponse().read()
        finally:
            conn.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def prepare(root: Path, scenario: Scenario) -> Path:
    """The churn template, with the scenario's history as its data and the loop's settings in rung.yaml."""
    from rung.data.validation import infer_schema
    from rung.templates import create_project

    root = create_project("churn", "tabular-classification", root)
    history = scenario.history()
    # the schema accepts what a customer can be, not just what the first sample happened to hold
    infer_schema(scenario.days(-scenario.history_days, scenario.history_days + 40).drop(columns=["day"])).to_yaml(root / "schema.yaml")
    history.drop(columns=["day"]).to_csv(root / "data" / "train.csv", index=False)
    text = (root / "rung.yaml").read_text(encoding="utf-8").replace("deploy:\n  strategy: canary\n", "")
    (root / "rung.yaml").write_text(text + DEMO_SETTINGS, encoding="utf-8")
    return root


def run_demo(root: Path, *, days: int = 20, scenario: Scenario | None = None,
             on_event: Callable[[str, dict[str, Any]], None] | None = None) -> DemoResult:
    """Play ``days`` simulated days from nothing; ``on_event(kind, data)`` reports progress (day, alert, retrain, ...)."""
    from rung.certify import certify
    from rung.clock import ManualClock
    from rung.delivery.controller import Controller
    from rung.delivery.rollout import deploy
    from rung.project import Project
    from rung.serving.server import start_gateway
    from rung.triggers.scheduler import Scheduler

    started = time.perf_counter()
    scenario = scenario or Scenario(drift_day=8)
    emit = on_event or (lambda kind, data: None)
    root = prepare(root, scenario)
    emit("project", {"root": str(root)})
    _commit(root)
    clock = ManualClock(START)
    project = Project.open(root)
    result = DemoResult(root=root, days=days, drift_day=scenario.drift_day)
    try:
        first = project.run(trigger="demo")
        ref = f"{project.settings.model_name}:{first.run.model_version}"
        report = certify(project, ref, actor="demo", clock=clock)
        result.v1_failed = [c.name for c in report.failed]
        emit("v1", {"ref": ref, "certified": report.certified, "failed": result.v1_failed,
                    "metrics": first.run.metrics.get("overall", {})})
        if project.tracking.aliases().get(project.settings.model_name, {}).get("champion") != first.run.model_version:
            deploy(project, ref, actor="demo", clock=clock, reason="first version")
        controller = Controller(project, clock=clock, lease_s=3600)
        scheduler = Scheduler(project, clock=clock, lease_s=3600 * 24, sample_resources=True)
        controller.tick()
        controller.sync()
        warehouse = Warehouse(scenario.history())
        pending: list[tuple[datetime, list[tuple[str, int]], pd.DataFrame]] = []
        with start_gateway(project, clock=clock, grpc_port=0) as gateway:
            traffic = Traffic(gateway.url, project.settings.model_name)
            try:
                for day in range(days):
                    customers = scenario.day(day)
                    for slot, part in enumerate(_slots(customers)):
                        clock.advance(4 * 3600 if slot else 0)
                        _deliver_labels(pending, clock.now(), traffic, warehouse)
                        ids = traffic.score(part)
                        result.requests += len(part)
                        pairs = [(rid, int(y)) for rid, y in zip(ids, part[TARGET], strict=False) if rid is not None]
                        pending.append((clock.now() + LABEL_DELAY, pairs, part))
                        _flush(gateway)
                        controller.tick()
                        controller.sync()
                    clock.advance(4 * 3600)  # midnight: the day's window closes
                    _deliver_labels(pending, clock.now(), traffic, warehouse)
                    warehouse.export(root / "data" / "train.csv", since_day=day + 1 - DATA_WINDOW_DAYS)
                    _flush(gateway)
                    tick = scheduler.tick()
                    for notice in tick.notices:
                        if notice.status == "firing" and notice.rule == "feature-drift" and result.drift_alert_day is None:
                            result.drift_alert_day = day
                        emit("alert", {"day": day, "notice": notice})
                    if tick.retrain is not None:
                        _note_retrain(result, day, tick.retrain)
                        emit("retrain", {"day": day, "retrain": tick.retrain})
                    controller.tick()
                    controller.sync()
                    promoted = _promoted_day(project, result, day)
                    emit("day", {"day": day, "windows": tick.windows, "promoted": promoted})
            finally:
                traffic.close()
                result.failed = traffic.failed
        result.accuracy = _accuracy(project, result)
    finally:
        project.close()
    result.seconds = time.perf_counter() - started
    return result


def _note_retrain(result: DemoResult, day: int, retrain: Any) -> None:
    """Record a retraining the scheduler triggered: the first one's day, the first one rolled out, why others failed."""
    if result.retrain_day is None:
        result.retrain_day = day
    if retrain.status == "deployed":
        result.chain = result.chain or retrain.id
    else:
        result.retrain_failures.append(f"day {day}: {retrain.error or f'ended {retrain.status}'}")


def _flush(running: Any) -> None:
    """Write the gateway's queued request log now: simulated days pass faster than its flush interval."""
    if running.gateway.requests is not None:
        running.gateway.requests.flush()


def _slots(customers: pd.DataFrame) -> list[pd.DataFrame]:
    size = -(-len(customers) // SLOTS_PER_DAY)
    return [customers.iloc[i:i + size] for i in range(0, len(customers), size)]


def _deliver_labels(pending: list[Any], now: datetime, traffic: Traffic, warehouse: Warehouse) -> None:
    due = [p for p in pending if p[0] <= now]
    for item in due:
        pending.remove(item)
        traffic.feedback(item[1])
        warehouse.add(item[2])


def _promoted_day(project: Project, result: DemoResult, day: int) -> bool:
    if result.promoted_day is not None or result.chain is None:
        return False
    events = project.store.events(chain=result.chain, kinds=["rollout"])
    if any(e.data.get("to") == "promoted" for e in events):
        result.promoted_day = day
        return True
    return False


def _accuracy(project: Project, result: DemoResult) -> dict[str, float | None]:
    """Live accuracy (from feedback) of the version serving most traffic: before the drift, during it, after the promotion."""
    windows = project.store.windows(project.settings.model_name, limit=10_000)

    def mean(first: int, last: int) -> float | None:
        values, weights = [], []
        for w in windows:
            day = (w.start - START).days
            if first <= day <= last and "performance.accuracy" in w.metrics and w.metrics.get("ops.rows", 0) > 0:
                values.append(w.metrics["performance.accuracy"] * w.metrics["ops.rows"])
                weights.append(w.metrics["ops.rows"])
        return sum(values) / sum(weights) if weights else None

    before = mean(0, result.drift_day - 1)
    during = mean(result.drift_day, (result.promoted_day or result.days) - 1)
    after = mean(result.promoted_day + 1, result.days - 1) if result.promoted_day is not None else None
    return {"before_drift": before, "after_drift": during, "after_promotion": after}


def _commit(root: Path) -> None:
    """Commit the demo project so its lineage shows a code version (skipped without git)."""
    import subprocess

    identity = ["-c", "user.name=rung demo", "-c", "user.email=demo@rung.invalid"]
    try:
        subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
        subprocess.run(["git", *identity, "commit", "-qm", "rung demo: the generated project"], cwd=root, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pass
