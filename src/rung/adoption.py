"""Adopting a version registered with MLflow's own API, so that it goes round the loop like one rung trained.

A team often has versions already: ``mlflow.sklearn.log_model(...,
registered_model_name="churn")`` in a notebook or a job of its own. Those
versions lack what rung records at registration, and that the rest of the
loop reads:

- the **sha256** of every file, checked before each load (a changed file is
  refused, never deserialised);
- the **signature**: from the MLmodel file, or inferred from the logged input
  example (recorded in the lineage, where the loader finds it, since the
  files themselves must not change);
- a **data snapshot and reference profile**: the ``--reference`` rows, which
  certification times and probes the model on, the gateway checks its fast
  route against, and monitoring compares production inputs with;
- **metrics** in rung's shape, measured on the reference rows when they hold
  the target (certification compares them with the champion's);
- **lineage**: what MLflow knows of the run that logged it (params, metrics,
  datasets, git commit, who registered it and when) and ``adopted_from``.

There is no rung pipeline run behind such a version; adoption records one of
its own (pipeline ``adopt``, trigger ``adopt``), so that every reader of a
version's run (lineage, the dashboard, reproduction) finds one. Adoption
moves ``@challenger`` to the version, and ``@champion`` only when the model
has none: an existing champion is never replaced by adopting.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import AdoptionRefused, ModelVersionNotFound, RungError, StoreError, TrackingError

if TYPE_CHECKING:
    import pandas as pd

    from rung.models.loaded import LoadedModel
    from rung.project import Project
    from rung.store.records import ModelVersionRecord

__all__ = ["Adopted", "adopt", "parse_registry_ref"]

ADOPT = "adopt"  # the pipeline and trigger of the run record an adoption writes
# MLflow flavours rung names a version by, in this order; anything else with python_function is "pyfunc".
FLAVOURS = ("sklearn", "xgboost", "lightgbm", "pytorch", "onnx", "tensorflow", "keras")
_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))$")
WHAT_TO_ADD = ("log the model with a signature (signature=infer_signature(X, model.predict(X))) "
               "or an input example (input_example=X.head())")


@dataclass(frozen=True)
class Adopted:
    """What ``rung adopt`` recorded: the version as rung now knows it."""

    name: str
    version: int
    source: str  # models:/NAME/VERSION
    flavor: str
    files: int
    signature_from: str  # "MLmodel" or "input example"
    inputs: list[str]
    run_id: str  # rung's adopt run record
    mlflow_run_id: str
    reference_rows: int
    metrics_from: str  # "reference" (measured on it) or "MLflow run" (as logged)
    metrics: dict[str, Any]
    aliases: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the person should know (a champion rung does not hold)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self) | {"ref": self.ref}


def parse_registry_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``models:/churn/3`` → ``("churn", 3, None)``; ``models:/churn@prod`` → ``("churn", None, "prod")``."""
    match = _REF.match(ref.strip())
    if match is None:
        raise AdoptionRefused(f"'{ref}' is not a registered version; write models:/NAME/VERSION or models:/NAME@ALIAS")
    version = match["version"]
    return match["name"], int(version) if version else None, match["alias"]


def adopt(project: Project, ref: str, reference: Path, *, actor: str = "cli") -> Adopted:
    """Make the MLflow version ``ref`` a rung version, with ``reference`` (CSV or Parquet) as its data; see the module.

    Everything is checked and computed before anything is written: a refusal
    (:class:`~rung.errors.AdoptionRefused`, :class:`~rung.errors.ModelVersionNotFound`,
    :class:`~rung.errors.DataError`) leaves the store and the registry as they were.
    """
    from rung.data.sources import read_table

    name, number, alias = parse_registry_ref(ref)
    settings = project.settings
    if name != settings.model_name:
        raise AdoptionRefused(
            f"{ref}: this project's model is '{settings.model_name}', not '{name}'; "
            f"set `registry.model_name: {name}` (or `name: {name}`) in rung.yaml to adopt it"
        )
    frame = read_table(reference, f"--reference {reference}")
    if frame.empty:
        raise AdoptionRefused(f"--reference {reference}: the file has no rows; give the rows the model was trained on")
    found = _resolve(project, name, number, alias, ref)
    version = int(found.version)
    source = f"models:/{name}/{version}"
    if project.store.get_model_version(name, version) is not None:
        raise AdoptionRefused(f"{source} is {name}:{version} in rung already; nothing changed (see `rung lineage {name}:{version}`)")

    files, meta, example_columns = _inspect(project, source)
    flavor = _flavor(meta.get("flavors") or {}, source)
    signature, signature_from = _signature(meta, example_columns, source)
    inputs = [str(c["name"]) for c in signature if c.get("name") is not None]
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        raise AdoptionRefused(
            f"--reference {reference} lacks the model's input column(s) {', '.join(missing[:5])}; "
            "give rows with every input the model takes"
        )
    run = _mlflow_run(project, getattr(found, "run_id", None))
    target = settings.data.target
    snapshot = project.artifacts.put(frame)
    profile_columns = [*inputs, target] if target in frame.columns else (inputs or list(frame.columns))
    from rung.data.profile import reference_profile

    profile = project.artifacts.put(reference_profile(frame[profile_columns], target=target))

    from rung.tracking import manifest_digest

    run_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    lineage = _lineage(found, run, meta, source, reference, frame, snapshot, profile, run_id, files, signature,
                       signature_from)
    record = _record(name, version, run_id, source, flavor, files, lineage, now)
    cache = project.models_loader.cache_dir / name / str(version)
    cached_before = cache.exists()
    try:
        try:
            loaded = project.models_loader.load(record)
        except RungError as exc:
            raise AdoptionRefused(f"{source}: rung cannot load it: {exc}") from exc
        metrics, metrics_from = _metrics(project, loaded, frame, run)
    except RungError:
        if not cached_before:  # the verified copy of a version rung does not hold
            shutil.rmtree(cache, ignore_errors=True)
        raise
    lineage["metrics_from"] = metrics_from
    record = replace(record, metrics=metrics, lineage=lineage)

    aliases, champion = _commit(project, record, metrics, lineage, now, actor)
    notes = []
    if champion is not None and project.store.get_model_version(name, champion) is None:
        notes.append(f"@champion is {name}:{champion}, which rung does not hold: it cannot be served or compared with "
                     f"until you adopt it too (rung adopt models:/{name}/{champion} --reference FILE)")
    project.store.append_event(
        "model.adopted",
        actor=actor,
        subject=name,
        data={"version": version, "run_id": run_id, "from": source, "aliases": aliases, "flavor": flavor,
              "files": len(files), "sha256": manifest_digest(files), "reference_rows": int(len(frame))},
        time=now,
    )
    return Adopted(name=name, version=version, source=source, flavor=flavor, files=len(files),
                   signature_from=signature_from, inputs=inputs, run_id=run_id, mlflow_run_id=record.mlflow_run_id,
                   reference_rows=int(len(frame)), metrics_from=metrics_from, metrics=metrics.get("overall", {}),
                   aliases=aliases, notes=notes)


# -- reading MLflow ------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _client(project: Project) -> Any:
    import mlflow

    return mlflow.MlflowClient(project.tracking.uri, project.tracking.uri)


def _resolve(project: Project, name: str, number: int | None, alias: str | None, ref: str) -> Any:
    """MLflow's ModelVersion for ``name`` at ``number`` or ``@alias``; :class:`ModelVersionNotFound` when there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

    uri = project.tracking.uri
    project.tracking.check_reachable()
    try:
        client = _client(project)
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(number))
    except MlflowException as exc:
        if exc.error_code in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)):
            which = f"@{alias}" if alias is not None else f"version {number}"
            raise ModelVersionNotFound(
                f"{ref}: MLflow at {uri} has no {which} of '{name}'; check the name and version in the MLflow UI"
            ) from None
        raise TrackingError(f"{ref}: cannot read it from MLflow at {uri}: {_first_line(exc)}") from exc
    except Exception as exc:
        raise TrackingError(f"{ref}: cannot read it from MLflow at {uri}: {_first_line(exc)}") from exc


def _inspect(project: Project, source: str) -> tuple[dict[str, str], dict[str, Any], list[dict[str, Any]]]:
    """The version's files as sha256 by path, its MLmodel, and the columns its input example implies (if any)."""
    from rung.models.flavours import read_mlmodel
    from rung.tracking import hash_tree

    project.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adopt-", dir=project.state_dir) as tmp:
        try:
            with project.tracking.fluent() as mlflow:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        except Exception as exc:
            raise TrackingError(f"{source}: cannot fetch its files from MLflow at {project.tracking.uri}: {_first_line(exc)}") from exc
        files = hash_tree(local)
        if "MLmodel" not in files:
            raise AdoptionRefused(f"{source}: its files hold no MLmodel file; register a model logged with mlflow.<flavour>.log_model")
        meta = read_mlmodel(local)
        example: list[dict[str, Any]] = []
        if not (meta.get("signature") or {}).get("inputs") and meta.get("saved_input_example_info"):
            example = _example_columns(local, source)
    return files, meta, example


def _example_columns(path: Path, source: str) -> list[dict[str, Any]]:
    """The signature MLflow infers from the version's logged input example, as ``[{"name", "type"}]``."""
    from mlflow.models import Model, infer_signature

    try:
        example = Model.load(str(path / "MLmodel")).load_input_example(str(path))
        with warnings.catch_warnings():  # MLflow's hint about integer columns is for the person logging the model
            warnings.simplefilter("ignore")
            inputs = infer_signature(example).inputs
    except Exception as exc:
        raise AdoptionRefused(f"{source}: its input example cannot be read ({_first_line(exc)}); {WHAT_TO_ADD}") from exc
    columns = inputs.to_dict() if inputs is not None else []
    if not any(c.get("name") for c in columns):
        raise AdoptionRefused(f"{source}: its input example has no column names; "
                              "log the model with a signature, or with a pandas DataFrame as input_example")
    return [{"name": c["name"], "type": c.get("type", "string")} for c in columns]


def _flavor(flavors: dict[str, Any], source: str) -> str:
    for name in FLAVOURS:
        if name in flavors:
            return name
    if "python_function" in flavors:
        return "pyfunc"
    listed = ", ".join(sorted(flavors)) or "none"
    raise AdoptionRefused(f"{source}: its flavours ({listed}) cannot be served; log it with an MLflow flavour that has python_function")


def _signature(meta: dict[str, Any], example: list[dict[str, Any]], source: str) -> tuple[list[dict[str, Any]], str]:
    raw = (meta.get("signature") or {}).get("inputs")
    if raw:
        spec = json.loads(raw) if isinstance(raw, str) else raw
        return [{"name": c.get("name"), "type": c.get("type", "string")} for c in spec], "MLmodel"
    if example:
        return example, "input example"
    raise AdoptionRefused(f"{source} has neither a signature nor an input example; {WHAT_TO_ADD}, register it again and adopt that version")


def _mlflow_run(project: Project, run_id: str | None) -> Any:
    """The MLflow run that logged the version, or None (a model logged without a run, a run deleted since)."""
    if not run_id:
        return None
    try:
        return _client(project).get_run(run_id)
    except Exception:
        return None


# -- what rung records --------------------------------------------------------------------------------


def _lineage(found: Any, run: Any, meta: dict[str, Any], source: str, reference: Path, frame: pd.DataFrame,
             snapshot: str, profile: str, run_id: str, files: dict[str, str], signature: list[dict[str, Any]],
             signature_from: str) -> dict[str, Any]:
    from rung.tracking import manifest_digest

    tags = dict(run.data.tags) if run is not None else {}
    registered = getattr(found, "creation_timestamp", None)
    datasets = []
    for item in (run.inputs.dataset_inputs if run is not None and run.inputs else []) or []:
        dataset = item.dataset
        datasets.append({"name": dataset.name, "digest": dataset.digest, "source_type": dataset.source_type,
                         "source": str(dataset.source)[:500], "profile": dataset.profile,
                         "context": next((t.value for t in item.tags if t.key == "mlflow.data.context"), None)})
    python = ((meta.get("flavors") or {}).get("python_function") or {}).get("python_version")
    packages = {"mlflow": meta.get("mlflow_version")}
    for conf in (meta.get("flavors") or {}).values():
        for key, value in conf.items() if isinstance(conf, dict) else ():
            if key.endswith("_version") and key != "python_version" and isinstance(value, str):
                packages[key.removesuffix("_version").replace("sklearn", "scikit-learn")] = value
    return {
        "adopted_from": source,
        "pipeline_run": run_id,
        "data": {"snapshot": snapshot, "source": str(reference), "rows": int(len(frame)), "role": "reference"},
        "code": {"git_commit": tags.get("mlflow.source.git.commit") or None, "git_dirty": None,
                 "source": tags.get("mlflow.source.name"), "git_repo": tags.get("mlflow.source.git.repoURL")},
        "params": dict(run.data.params) if run is not None else {},
        "environment": {"python": python, "packages": {k: v for k, v in packages.items() if v}},
        "mlflow_run_id": getattr(found, "run_id", None) or "",
        "model_uri": source,
        "model_sha256": manifest_digest(files),
        "reference_profile": profile,
        "signature": {"inputs": signature, "from": signature_from},
        "mlflow": {
            "run_id": getattr(found, "run_id", None),
            "source": getattr(found, "source", None),
            "registered_at": datetime.fromtimestamp(registered / 1000, UTC).isoformat() if registered else None,
            "registered_by": getattr(found, "user_id", None) or tags.get("mlflow.user"),
            "metrics": dict(run.data.metrics) if run is not None else {},
            "datasets": datasets,
            "tags": {k: v for k, v in (getattr(found, "tags", None) or {}).items()},
        },
        "outputs": {"data": snapshot, "reference_profile": profile},
    }


def _record(name: str, version: int, run_id: str, source: str, flavor: str, files: dict[str, str],
            lineage: dict[str, Any], now: datetime) -> ModelVersionRecord:
    from rung.store import ModelVersionRecord

    return ModelVersionRecord(name=name, version=version, run_id=run_id, mlflow_run_id=lineage["mlflow_run_id"],
                              model_uri=source, flavor=flavor, sha256=files, metrics={}, lineage=lineage,
                              created_at=now)


class _Scorer:
    """A loaded version as :func:`rung.evaluation.evaluate_model` asks for one: predict (and predict_proba) over raw rows."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.classes_ = list(model.classes)
        estimator = model.estimator
        if model.task == "classification" and model.classes and hasattr(estimator, "predict_proba"):
            self.predict_proba = lambda rows: estimator.predict_proba(model.frame(rows))

    def predict(self, rows: pd.DataFrame) -> Any:
        return self.model.predict(self.model.frame(rows))["predict"]


def _metrics(project: Project, model: LoadedModel, frame: pd.DataFrame, run: Any) -> tuple[dict[str, Any], str]:
    """rung's metrics measured on the reference rows when they hold the target; else the MLflow run's, as logged."""
    from rung.evaluation import evaluate_model

    settings = project.settings
    target = settings.data.target
    if target in frame.columns and frame[target].notna().any():
        rows = frame[frame[target].notna()]
        try:
            result = evaluate_model(_Scorer(model), rows, target=target, task=settings.task,
                                    slices=[s for s in settings.evaluate.slices if s in rows.columns],
                                    max_slice_values=settings.evaluate.max_slice_values)
        except Exception as exc:  # the team's model may raise anything on rows it was not built for
            raise AdoptionRefused(f"{model.ref}: measuring it on the reference rows failed: {type(exc).__name__}: "
                                  f"{_first_line(exc)}") from exc
        return json.loads(json.dumps(result, default=float)), "reference"
    logged = dict(run.data.metrics) if run is not None else {}
    return {"overall": {k: float(v) for k, v in logged.items()}, "slices": {}, "rows": 0}, "MLflow run"


def _commit(project: Project, record: ModelVersionRecord, metrics: dict[str, Any], lineage: dict[str, Any],
            now: datetime, actor: str) -> tuple[list[str], int | None]:
    """MLflow's tags and aliases, then the store's records; if the store refuses, MLflow is put back as it was.

    The version gets ``@challenger``, and ``@champion`` when the model has
    none (both read before any alias moves); returns its aliases and the champion. The adopt run is recorded
    before the version, which is the write that refuses a second adoption:
    a run whose version could not be recorded is marked failed.
    """
    from rung.store import PipelineRun
    from rung.tracking import CHALLENGER, CHAMPION, manifest_digest

    tracking, name, version = project.tracking, record.name, record.version
    tags = {"rung.sha256": manifest_digest(record.sha256), "rung.run_id": record.run_id, "rung.flavor": record.flavor,
            "rung.adopted_from": record.model_uri}
    before = {alias: tracking.alias_version(name, alias) for alias in (CHAMPION, CHALLENGER)}
    aliases = [CHALLENGER] + ([CHAMPION] if before[CHAMPION] is None else [])
    pipeline_run = PipelineRun(
        id=record.run_id, project=project.settings.name, pipeline=ADOPT, status="succeeded", trigger=ADOPT,
        started_at=now, finished_at=now, params=dict(lineage.get("params") or {}), metrics=metrics,
        lineage={"adopted_from": record.model_uri, "actor": actor, "code": lineage["code"],
                 "environment": lineage["environment"], "mlflow_run_id": record.mlflow_run_id},
        steps_total=0, model_name=name, model_version=version,
    )
    try:
        tracking.set_version_tags(name, version, tags)
        for alias in aliases:
            tracking.set_alias(name, alias, version)
        project.store.create_run(pipeline_run)
    except RungError:
        _restore(project, record, tags, before)
        raise
    try:
        project.store.add_model_version(record)
    except StoreError as exc:
        _restore(project, record, tags, before)
        project.store.update_run(record.run_id, status="failed", error=f"not recorded: {exc}")
        raise AdoptionRefused(f"{record.model_uri}: rung could not record it ({exc}); nothing changed") from exc
    return aliases, before[CHAMPION] if before[CHAMPION] is not None else version


def _restore(project: Project, record: ModelVersionRecord, tags: dict[str, str], before: dict[str, int | None]) -> None:
    """Best effort: the version's tags removed, each alias back where it pointed."""
    import contextlib

    client = _client(project)
    for key in tags:
        with contextlib.suppress(Exception):
            client.delete_model_version_tag(record.name, str(record.version), key)
    for alias, version in before.items():
        with contextlib.suppress(Exception):
            if version is None:
                client.delete_registered_model_alias(record.name, alias)
            else:
                client.set_registered_model_alias(record.name, alias, str(version))
