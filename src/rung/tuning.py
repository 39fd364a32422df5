"""``train.tune``: a hyperparameter search on Ray Tune, run just before the train step.

The search sits between the pipeline and the registry. When the step that
produces ``model`` is ready, the runner hands it to :class:`TuneSearch`
(through its :class:`~rung.pipeline.runner.ParamSearch` hook) before
running it:

1. ``validation_size`` of ``train_set`` is held out (stratified like
   ``split``, seeded), so trials never see the test split that ``evaluate``
   reports on;
2. each of ``trials`` draws from ``space`` trains the team's own train
   function on the rest, with the draw over ``train.params``, and is scored
   on the held-out rows with rung's own metrics (through the model's inputs
   and prepare hook, as ``evaluate`` scores);
3. every trial becomes an MLflow child run (its params and validation
   metrics) of the run that registration then fills with the model: the
   registered version's run is the parent of its search;
4. the best trial's params are the run's params from then on, so the train
   step fits, and register records, exactly those; the search itself
   (metric, trials, best params) goes into the run's and the version's
   lineage.

Trials run on Ray Tune: on the cluster at ``executor.address`` (the same
connection as the Ray executor, :mod:`rung.pipeline.cluster`) or on a local
Ray instance, each reserving the train step's declared resources (one CPU
by default). Without Ray installed the run stops before it starts, naming
``rung[ray]``. The runner caches the search like a step: the same code,
data, params and settings reuse the earlier search and its choice.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import ConfigError, MissingDependency, RungError

if TYPE_CHECKING:
    import pandas as pd

    from rung.config import Settings
    from rung.config.tune import Distribution, TuneSettings
    from rung.pipeline.cluster import RayConnection
    from rung.pipeline.step import Step, StepContext, StepResources
    from rung.tracking import Tracking

__all__ = ["TuneSearch", "Objective", "Trial", "TASK_METRICS", "tune_metric", "ray_space", "run_trials",
           "run_trials_inline", "best_trial", "holdout"]

# What rung.evaluation computes for each task, so a search cannot run on a metric no trial will report.
# (roc_auc and log_loss need a model that gives probabilities.)
TASK_METRICS = {
    "classification": ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


def tune_metric(settings: Settings) -> tuple[str, str]:
    """``(metric, "max" | "min")`` of the search; a :class:`ConfigError` naming the field for one rung cannot compute.

    The default is the project's primary metric, as
    :attr:`rung.project.Project.primary_metric` chooses it.
    """
    from rung.evaluation import PRIMARY_METRIC, higher_is_better

    tune = settings.tune
    assert tune is not None
    if tune.metric is not None:
        metric, where = tune.metric, "train.tune.metric"
    elif settings.evaluate.primary_metric:
        metric, where = settings.evaluate.primary_metric, "train.tune.metric (default: evaluate.primary_metric)"
    else:
        metric, where = PRIMARY_METRIC[settings.task], "train.tune.metric"
    known = TASK_METRICS[settings.task]
    if metric not in known:
        raise ConfigError(f"rung.yaml: {where}: {metric!r} is not a metric rung computes for a {settings.task} task; "
                          f"use one of {', '.join(known)}", field="train.tune.metric")
    return metric, "max" if higher_is_better(metric) else "min"


def holdout(train_set: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(fit part, validation part)`` of ``train_set``: ``train.tune.validation_size`` held out, as ``split`` holds out."""
    from sklearn.model_selection import train_test_split

    tune = settings.tune
    assert tune is not None
    target = train_set[settings.data.target]
    stratify = None
    if settings.task == "classification" and settings.split.stratify and target.value_counts().min() >= 2:
        stratify = target
    seed = tune.seed if tune.seed is not None else settings.split.seed
    fit, valid = train_test_split(train_set, test_size=tune.validation_size, random_state=seed, stratify=stratify)
    return fit, valid


@dataclass(frozen=True)
class Objective:
    """One trial's work, picklable: the train function with the trial's params over the fixed ones, scored on validation.

    Ray ships it once to every trial (``tune.with_parameters``); the bench
    calls it in a loop to time the same trials one by one.
    """

    func: Callable[..., Any]
    uses: frozenset[str]
    outputs: tuple[str, ...]
    inputs: dict[str, Any]  # the train step's other inputs, as they are
    train: pd.DataFrame
    valid: pd.DataFrame
    fixed: dict[str, Any]
    metric: str
    settings: Settings
    root: Path
    ctx: StepContext | None = None

    def params(self, trial: dict[str, Any]) -> dict[str, Any]:
        """The params a trial trains with: its draw (as plain Python values, not numpy's) over the fixed ones."""
        return {**self.fixed, **{k: _plain(v) for k, v in trial.items()}}

    def __call__(self, trial: dict[str, Any]) -> dict[str, float]:
        """Train with ``trial``'s params and return the metrics on the validation rows."""
        from rung.evaluation import evaluate_model
        from rung.models.trained import trained_model

        params = self.params(trial)
        kwargs = {**self.inputs, "train_set": self.train}
        if "params" in self.uses:
            kwargs["params"] = params
        if "ctx" in self.uses:
            kwargs["ctx"] = dataclasses.replace(self.ctx, params=params) if self.ctx is not None else None
        result = self.func(**kwargs)
        model = result[self.outputs.index("model")] if len(self.outputs) > 1 else result
        settings = self.settings
        scored = evaluate_model(trained_model(settings, self.root, model, self.train), self.valid,
                                target=settings.data.target, task=settings.task)
        return {k: float(v) for k, v in scored["overall"].items()}


@dataclass(frozen=True)
class Trial:
    """One trial's outcome: its whole params, the search metric's value (``None`` if it failed) and why not."""

    index: int
    params: dict[str, Any]
    value: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _attempt(objective: Objective, config: dict[str, Any]) -> dict[str, Any]:
    """Run one trial and say how it went as data: a failed trial is a result, not an exception."""
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    error = None
    try:
        metrics = objective(config)
        value = metrics.get(objective.metric)
        if value is None or not math.isfinite(value):
            error = f"metric '{objective.metric}' was not computed (roc_auc and log_loss need probabilities)"
    except Exception as exc:
        error = f"{type(exc).__name__}: {_first_line(exc)}"
    return {"metrics": metrics, "error": error, "duration_s": time.perf_counter() - started}


def _trainable(config: dict[str, Any], objective: Objective) -> None:
    """The function Ray Tune runs for each trial."""
    from ray import tune

    tune.report(_attempt(objective, config))


def run_trials_inline(objective: Objective, configs: list[dict[str, Any]]) -> list[Trial]:
    """The trials one after another in this process: what the search costs without Ray (the bench's baseline)."""
    return [_trial(i, objective, config, _attempt(objective, config)) for i, config in enumerate(configs)]


def _trial(index: int, objective: Objective, config: dict[str, Any], report: dict[str, Any]) -> Trial:
    metrics = dict(report.get("metrics") or {})
    error = report.get("error")
    return Trial(index=index, params=objective.params(config), value=None if error else metrics.get(objective.metric),
                 metrics=metrics, error=error, duration_s=float(report.get("duration_s") or 0.0))


def ray_space(space: dict[str, Distribution]) -> dict[str, Any]:
    """``train.tune.space`` in Ray Tune's terms (``randint`` gets its high end included, as rung.yaml says)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, dist in space.items():
        if dist.choice is not None:
            out[name] = tune.choice(list(dist.choice))
        elif dist.randint is not None:
            out[name] = tune.randint(dist.randint[0], dist.randint[1] + 1)
        elif dist.loguniform is not None:
            out[name] = tune.loguniform(*dist.loguniform)
        elif dist.uniform is not None:
            out[name] = tune.uniform(*dist.uniform)
    return out


def run_trials(
    objective: Objective,
    tune_settings: TuneSettings,
    *,
    seed: int | None,
    resources: StepResources,
    storage: Path,
) -> list[Trial]:
    """Run the search on Ray Tune (Ray must be connected): ``trials`` random draws, at most ``max_concurrent`` at once.

    Each trial reserves ``resources`` (one CPU when none are declared);
    ``storage`` holds Ray Tune's own record of the search.
    """
    from ray import cloudpickle, tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rung.pipeline.executors import pickle_by_value

    pickle_by_value(cloudpickle, objective.func.__module__)
    bundle: dict[str, float] = {"CPU": resources.num_cpus if resources.num_cpus is not None else 1.0}
    if resources.num_gpus:
        bundle["GPU"] = resources.num_gpus
    if resources.memory:
        bundle["memory"] = float(resources.memory)
    trainable = tune.with_resources(tune.with_parameters(_trainable, objective=objective), PlacementGroupFactory([bundle]))
    tuner = tune.Tuner(
        trainable,
        param_space=ray_space(tune_settings.space),
        tune_config=tune.TuneConfig(
            num_samples=tune_settings.trials,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(max_concurrent=tune_settings.max_concurrent or 0, random_state=seed),
        ),
        run_config=tune.RunConfig(name="search", storage_path=str(storage.resolve()), verbose=0),
    )
    grid = tuner.fit()
    results = sorted((grid[i] for i in range(len(grid))), key=lambda r: str((r.metrics or {}).get("trial_id", "")))
    trials = []
    for index, result in enumerate(results):
        report = dict(result.metrics or {})
        if result.error is not None and not report.get("error"):
            report["error"] = f"the trial's worker failed: {_first_line(result.error)}"
        trials.append(_trial(index, objective, dict(result.config or {}), report))
    return trials


def best_trial(trials: list[Trial], mode: str) -> Trial | None:
    """The trial with the best value (the first of equals), or ``None`` when every one failed."""
    scored = [t for t in trials if t.value is not None]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda t: (t.value, -t.index) if mode == "max" else (t.value, t.index))


class TuneSearch:
    """The runner's :class:`~rung.pipeline.runner.ParamSearch` for ``train.tune``: Ray Tune trials, MLflow child runs.

    Built by :meth:`rung.project.Project.run` from the run's settings; the
    checks that need no data (the metric, Ray being installed) happen here,
    before any step runs.
    """

    label = "tuning"

    def __init__(self, settings: Settings, root: Path, *, tracking: Tracking, experiment: str,
                 address: str | None = None) -> None:
        if settings.tune is None:
            raise ValueError("TuneSearch needs settings with train.tune")
        self.settings = settings
        self.tune = settings.tune
        self.root = root
        self.tracking = tracking
        self.experiment = experiment
        self.address = address
        self.metric, self.mode = tune_metric(settings)
        _require_tune(load=False)

    def wants(self, step: Step) -> bool:
        """The search chooses the params of the step that produces ``model``."""
        return "model" in step.outputs

    def fingerprint(self) -> str:
        """What the search depends on besides the train step's own cache key: every pipeline setting and rung's version."""
        from rung.version import __version__

        return f"{__version__}:{self.settings.pipeline_fingerprint()}"

    def search(self, step: Step, values: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Run the trials for ``step`` on its input ``values``; the record, with ``params``: the best trial's.

        A search whose every trial failed is a :class:`~rung.errors.RungError`
        quoting the first failure.
        """
        from rung.pipeline.cluster import connect_ray

        _require_tune(load=True)
        if "train_set" not in values:
            raise ConfigError(f"train.tune: step '{step.name}' takes no train_set, so there is nothing to hold out "
                              "for scoring trials", field="train.tune")
        fit, valid = holdout(values["train_set"], self.settings)
        objective = Objective(
            func=step.func, uses=step.uses, outputs=step.outputs,
            inputs={k: v for k, v in values.items() if k != "train_set"}, train=fit, valid=valid,
            fixed=dict(ctx.params), metric=self.metric, settings=self.settings, root=self.root, ctx=ctx,
        )
        seed = self.tune.seed if self.tune.seed is not None else self.settings.split.seed
        started = time.perf_counter()
        connection: RayConnection = connect_ray(self.address, purpose="train.tune")
        try:
            resources = step.resources
            unmet = connection.unmet({"CPU": resources.num_cpus if resources.num_cpus is not None else 1.0,
                                      "GPU": resources.num_gpus or 0.0, "memory": float(resources.memory or 0)})
            if unmet is not None:
                raise RungError(f"train.tune: each trial reserves what step '{step.name}' declares "
                                f"({resources.describe()}), and {unmet}")
            print(f"[rung] train.tune: {self.tune.trials} trials on {connection.where}, "
                  f"{self.metric} ({self.mode}) on {len(valid)} held-out rows", flush=True)
            trials = run_trials(objective, self.tune, seed=seed, resources=step.resources, storage=ctx.run_dir / "tune")
        finally:
            connection.close()
        for trial in trials:
            print(f"[rung] trial {trial.index}: {trial.params} -> "
                  f"{self.metric}={trial.value if trial.value is not None else trial.error}", flush=True)
        best = best_trial(trials, self.mode)
        if best is None:
            raise RungError(f"train.tune: all {len(trials)} trials failed; trial 0: {trials[0].error if trials else 'none ran'}")
        parent = self.tracking.log_search(
            experiment=self.experiment,
            run_name=ctx.run_id[:8],
            tags={"rung.run_id": ctx.run_id, "rung.project": self.settings.name, "rung.tune.metric": self.metric,
                  "rung.tune.best_trial": str(best.index)},
            trials=[{"name": f"trial-{t.index}", "params": t.params, "metrics": t.metrics, "failed": t.error is not None}
                    for t in trials],
        )
        return {
            "params": best.params,
            "metric": self.metric,
            "mode": self.mode,
            "trials": len(trials),
            "failed": sum(1 for t in trials if t.error is not None),
            "best": {"trial": best.index, "value": best.value, "params": best.params},
            "space": self.tune.model_dump(mode="json")["space"],
            "validation_rows": len(valid),
            "results": [t.to_dict() for t in trials],
            "mlflow_run_id": parent,
            "ray": self.address or "local",
            "search_s": round(time.perf_counter() - started, 3),
        }


def _require_tune(*, load: bool) -> None:
    """Ray with its Tune libraries, or a :class:`MissingDependency` naming ``rung[ray]``.

    Without ``load`` only whether Ray is installed is checked (importing it
    takes a second or two, too much for a run whose search is cached).
    """
    import importlib.util

    if not load:
        try:
            spec = importlib.util.find_spec("ray")
        except ValueError:  # blocked in sys.modules
            spec = None
        if spec is None:
            raise MissingDependency("ray", extra="ray", package="ray", purpose="train.tune")
        return
    from rung.optional import require

    require("ray", purpose="train.tune")
    try:
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("ray", extra="ray", package="ray[tune]", purpose="train.tune") from exc


def _plain(value: Any) -> Any:
    """A numpy scalar (Ray Tune draws them) as the Python value it holds: JSON, MLflow and estimators take those."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
