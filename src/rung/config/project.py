"""The whole of ``rung.yaml`` as one model, :class:`Settings`, and the small sections that say where things run.

Each larger section has a module of its own (:mod:`rung.config.deploy`,
:mod:`rung.config.certify`, ...); reading the file is :mod:`rung.config.loader`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rung.config.alerts import AlertSettings
from rung.config.certify import CertifySettings
from rung.config.deploy import DeploySettings
from rung.config.monitor import MonitorSettings
from rung.config.pipeline import DataSettings, EvaluateSettings, SplitSettings, ValidationSettings
from rung.config.section import Section
from rung.config.servers import ServeSettings, UiSettings
from rung.config.triggers import TriggerSettings
from rung.config.tune import TrainSection, TuneSettings

__all__ = [
    "ExecutorSettings",
    "StoreSettings",
    "TrackingSettings",
    "RegistrySettings",
    "ArtifactSettings",
    "Settings",
    "PIPELINE_SECTIONS",
]


class ExecutorSettings(Section):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(default=2, ge=1, le=256)
    address: str | None = None


class StoreSettings(Section):
    database_url: str | None = None


class TrackingSettings(Section):
    uri: str | None = None
    experiment: str | None = None


class RegistrySettings(Section):
    model_name: str | None = None


class ArtifactSettings(Section):
    """``artifacts.uri``: where step outputs and data snapshots live for every host (``.rung/artifacts`` is then a cache).

    A folder (a shared volume) or ``s3://``, ``gs://``, ``abfs://``; opened by
    :mod:`rung.objectstore`. Unset: this host's ``.rung/artifacts`` only.
    """

    uri: str | None = None

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        scheme = value.split("://", 1)[0].lower() if value and "://" in value else ""
        if scheme and scheme not in ("file", "s3", "gs", "gcs", "abfs", "az"):
            raise ValueError(f"{value!r}: rung cannot store artifacts there; use a folder, s3://, gs:// or abfs://")
        return value or None


class Settings(Section):
    """Everything rung reads from ``rung.yaml``, with its defaults."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Literal["classification", "regression"] = "classification"
    pipeline: str = "pipeline.py:pipeline"
    data: DataSettings = Field(default_factory=DataSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    train: TrainSection = Field(default_factory=lambda: TrainSection())
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
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

    @property
    def tune(self) -> TuneSettings | None:
        """``train.tune``: the hyperparameter search to run before training, if any (:mod:`rung.config.tune`)."""
        return self.train.get("tune")

    @property
    def prepare(self) -> str | None:
        """``train.prepare``: ``FILE.py:FUNCTION`` turning raw rows into the model's features, packaged with the model."""
        value = self.train.get("prepare")
        return str(value) if value else None

    @model_validator(mode="after")
    def _check_train(self) -> Settings:
        prepare = self.train.get("prepare")
        if prepare is not None and (not isinstance(prepare, str) or ":" not in prepare or not prepare.split(":")[0].endswith(".py")):
            raise ValueError(f"train.prepare: {prepare!r}: write FILE.py:FUNCTION, e.g. src/model.py:prepare")
        return self

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
