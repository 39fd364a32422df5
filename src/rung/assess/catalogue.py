"""The maturity models rung scores against, and the criteria behind their levels.

Four public models, each kept with its own level names:

- **Azure** (Microsoft): levels 0-4, judged separately for People, Model
  Creation and Model Release.
- **Google**: levels 0-2, from a manual process to CI/CD of the pipeline.
- **AWS**: four stages, Initial ▸ Repeatable ▸ Scalable ▸ Reliable.
- **GigaOm**: five categories (strategy, architecture, modeling, processes,
  management), each on levels 0-4.

The criteria are written in rung's own words from those write-ups. One
criterion can count in several models (experiment tracking is Azure
Level 2 and GigaOm modeling Level 2); each placement says where.
How a criterion is checked lives with the collectors
(:mod:`rung.assess.records` for a rung project's records,
:mod:`rung.assess.files` for any repository); criteria that code cannot
show (``answer_only``) come from the team's answers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Placement", "Criterion", "MaturityModel", "MODELS", "CRITERIA", "criterion", "model"]


@dataclass(frozen=True)
class Placement:
    """Where a criterion counts: ``level`` of ``dimension`` in ``model``."""

    model: str
    dimension: str
    level: int


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    met: str  # what counts as met
    partial: str  # what counts as partly met
    next_step: str  # the rung command or configuration that closes the gap
    placements: tuple[Placement, ...]
    answer_only: bool = False  # people and process: only the team can say
    optional: bool = False  # reported, never blocks a level (e.g. a feature store)


@dataclass(frozen=True)
class MaturityModel:
    key: str
    title: str
    source: str
    levels: tuple[str, ...]  # level names, index = level number
    dimensions: tuple[str, ...]  # scored separately; the model's level is the lowest assessed one

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    def level_name(self, level: int) -> str:
        return self.levels[level]


MODELS: tuple[MaturityModel, ...] = (
    MaturityModel(
        "azure", "Microsoft Azure MLOps maturity model", "Microsoft, Azure Architecture Center",
        ("No MLOps", "DevOps but no MLOps", "Automated training", "Automated model deployment",
         "Full MLOps automated operations"),
        ("people", "model creation", "model release"),
    ),
    MaturityModel(
        "google", "Google MLOps levels", "Google Cloud Architecture Center",
        ("Manual process", "ML pipeline automation", "CI/CD pipeline automation"),
        ("overall",),
    ),
    MaturityModel(
        "aws", "AWS MLOps maturity stages", "AWS",
        ("Initial", "Repeatable", "Scalable", "Reliable"),
        ("overall",),
    ),
    MaturityModel(
        "gigaom", "GigaOm MLOps maturity model", "GigaOm, Delivering on the vision of MLOps",
        ("Level 0", "Level 1", "Level 2", "Level 3", "Level 4"),
        ("strategy", "architecture", "modeling", "processes", "management"),
    ),
)


def _at(*spec: tuple[str, str, int]) -> tuple[Placement, ...]:
    return tuple(Placement(*item) for item in spec)


CRITERIA: tuple[Criterion, ...] = (
    # --- code and engineering -------------------------------------------------------------
    Criterion(
        "code.versioned", "Code is under version control",
        met="training and scoring code live in git, and runs record the commit they ran",
        partial="a git repository, but runs do not record which commit they ran",
        next_step="`git init` and commit; `rung run` records the commit and dirty flag of every run",
        placements=_at(("azure", "model creation", 2), ("aws", "overall", 1), ("gigaom", "management", 1)),
    ),
    Criterion(
        "code.modular", "Training is code, not only notebooks",
        met="training runs from scripts or a package that a machine can execute",
        partial="scripts exist, but most of the modelling lives in notebooks",
        next_step="move the notebook's steps into a pipeline: `rung init NAME --template tabular-classification`",
        placements=_at(("azure", "model creation", 1), ("google", "overall", 1), ("gigaom", "modeling", 1)),
    ),
    Criterion(
        "tests.unit", "Code has unit tests",
        met="tests exist for the project's code and pass",
        partial="a few tests exist but none run against the scoring code",
        next_step="add pytest tests under tests/; `rung certify` runs them for every version",
        placements=_at(("azure", "model release", 1), ("gigaom", "processes", 1)),
    ),
    Criterion(
        "tests.model", "The model has integration tests for each release",
        met="every release is tested as a model (loaded and scored), not only as code",
        partial="model tests exist but are not run for each release",
        next_step="`rung certify NAME:VERSION` loads and scores the version and runs the project's tests",
        placements=_at(("azure", "model release", 2),),
    ),
    Criterion(
        "ci.pipeline", "CI builds and tests the pipeline",
        met="a CI workflow runs the tests (and the pipeline) on every change",
        partial="a CI workflow exists but runs no tests",
        next_step="commit a CI workflow that runs `pytest` and `rung run` (rung init writes .github/workflows/rung.yml)",
        placements=_at(("google", "overall", 2), ("aws", "overall", 3), ("gigaom", "processes", 2)),
    ),
    # --- data ------------------------------------------------------------------------------
    Criterion(
        "data.pipeline", "Data is gathered by a pipeline",
        met="the data comes in through code from a declared source, never by hand",
        partial="code reads the data, but from a file someone puts in place by hand",
        next_step="declare `data.source` in rung.yaml (a file, or {url, query} for a database)",
        placements=_at(("azure", "model creation", 1), ("aws", "overall", 1), ("gigaom", "architecture", 1)),
    ),
    Criterion(
        "data.validation", "Data is validated before training",
        met="a schema and quality checks run on every batch and stop the pipeline when they fail",
        partial="validation code exists but does not gate training",
        next_step="keep `data.schema` in rung.yaml: the validate step stops a bad batch before training",
        placements=_at(("google", "overall", 1), ("gigaom", "modeling", 2)),
    ),
    Criterion(
        "data.versioned", "Data is versioned",
        met="every training run records the content hash of the exact data it used",
        partial="data is stored, but which version trained which model is not recorded",
        next_step="`rung run` snapshots the data by content hash and links it to the run and the model version",
        placements=_at(("azure", "model creation", 2), ("gigaom", "architecture", 3)),
    ),
    Criterion(
        "data.managed", "Data comes from managed storage",
        met="training data is read from a database, warehouse or object store",
        partial="training data is a local file",
        next_step="point `data.source` at the warehouse: {url: postgresql://..., query: SELECT ...}",
        placements=_at(("aws", "overall", 2),),
    ),
    # --- training --------------------------------------------------------------------------
    Criterion(
        "pipeline.training", "Training is an automated pipeline",
        met="ingest, validation, training, evaluation and registration run as one pipeline",
        partial="a training script runs end to end, but not as pipeline steps",
        next_step="`rung run` runs the project's pipeline (pipeline.py) with caching and retries",
        placements=_at(("azure", "model creation", 2), ("google", "overall", 1), ("gigaom", "architecture", 2)),
    ),
    Criterion(
        "compute.managed", "Compute is managed",
        met="runs execute on managed workers (processes, a cluster) rather than someone's session",
        partial="training runs in an interactive session",
        next_step="run training with `rung run` (executor: local processes, or Ray for a cluster)",
        placements=_at(("azure", "model creation", 2),),
    ),
    Criterion(
        "infra.scalable", "Infrastructure scales beyond one machine",
        met="a distributed executor, shared metadata database or infrastructure as code is in place",
        partial="containers exist, but everything runs on one machine",
        next_step="set `executor: {kind: ray}` and `store.database_url: postgresql://...` in rung.yaml",
        placements=_at(("aws", "overall", 2), ("gigaom", "architecture", 4)),
    ),
    Criterion(
        "tracking.experiments", "Experiments are tracked",
        met="every run's parameters, metrics and artifacts are logged to a tracking server",
        partial="some runs are logged",
        next_step="`rung run` logs every run to MLflow",
        placements=_at(("azure", "model creation", 2), ("google", "overall", 1), ("gigaom", "modeling", 2)),
    ),
    Criterion(
        "runs.reproducible", "Runs are reproducible",
        met="each run records data hash, code commit, parameters and package versions, and can be re-run",
        partial="dependencies are pinned, but runs do not record everything needed to repeat them",
        next_step="`rung reproduce RUN` re-runs a recorded run and compares its metrics",
        placements=_at(("gigaom", "modeling", 3),),
    ),
    Criterion(
        "features.store", "Features are served from a feature store",
        met="a feature store supplies the same features to training and serving",
        partial="feature code is shared between training and serving",
        next_step="optional: a feature store such as Feast; rung does not require one",
        placements=_at(("google", "overall", 1),),
        optional=True,
    ),
    # --- registry and release ----------------------------------------------------------------
    Criterion(
        "registry.models", "Models are versioned in a registry",
        met="every trained model is a numbered version in a model registry",
        partial="model files are saved, but not as registry versions",
        next_step="`rung run` registers each version in MLflow's registry",
        placements=_at(("azure", "model creation", 2), ("google", "overall", 1), ("gigaom", "management", 2)),
    ),
    Criterion(
        "lineage.recorded", "Lineage and metadata are recorded",
        met="each model version links to its run, data snapshot and code commit",
        partial="runs are tracked, but versions cannot be traced to their data",
        next_step="`rung lineage NAME:VERSION` shows data ▸ code ▸ run ▸ version for every version",
        placements=_at(("google", "overall", 1), ("gigaom", "management", 2)),
    ),
    Criterion(
        "model.packaged", "Models are packaged with their environment",
        met="each version carries its flavour, signature and dependencies, or a container image",
        partial="models are saved as bare files",
        next_step="rung registers MLflow models with signature and requirements; `rung serve` loads them",
        placements=_at(("azure", "model release", 3), ("gigaom", "architecture", 3)),
    ),
    Criterion(
        "release.certified", "Releases pass a certification gate",
        met="no version reaches traffic without passing thresholds, checks against the champion and tests",
        partial="versions are evaluated, but nothing stops a worse one from being released",
        next_step="`rung certify NAME:VERSION` gates every deploy (configure thresholds under `certify:`)",
        placements=_at(("azure", "model release", 3), ("google", "overall", 1), ("gigaom", "modeling", 3)),
    ),
    Criterion(
        "release.automated", "Releases are automated",
        met="new versions reach production by a pipeline or controller, with no manual step",
        partial="releases are one command, but a person runs it each time",
        next_step="let `rung up` deploy retrained versions: `deploy.strategy` in rung.yaml and `triggers:`",
        placements=_at(("azure", "model release", 3), ("google", "overall", 2), ("gigaom", "processes", 3)),
    ),
    Criterion(
        "delivery.progressive", "Progressive delivery (canary, A/B, shadow)",
        met="new versions take traffic gradually or in an experiment before promotion",
        partial="a traffic split is configured but never used",
        next_step="`rung deploy NAME:VERSION --strategy canary` (or ab, shadow)",
        placements=_at(("gigaom", "processes", 4),),
    ),
    Criterion(
        "rollback.automatic", "Promotion and rollback are decided automatically",
        met="a controller promotes or rolls back a release from live evidence",
        partial="rollback is possible but always by hand",
        next_step="run the controller (`rung up` or `rung controller`) with a canary or ab strategy",
        placements=_at(("gigaom", "management", 4),),
    ),
    Criterion(
        "serving.service", "Models are served as a service",
        met="models answer over an API as their own service, separately from the application",
        partial="serving code exists but was not seen running",
        next_step="`rung serve` (Open Inference Protocol v2 and MLflow payloads)",
        placements=_at(("aws", "overall", 2), ("gigaom", "architecture", 3)),
    ),
    # --- operations ------------------------------------------------------------------------------
    Criterion(
        "monitoring.production", "Production is monitored",
        met="drift, data quality and performance of the served model are checked window by window",
        partial="ops metrics exist, but nothing watches the model's inputs and outputs",
        next_step="`rung up` checks every window; `rung monitor NAME` shows them",
        placements=_at(("azure", "model creation", 4), ("google", "overall", 2), ("aws", "overall", 3),
                       ("gigaom", "management", 3)),
    ),
    Criterion(
        "performance.live", "Live performance is measured from feedback",
        met="ground truth comes back and is joined to predictions to measure live accuracy",
        partial="feedback is collected but not joined to predictions",
        next_step="send labels to `POST /v2/feedback` or `rung feedback import FILE`",
        placements=_at(("gigaom", "modeling", 4),),
    ),
    Criterion(
        "alerts.configured", "Alerts reach people",
        met="alert rules on model and data metrics deliver to a sink (webhook, command, log)",
        partial="metrics are collected but nothing alerts on them",
        next_step="declare `alerts.rules` and `alerts.sinks` in rung.yaml",
        placements=_at(("aws", "overall", 3), ("gigaom", "management", 3)),
    ),
    Criterion(
        "pipeline.triggered", "The pipeline runs on triggers",
        met="training starts by schedule, new data or a production signal, not only by hand",
        partial="a schedule is configured but has not started a run",
        next_step="declare `triggers:` (schedule, new_data, drift, performance) and run `rung up`",
        placements=_at(("google", "overall", 1), ("gigaom", "processes", 4)),
    ),
    Criterion(
        "retrain.production-triggered", "Retraining is triggered by production metrics",
        met="drift or degraded live performance started a retraining without a person",
        partial="drift or performance triggers are configured but have not fired",
        next_step="declare `triggers.drift` and `triggers.performance` in rung.yaml and run `rung up`",
        placements=_at(("azure", "model creation", 4), ("gigaom", "processes", 4)),
    ),
    Criterion(
        "governance.audit", "Every decision is on an audit trail",
        met="deploys, promotions, rollbacks and retrainings are recorded with who acted and why",
        partial="some actions are logged",
        next_step="act through rung (CLI, API, controller): every decision is an event; `rung history NAME`",
        placements=_at(("aws", "overall", 3), ("gigaom", "management", 4)),
    ),
    # --- people, process and strategy: answers only ------------------------------------------------
    Criterion(
        "team.ds-de", "Data scientists and data engineers work together",
        met="data scientists work with data engineers to turn experiments into repeatable jobs",
        partial="they meet, but hand-offs are ad hoc",
        next_step="answer in answers.yaml once data scientists and engineers share the pipeline code",
        placements=_at(("azure", "people", 2),),
        answer_only=True,
    ),
    Criterion(
        "team.se-integration", "Software engineers automate model integration",
        met="software engineers work with data engineers to automate how models reach the application",
        partial="software engineers receive model files to integrate by hand",
        next_step="agree one integration path (the gateway's API) and answer in answers.yaml",
        placements=_at(("azure", "people", 3), ("google", "overall", 1)),
        answer_only=True,
    ),
    Criterion(
        "team.production-metrics", "The team owns production metrics",
        met="the team decides which production signals matter and who acts on them",
        partial="metrics are gathered, but nobody owns them",
        next_step="name owners for each alert rule and answer in answers.yaml",
        placements=_at(("azure", "people", 4),),
        answer_only=True,
    ),
    Criterion(
        "team.knowledge-sharing", "Knowledge is shared across the team",
        met="past runs, decisions and lessons are written down where everyone finds them",
        partial="knowledge lives with individuals",
        next_step="share `rung timeline` and the model cards; answer in answers.yaml",
        placements=_at(("aws", "overall", 1),),
        answer_only=True,
    ),
    Criterion(
        "strategy.objectives", "ML work is tied to business objectives",
        met="each model has a stated business objective and an owner",
        partial="objectives exist for some models",
        next_step="write the objective and owner of each model; answer in answers.yaml",
        placements=_at(("gigaom", "strategy", 1),),
        answer_only=True,
    ),
    Criterion(
        "strategy.roadmap", "There is an MLOps roadmap",
        met="an agreed plan, with owners and budget, for how ML moves to production",
        partial="a plan exists but nobody owns it",
        next_step="agree a roadmap (the next steps of this report are a start); answer in answers.yaml",
        placements=_at(("gigaom", "strategy", 2),),
        answer_only=True,
    ),
    Criterion(
        "strategy.kpis", "Business KPIs are measured for models in production",
        met="the business outcome of each production model is measured and reviewed",
        partial="only technical metrics are reviewed",
        next_step="feed business outcomes back as feedback (`rung feedback import`); answer in answers.yaml",
        placements=_at(("gigaom", "strategy", 3),),
        answer_only=True,
    ),
    Criterion(
        "strategy.portfolio", "Models are managed as a portfolio",
        met="investment across models is decided from their measured value and cost",
        partial="models are reviewed one by one",
        next_step="review all models' live value together; answer in answers.yaml",
        placements=_at(("gigaom", "strategy", 4),),
        answer_only=True,
    ),
)

_BY_ID = {c.id: c for c in CRITERIA}
_MODELS = {m.key: m for m in MODELS}


def criterion(criterion_id: str) -> Criterion:
    return _BY_ID[criterion_id]


def model(key: str) -> MaturityModel:
    return _MODELS[key]
