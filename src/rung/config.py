"""The project file ``rung.yaml``, parsed into typed settings.

Precedence, highest first: a CLI flag > the environment (``RUNG_DATABASE_URL``,
``RUNG_TRACKING_URI``, ``RUNG_EXECUTOR``, ``RUNG_RAY_ADDRESS``) > ``rung.yaml``
> the defaults written below. Nothing is read at import time: call
:func:`load_settings`.

Every key is documented in ``docs/configuration.md``. An invalid file raises
:class:`~rung.errors.ConfigError` with one line that names the key and the fix,
e.g. ``rung.yaml: deploy.strategy: 'canery' is not one of direct, canary, ab, shadow``.
"""

from __future__ import annotations

import json

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rung.errors import ConfigError
from rung.monitor.alerts import AlertSettings, Duration
from rung.monitor.drift import DriftSettings
from rung.triggers.settings import TriggerSettings

__all__ = ["Settings", "load_settings", "PROJECT_FILE", "find_project_root"]

PROJECT_FILE = "rung.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlSource(_Section):
    url: str = Field(description="SQLAlchemy URL of the database to read from")
    query: str = Field(description="SQL query whose result is the training data")


class DataSettings(_Section):
    source: str | SqlSource = Field(
        default="data/train.csv",
        description="CSV or Parquet path (relative to the project), or {url, query} for SQL",
    )
    target: str = "target"
    schema_file: str = Field(default="schema.yaml", alias="schema")


class ValidationSettings(_Section):
    min_rows: int = Field(default=100, ge=0)
    max_missing_rate: float = Field(default=0.05, ge=0, le=1)
    max_duplicate_rate: float = Field(default=0.01, ge=0, le=1)
    missing_rate: dict[str, float] = Field(default_factory=dict)
    sample_rows: int = Field(default=5, ge=0, le=100)


class SplitSettings(_Section):
    test_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    stratify: bool = True


class EvaluateSettings(_Section):
    slices: list[str] = Field(default_factory=list)
    primary_metric: str | None = None
    max_slice_values: int = Field(default=20, ge=1)


class ExecutorSettings(_Section):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(default=2, ge=1, le=256)
    address: str | None = None


class StoreSettings(_Section):
    database_url: str | None = None


class TrackingSettings(_Section):
    uri: str | None = None
    experiment: str | None = None


class RegistrySettings(_Section):
    model_name: str | None = None


class Guardrails(_Section):
    """Checks of a candidate against the champion over one analysis window (canary, A/B, shadow)."""

    min_requests: int = Field(default=100, ge=1)  # per arm, in the window; fewer: inconclusive
    error_margin: float = Field(default=0.01, ge=0, le=1)  # candidate error rate may exceed the champion's by this much
    latency_ratio: float = Field(default=1.5, ge=1)  # candidate p99 may be this many times the champion's ...
    latency_slack_ms: float = Field(default=5.0, ge=0)  # ... or this many ms above it, whichever is larger
    max_divergence: float = Field(default=0.2, ge=0, le=1)  # Jensen-Shannon distance of the score distributions
    outcome_margin: float = Field(default=0.02, ge=0)  # candidate outcome may be this much below the champion's
    min_feedback: int = Field(default=50, ge=1)  # per arm, before the outcome check counts


class CanarySettings(Guardrails):
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])  # candidate's % of traffic
    window_s: float = Field(default=300.0, gt=0)  # each step is held at least this long
    max_extensions: int = Field(default=3, ge=0)  # inconclusive windows tolerated per step before rolling back

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[0] >= 100:
            raise ValueError("increasing percentages in (0, 100], at least one below 100, e.g. [5, 25, 50, 100]")
        return steps if steps[-1] == 100 else [*steps, 100.0]


class AbSettings(Guardrails):
    split: float = Field(default=50.0, gt=0, lt=100)  # candidate's % of traffic
    alpha: float = Field(default=0.05, gt=0, lt=1)  # false-positive rate of the winner, however often it is looked at
    tau: float = Field(default=0.05, gt=0)  # mixing scale of the mSPRT: about the smallest effect worth finding
    min_samples: int = Field(default=100, ge=2)  # outcomes per arm before a decision may be taken
    check_every_s: float = Field(default=60.0, gt=0)
    max_duration_s: float = Field(default=14 * 86400.0, gt=0)  # no winner by then: the champion stays


class ShadowSettings(Guardrails):
    window_s: float = Field(default=600.0, gt=0)
    min_agreement: float = Field(default=0.9, ge=0, le=1)  # share of requests where the candidate says what the champion said
    max_duration_s: float = Field(default=86400.0, gt=0)  # not enough traffic by then: rolled back


class DeploySettings(_Section):
    """``rung deploy`` and the controller: how a certified version reaches traffic."""

    strategy: Literal["direct", "canary", "ab", "shadow"] = "canary"
    approval: Literal["none", "required"] = "none"  # required: promotion waits for `rung approve`
    outcome: Literal["accuracy", "reward"] = "accuracy"  # feedback is the true label, or a reward/conversion number
    grace_s: float = Field(default=600.0, ge=0)  # the previous champion stays loaded (weight 0) this long after a promotion
    canary: CanarySettings = Field(default_factory=CanarySettings)
    ab: AbSettings = Field(default_factory=AbSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)


class RequestLogSettings(_Section):
    """The gateway's request log: Parquet segments under ``path``, one file per model and day every ``flush_s``."""

    enabled: bool = True  # false: nothing is recorded (rollouts then have no evidence to judge)
    path: str | None = None  # relative to the project; default .rung/requests
    capacity: int = Field(default=100_000, ge=1)  # records queued in memory; beyond it they are dropped and counted
    max_request_rows: int | None = Field(default=None, ge=1)  # rows one request may queue (None: capacity / 4); more: dropped whole
    flush_s: float = Field(default=0.5, gt=0, le=60)  # a segment is written this often (when there is something to write)


class MonitorSettings(_Section):
    """What the loop watches in production, window by window (see ``docs/monitoring.md``)."""

    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    window_s: Duration = Field(default=3600.0, gt=0, alias="window")  # length of a monitoring window: 1h, 1d ...
    label_delay_s: Duration = Field(default=86400.0, ge=0, alias="label_delay")  # windows are re-checked as labels arrive, this long
    min_rows: int = Field(default=100, ge=1)  # answered requests a window needs before drift is computed
    min_labels: int = Field(default=30, ge=1)  # requests with feedback a window needs before live metrics are computed
    max_backfill: int = Field(default=48, ge=1)  # windows caught up at most, after the scheduler was down
    drift: DriftSettings = Field(default_factory=DriftSettings)  # windows use distances unless a method is set here


class Bound(_Section):
    """An absolute bound on a metric: ``{min: 0.8}``, ``{max: 12.5}`` or both."""

    min: float | None = None
    max: float | None = None


class ChampionMargin(_Section):
    """How much worse than the champion a candidate may be on one metric.

    "Worse" follows the metric's direction (lower AUC, higher RMSE). A
    relative margin is a fraction of the champion's value.
    """

    max_drop: float | None = Field(default=None, ge=0)
    max_relative_drop: float | None = Field(default=None, ge=0)


class SliceGate(_Section):
    """Per-slice rules, on ``metric`` (default: the primary metric)."""

    metric: str | None = None
    min: float | None = None
    max: float | None = None
    max_drop_vs_champion: float | None = Field(default=0.05, ge=0)
    min_rows: int = Field(default=30, ge=1)


class LatencyBudget(_Section):
    """p99 of in-process prediction, one row and 1,000 rows at a time."""

    single_row_p99_ms: float = Field(default=50.0, gt=0)
    batch_1000_p99_ms: float = Field(default=1000.0, gt=0)
    repeats: int = Field(default=200, ge=10)


class SchemaGate(_Section):
    """Inputs must match the champion's, except columns listed as declared changes."""

    declared_changes: list[str] = Field(default_factory=list)


class TestsGate(_Section):
    """The project's own pytest tests for its scoring code."""

    enabled: bool = True
    path: str = "tests"
    timeout_s: float = Field(default=600.0, gt=0)


class BehaviourCheck(_Section):
    """An invariance or directional expectation on the model's score.

    ``directional``: adding ``change`` to ``feature`` moves the score as
    ``expect`` says (``increase``, ``decrease``, ``non_decreasing``,
    ``non_increasing``). ``invariance``: setting ``feature`` to each of
    ``values`` leaves the score unchanged (within ``tolerance``).
    """

    name: str | None = None
    kind: Literal["directional", "invariance"]
    feature: str
    change: float | None = None
    values: list[Any] | None = None
    expect: Literal["increase", "decrease", "non_decreasing", "non_increasing", "same"] = "same"
    tolerance: float = Field(default=1e-9, ge=0)
    max_violation_rate: float = Field(default=0.0, ge=0, le=1)
    rows: int = Field(default=200, ge=1)


class CertifySettings(_Section):
    """``rung certify``: the gate a version passes to become a release."""

    thresholds: dict[str, Bound] = Field(default_factory=dict)
    versus_champion: dict[str, ChampionMargin] | None = None  # None: the primary metric, max_drop 0.01
    slices: SliceGate = Field(default_factory=SliceGate)
    latency: LatencyBudget = Field(default_factory=LatencyBudget)
    schema_check: SchemaGate = Field(default_factory=SchemaGate, alias="schema")
    tests: TestsGate = Field(default_factory=TestsGate)
    behaviour: list[BehaviourCheck] = Field(default_factory=list)


class BatchingSettings(_Section):
    """Micro-batching of concurrent single-row requests to one version."""

    enabled: bool = True
    max_batch_size: int = Field(default=64, ge=1, le=100_000)
    # How long a batch waits for company. Unset: 1 ms when one predict call costs 2 ms or more
    # (the batch shares that cost), else 0 (measured at load time; see rung.serving.batching).
    max_wait_ms: float | None = Field(default=None, ge=0, le=1000)


class ServeSettings(_Section):
    """``rung serve``: the gateway."""

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    key_field: str | None = None  # an input column that makes routing sticky when no X-Rung-Key header is sent
    protect_predict: bool = False  # require a viewer token on prediction routes too
    max_body_mb: float = Field(default=16.0, gt=0)
    refresh_s: float = Field(default=0.1, gt=0, le=60)
    # Threads each predict call may use (OpenMP/BLAS). One is right for a gateway: concurrency
    # comes from batching, and on a small machine multi-threaded predict of a few rows is slower.
    model_threads: int = Field(default=1, ge=1, le=256)
    # process: each loaded version predicts in a worker process of its own, so a model's Python
    # work never holds the gateway's GIL; thread: in a thread of the gateway (less memory).
    isolation: Literal["process", "thread"] = "process"
    workers: int = Field(default=1, ge=1, le=64)  # worker processes per loaded version (isolation: process)
    # Predict through a compiled route of a scikit-learn pipeline (rung.serving.compiled) when, at
    # load time, it gives the estimator's exact answers on the version's training rows.
    compile: bool = True
    batching: BatchingSettings = Field(default_factory=BatchingSettings)


class UiSettings(_Section):
    """``rung ui``: the operations dashboard."""

    host: str = "127.0.0.1"
    port: int = Field(default=8701, ge=1, le=65535)
    read: Literal["open", "token"] = "open"  # token: every page needs a viewer token too
    mlflow_url: str | None = None  # the MLflow UI, for links to run details (e.g. http://127.0.0.1:5000)
    refresh_s: float = Field(default=3.0, gt=0, le=3600)  # how often open pages look for new events


class Settings(_Section):
    """Everything rung reads from ``rung.yaml``, with its defaults."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Literal["classification", "regression"] = "classification"
    pipeline: str = "pipeline.py:pipeline"
    data: DataSettings = Field(default_factory=DataSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    certify: CertifySettings = Field(default_factory=CertifySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    ui: UiSettings = Field(default_factory=UiSettings)

    @model_validator(mode="before")
    @classmethod
    def _executor_shorthand(cls, values: Any) -> Any:
        # ``executor: ray`` is the short form of ``executor: {kind: ray}``.
        if isinstance(values, dict) and isinstance(values.get("executor"), str):
            values = {**values, "executor": {"kind": values["executor"]}}
        return values

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def params(self) -> dict[str, Any]:
        """Training parameters: what the ``train`` step receives as ``params``."""
        return dict(self.train.get("params", {}))

    def pipeline_fingerprint(self) -> str:
        """The settings a pipeline's outputs can depend on, as canonical JSON.

        It is part of the cache key of steps that read the settings. Where
        steps run (``executor``), where runs are recorded (``store``) and how
        releases roll out (``deploy``) do not change what a step computes, so
        editing them keeps the cache warm.
        """
        return json.dumps(self.pipeline_settings(), sort_keys=True)

    def pipeline_settings(self) -> dict[str, Any]:
        """The sections of :data:`PIPELINE_SECTIONS`, as ``rung.yaml`` spells them."""
        return self.model_dump(mode="json", include=PIPELINE_SECTIONS, by_alias=True)

    def with_pipeline_settings(self, recorded: dict[str, Any]) -> Settings:
        """These settings with the pipeline sections replaced by ``recorded`` ones (for reproduction)."""
        return Settings.model_validate({**self.model_dump(mode="json", by_alias=True), **recorded})


# The sections of rung.yaml that pipeline steps read (see Settings.pipeline_fingerprint).
PIPELINE_SECTIONS = {"name", "task", "pipeline", "data", "validation", "split", "train", "evaluate", "tracking", "registry"}


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` holding a ``rung.yaml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    return None


def load_settings(root: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``root/rung.yaml``, apply the environment and ``overrides``, validate."""
    import yaml

    path = root / PROJECT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; create one with `rung init NAME`") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{PROJECT_FILE}:{where}: {problem}; fix the YAML syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{PROJECT_FILE}: expected a mapping of keys (name: ..., task: ...), got {type(raw).__name__}")
    raw = _apply_environment(raw)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _apply_environment(raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    env = os.environ
    if env.get("RUNG_DATABASE_URL"):
        _set_dotted(raw, "store.database_url", env["RUNG_DATABASE_URL"])
    if env.get("RUNG_TRACKING_URI"):
        _set_dotted(raw, "tracking.uri", env["RUNG_TRACKING_URI"])
    if env.get("RUNG_EXECUTOR"):
        _set_dotted(raw, "executor", _executor_dict(raw) | {"kind": env["RUNG_EXECUTOR"]})
    if env.get("RUNG_RAY_ADDRESS"):
        _set_dotted(raw, "executor", _executor_dict(raw) | {"address": env["RUNG_RAY_ADDRESS"]})
    return raw


def _executor_dict(raw: dict[str, Any]) -> dict[str, Any]:
    current = raw.get("executor") or {}
    return {"kind": current} if isinstance(current, str) else dict(current)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
        node[key] = child = dict(child)
        node = child
    node[leaf] = value


def _describe(exc: ValidationError) -> str:
    """One line per problem (the first is what the user fixes first)."""
    lines = []
    for error in exc.errors():
        union_tags = {"str", "SqlSource"}  # pydantic names the union member it tried; the user needs the key
        loc = ".".join(str(p) for p in error["loc"] if str(p) not in union_tags and not str(p).startswith("function-"))
        kind = error["type"]
        given = error.get("input")
        if kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            choices = expected.replace("'", "").replace(" or ", ", ")
            lines.append(f"{PROJECT_FILE}: {loc}: {given!r} is not one of {choices}")
        elif kind == "extra_forbidden":
            lines.append(f"{PROJECT_FILE}: {loc}: unknown key; remove it or check its spelling (see docs/configuration.md)")
        elif kind == "missing":
            lines.append(f"{PROJECT_FILE}: {loc}: required key is missing")
        elif isinstance(given, (dict, list)):  # a whole section: it may hold a secret (a webhook URL), and the key says where
            lines.append(f"{PROJECT_FILE}: {loc}: {error['msg']}")
        else:
            lines.append(f"{PROJECT_FILE}: {loc}: {error['msg']} (got {given!r})")
    return lines[0] if len(lines) == 1 else lines[0] + f" (and {len(lines) - 1} more: " + "; ".join(lines[1:]) + ")"
