"""The project file ``rung.yaml``, parsed into typed settings.

Precedence, highest first: a CLI flag > the environment (``RUNG_DATABASE_URL``,
``RUNG_TRACKING_URI``, ``RUNG_EXECUTOR``, ``RUNG_RAY_ADDRESS``, ``RUNG_GRPC_PORT``, ``RUNG_REPLICA``) > ``rung.yaml``
> the defaults written below. Nothing is read at import time: call
:func:`load_settings`.

Every key is documented in ``docs/configuration.md``. An invalid file raises
:class:`~rung.errors.ConfigError` with one line that names the key and the fix,
e.g. ``rung.yaml: deploy.strategy: 'canery' is not one of direct, canary, ab, shadow``.

This package is foundation: it imports nothing from rung but :mod:`rung.errors`
and :mod:`rung.clock`, so every layer may read settings. One module per area:
:mod:`~rung.config.project` (the whole file), :mod:`~rung.config.loader`
(reading it), and a module for each larger section.
"""

from __future__ import annotations

from rung.config.alerts import AlertRule, AlertSettings, SinkSettings
from rung.config.certify import (
    BehaviourCheck,
    Bound,
    CertifySettings,
    ChampionMargin,
    LatencyBudget,
    SchemaGate,
    SliceGate,
    TestsGate,
)
from rung.config.deploy import AbSettings, CanarySettings, DeploySettings, Guardrails, ShadowSettings
from rung.config.drift import DriftSettings, FeatureDrift
from rung.config.durations import Duration
from rung.config.loader import PROJECT_FILE, find_project_root, load_settings
from rung.config.monitor import MonitorSettings, RequestLogSettings
from rung.config.pipeline import DataSettings, EvaluateSettings, SplitSettings, SqlSource, ValidationSettings
from rung.config.project import (
    PIPELINE_SECTIONS,
    ExecutorSettings,
    RegistrySettings,
    Settings,
    StoreSettings,
    TrackingSettings,
)
from rung.config.servers import BatchingSettings, ServeSettings, UiSettings
from rung.config.triggers import TriggerSettings

__all__ = [
    "Settings",
    "load_settings",
    "PROJECT_FILE",
    "find_project_root",
    "PIPELINE_SECTIONS",
    "Duration",
    "SqlSource",
    "DataSettings",
    "ValidationSettings",
    "SplitSettings",
    "EvaluateSettings",
    "ExecutorSettings",
    "StoreSettings",
    "TrackingSettings",
    "RegistrySettings",
    "Guardrails",
    "CanarySettings",
    "AbSettings",
    "ShadowSettings",
    "DeploySettings",
    "RequestLogSettings",
    "MonitorSettings",
    "DriftSettings",
    "FeatureDrift",
    "AlertRule",
    "SinkSettings",
    "AlertSettings",
    "TriggerSettings",
    "Bound",
    "ChampionMargin",
    "SliceGate",
    "LatencyBudget",
    "SchemaGate",
    "TestsGate",
    "BehaviourCheck",
    "CertifySettings",
    "BatchingSettings",
    "ServeSettings",
    "UiSettings",
]
