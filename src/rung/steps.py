"""The standard steps of a training pipeline: ingest ▸ validate ▸ split ▸ train ▸ evaluate ▸ register.

``rung init`` writes a ``pipeline.py`` that wires these around the user's own
``train`` step; each one reads its configuration from ``rung.yaml`` through
``ctx.settings``. They are ordinary steps: replace any of them with your own
that produces the same output name.

================  ==============================  ==========================
step              reads                           produces
================  ==============================  ==========================
ingest            data.source                     ``data`` (the snapshot)
validate          data, schema.yaml, validation   ``validated``
split             validated, split                ``train_set``, ``test_set``
profile           train_set                       ``reference_profile``
*train (yours)*   train_set, params               ``model``
evaluate          model, test_set, train_set      ``metrics``
register          model, metrics, train_set, ...  ``model_version``
================  ==============================  ==========================

``prepared(train_set, ctx)`` is what a train step hands the team's own
function: the model's input columns (``data.features``, or all but target,
ids and ``data.drop``) through the ``train.prepare`` hook, and the target.
evaluate and register wrap whatever the train step returned the same way
(:func:`rung.models.trained.trained_model`), so the model is scored and
registered on exactly what it was fitted on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rung.data.sources import describe_source, read_source, source_fingerprint
from rung.errors import DataValidationError
from rung.lineage import file_sha256
from rung.pipeline.owner import ensure_owned
from rung.pipeline.step import StepContext, step

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ingest", "validate", "split", "profile", "prepared", "evaluate", "register"]


def _source_fingerprint(ctx: StepContext) -> str | None:
    return source_fingerprint(ctx.settings.data.source, ctx.project_root)


def _schema_fingerprint(ctx: StepContext) -> str | None:
    return file_sha256(ctx.project_root / ctx.settings.data.schema_file) or "no-schema"


@step(outputs="data", fingerprint=_source_fingerprint)
def ingest(ctx: StepContext) -> pd.DataFrame:
    """Read ``data.source``; the stored output is the run's data snapshot."""
    return read_source(ctx.settings.data.source, ctx.project_root)


@step(outputs="validated", fingerprint=_schema_fingerprint)
def validate(data: pd.DataFrame, ctx: StepContext) -> pd.DataFrame:
    """Stop the run before training when the batch breaks the schema or a quality check."""
    from rung.data.validation import load_schema, validate_frame

    settings = ctx.settings
    schema = load_schema(ctx.project_root / settings.data.schema_file)
    report = validate_frame(
        data, schema, settings.validation, target=settings.data.target, slice_columns=settings.evaluate.slices
    )
    path = ctx.run_dir / "validation.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    if not report.ok:
        raise DataValidationError(f"{report.summary()}; report: {path}", report.to_dict())
    return data


@step(outputs=("train_set", "test_set"))
def split(validated: pd.DataFrame, ctx: StepContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``split.test_size`` of the rows, stratified on the target for classification."""
    from sklearn.model_selection import train_test_split

    settings = ctx.settings
    target = validated[settings.data.target]
    stratify = None
    if settings.task == "classification" and settings.split.stratify and target.value_counts().min() >= 2:
        stratify = target
    train, test = train_test_split(
        validated, test_size=settings.split.test_size, random_state=settings.split.seed, stratify=stratify
    )
    return train, test


@step(outputs="reference_profile")
def profile(train_set: pd.DataFrame, ctx: StepContext) -> dict[str, Any]:
    """The profile of the model's inputs (and target) in the training data, kept with the model for drift monitoring."""
    from rung.data.features import project_inputs
    from rung.data.profile import reference_profile

    data = ctx.settings.data
    inputs = project_inputs(list(train_set.columns), data, ctx.project_root)
    columns = [*inputs, data.target] if data.target in train_set.columns else inputs
    return reference_profile(train_set[columns], target=data.target)


def prepared(train_set: pd.DataFrame, ctx: StepContext) -> tuple[pd.DataFrame, pd.Series]:
    """``(X, y)`` for a training function: the model's input columns through the prepare hook, and the target.

    What a train step gives the team's own function, so that it fits on
    exactly what evaluation and serving will give the model (see
    :mod:`rung.data.features` for which columns are inputs, ``train.prepare``
    for the hook).
    """
    from rung.data.features import project_inputs
    from rung.models.hooks import PrepareHook

    settings = ctx.settings
    data = settings.data
    X = train_set[project_inputs(list(train_set.columns), data, ctx.project_root)]
    if settings.prepare:
        X = PrepareHook.from_spec(settings.prepare, ctx.project_root).load()(X.copy())
    return X, train_set[data.target]


@step(outputs="metrics")
def evaluate(model: Any, test_set: pd.DataFrame, train_set: pd.DataFrame, ctx: StepContext) -> dict[str, Any]:
    """Metrics on the held-out split, overall and per declared slice, through the model's inputs and prepare hook."""
    from rung.evaluation import evaluate_model
    from rung.models.trained import trained_model

    settings = ctx.settings
    return evaluate_model(
        trained_model(settings, ctx.project_root, model, train_set),
        test_set,
        target=settings.data.target,
        task=settings.task,
        slices=settings.evaluate.slices,
        max_slice_values=settings.evaluate.max_slice_values,
    )


@step(outputs="model_version")
def register(
    model: Any, metrics: dict[str, Any], train_set: pd.DataFrame, reference_profile: dict[str, Any], ctx: StepContext
) -> dict[str, Any]:
    """Log the run and model to MLflow, register a version, record its lineage.

    Only while the run's process lives: a worker left behind by a killed run
    must not register (checked first, and again at the moment of registering).
    """
    from rung.project import Project

    project = Project.from_context(ctx)

    def fence() -> None:
        ensure_owned(project.store, ctx.run_id, ctx.step)

    fence()
    return project.register_model(
        model,
        metrics=metrics,
        train_set=train_set,
        reference_profile=reference_profile,
        ctx=ctx,
        data_source=describe_source(ctx.settings.data.source),
        fence=fence,
    )
