"""Inspect a repository's files for signs of MLOps practice, in bounded time.

One pass over the tree: vendored, environment and data directories are
skipped (and named in the result), only the head of each text file is read
(``HEAD_BYTES``), and the walk stops at a time budget, marking the result
partial. Each file's text is matched once against one compiled alternation
of every signal, so the cost is one regex pass per file whatever the number
of signals.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rung.errors import AssessError

__all__ = ["Scan", "scan_repository", "SKIP_DIRS", "HEAD_BYTES"]

HEAD_BYTES = 256 * 1024
MAX_LISTED = 5  # files shown as evidence per signal
MAX_KEPT = 50  # files remembered per signal

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", "bower_components", ".venv", "venv", "env", ".env", "virtualenv",
    "site-packages", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs",
    "dist", "build", "vendor", "vendored", "third_party", "third-party", "external", "data", "datasets",
    ".rung", "mlruns", "mlartifacts", "wandb", ".ipynb_checkpoints", ".dvc", ".idea", ".vscode", "target",
    ".terraform", ".cache", "outputs", "logs", "checkpoints",
})
CODE_SUFFIXES = frozenset({".py", ".ipynb", ".r", ".scala", ".java", ".jl", ".sql"})
TEXT_SUFFIXES = frozenset({".py", ".ipynb", ".yml", ".yaml", ".toml", ".cfg", ".ini", ".txt", ".tf", ".sh",
                           ".mk", ".in", ".lock"})
TEXT_NAMES = frozenset({"Dockerfile", "Containerfile", "Jenkinsfile", "Makefile", "MLmodel", "MLproject", "Procfile"})

# Signals found in file contents. A file is split into its words once (a byte-level translate and split,
# in C). A literal signal is a list of (word, text) pairs: it is found when the word is among the file's
# words and the text is in the file, so most files cost set lookups and a few substring searches.
LITERAL_SIGNALS: dict[str, tuple[tuple[str, str], ...]] = {
    "mlflow": (("mlflow", "mlflow.log_"), ("mlflow", "mlflow.start_run"), ("mlflow", "mlflow.autolog"),
               ("mlflow", "mlflow.set_experiment"), ("autolog", ".autolog(")),
    "tracking": (("wandb", "wandb.init"), ("wandb", "wandb.log"), ("neptune", "neptune.init"),
                 ("comet_ml", "import comet_ml"), ("clearml", "from clearml import"), ("aim", "aim.Run("),
                 ("SummaryWriter", "SummaryWriter("), ("dvclive", "dvclive")),
    "registry": (("register_model", "register_model("), ("registered_model_name", "registered_model_name"),
                 ("create_model_version", "create_model_version("),
                 ("set_registered_model_alias", "set_registered_model_alias("),
                 ("transition_model_version_stage", "transition_model_version_stage("),
                 ("bentoml", ".save_model("), ("link_model", "link_model("), ("ModelPackage", "ModelPackage("),
                 ("aiplatform", "Model.upload(")),
    "log_model": (("mlflow", ".log_model("),),
    "model_file": (("joblib", "joblib.dump("), ("pickle", "pickle.dump("), ("save_model", ".save_model("),
                   ("torch", "torch.save("), ("skops", "skops.io.dump(")),
    "validation": (("pandera", "pandera"), ("great_expectations", "great_expectations"),
                   ("tensorflow_data_validation", "tensorflow_data_validation"), ("deepchecks", "deepchecks"),
                   ("soda", "soda.scan")),
    "orchestrator": tuple((word, f"{how} {word}") for word in ("airflow", "prefect", "dagster", "kedro", "zenml",
                                                                "metaflow", "kfp", "luigi", "flytekit", "rung")
                          for how in ("from", "import")) + (("sagemaker", "sagemaker.workflow"),),
    "training": (("fit", ".fit("), ("train", "xgb.train("), ("train", "lgb.train("), ("Trainer", "Trainer("),
                 ("train", ".train()")),
    "distributed": (("ray", "import ray"), ("ray", "ray.init("), ("dask", "dask"), ("pyspark", "pyspark"),
                    ("horovod", "horovod"), ("sagemaker", "import sagemaker"), ("sagemaker", "from sagemaker")),
    "serving": (("FastAPI", "FastAPI("), ("Flask", "Flask("), ("bentoml", "import bentoml"),
                ("bentoml", "bentoml.service"), ("deployment", "@serve.deployment"), ("seldon_core", "seldon_core"),
                ("kserve", "kserve"), ("litserve", "litserve"), ("serve", "mlflow models serve"),
                ("serve", "rung serve")),
    "monitoring": (("evidently", "evidently"), ("nannyml", "nannyml"), ("whylogs", "whylogs"),
                   ("alibi_detect", "alibi_detect"), ("arize", "arize"), ("fiddler", "fiddler"),
                   ("monitor", "rung.monitor")),
    "ops_metrics": (("prometheus_client", "prometheus_client"), ("opentelemetry", "opentelemetry"),
                    ("statsd", "statsd"), ("datadog", "datadog")),
    "alerting": (("slack", "hooks.slack.com"), ("pagerduty", "pagerduty"), ("opsgenie", "opsgenie"),
                 ("alertmanager", "alertmanager"), ("alert", "- alert:")),
    "feedback": (("ground_truth", "ground_truth"), ("ground", "ground truth"), ("feedback", "feedback")),
    "feature_store": (("feast", "feast"), ("hopsworks", "hopsworks"), ("tecton", "tecton"),
                      ("featureform", "featureform")),
    "retrain": tuple((word, "retrain") for word in ("retrain", "retraining", "retrained", "retrains", "retrain_model")),
    "progressive": (("canaryTrafficPercent", "canaryTrafficPercent"), ("traffic_split", "traffic_split"),
                    ("ProductionVariants", "ProductionVariants"), ("canary", "canary"),
                    ("shadow_traffic", "shadow_traffic")),
    "managed_data": (("read_sql", "read_sql("), ("read_sql_query", "read_sql_query("), ("create_engine", "create_engine("),
                     ("snowflake", "snowflake"), ("bigquery", "bigquery"), ("redshift", "redshift"), ("s3", "s3://"),
                     ("gs", "gs://"), ("abfs", "abfs://"), ("abfss", "abfss://"), ("boto3", "boto3"),
                     ("databricks", "databricks"), ("delta", "delta."), ("lakefs", "lakefs")),
    "schedule": (("schedule", "schedule:"), ("cron", "cron"), ("schedule_interval", "schedule_interval"),
                 ("CronSchedule", "CronSchedule"), ("ScheduleDefinition", "ScheduleDefinition")),
    "infra": (("resource", 'resource "'), ("AWSTemplateFormatVersion", "AWSTemplateFormatVersion"),
              ("kind", "kind: Deployment"), ("kind", "kind: StatefulSet"), ("kind", "kind: InferenceService")),
    "predict": (("predict", ".predict("), ("predict_proba", ".predict_proba("), ("load_model", "load_model(")),
    # CI and build files only: what a pipeline definition runs
    "tests_cmd": (("pytest", "pytest"), ("tox", "tox"), ("nox", "nox"), ("test", "make test"), ("unittest", "unittest")),
    "deploy_cmd": (("deploy", "deploy"), ("docker", "docker push"), ("kubectl", "kubectl"), ("helm", "helm"),
                   ("mlflow", "mlflow models")),
}
CONFIG_ONLY = frozenset({"tests_cmd", "deploy_cmd", "infra"})  # meaningless in Python code
# A quality gate needs the line: an assert on a metric. Only files with both words run the pattern.
_GATE_WORDS = frozenset(w.encode() for w in ("auc", "roc_auc", "accuracy", "f1", "rmse", "mae", "precision", "recall"))
_GATE = re.compile(r"\bassert\b[^\n]*\b(?:auc|roc_auc|accuracy|f1|rmse|mae|precision|recall)\b|\bmin_(?:auc|accuracy|f1)\b"
                   r"|\brung certify\b|\bfrom deepchecks\b")
_PINNED = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==\d", re.MULTILINE)  # requirements files only
_WORDS = bytes(c if chr(c).isascii() and (chr(c).isalnum() or c == 0x5F) else 0x20 for c in range(256))
_LITERALS = [(name, tuple((word.encode(), text.encode()) for word, text in pairs))
             for name, pairs in LITERAL_SIGNALS.items()]

CI_PATHS = (".github/workflows/", ".gitlab-ci.yml", "Jenkinsfile", "azure-pipelines.yml", ".circleci/",
            "bitbucket-pipelines.yml", ".travis.yml", ".buildkite/", ".drone.yml")
LOCK_NAMES = frozenset({"poetry.lock", "uv.lock", "Pipfile.lock", "conda-lock.yml", "environment.yml", "pdm.lock"})


@dataclass
class Scan:
    """What the walk found. Paths are relative to ``root``, with forward slashes."""

    root: Path
    git: bool = False
    commits: int | None = None
    files: int = 0
    bytes_read: int = 0
    elapsed_s: float = 0.0
    partial: str | None = None  # why the walk stopped early, if it did
    skipped: list[str] = field(default_factory=list)  # directories not entered
    unreadable: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)  # .py files outside tests
    tests: list[str] = field(default_factory=list)
    ci: dict[str, set[str]] = field(default_factory=dict)  # CI file -> signals in it
    hits: dict[str, list[str]] = field(default_factory=dict)  # signal -> files
    names: dict[str, list[str]] = field(default_factory=dict)  # file-name signal -> files
    rung_yaml: str | None = None
    rung_config: dict[str, Any] = field(default_factory=dict)  # the rung.yaml found in the tree, if any

    def section(self, name: str) -> dict[str, Any]:
        """One section of the tree's rung.yaml ({} when absent or not a mapping)."""
        value = self.rung_config.get(name)
        return value if isinstance(value, dict) else {}

    def has(self, *signals: str) -> bool:
        return any(self.hits.get(s) or self.names.get(s) for s in signals)

    def all(self, *signals: str) -> list[str]:
        """Every file (up to ``MAX_KEPT`` per signal) that shows one of ``signals``."""
        found: list[str] = []
        for s in signals:
            found.extend(self.hits.get(s, []) + self.names.get(s, []))
        return list(dict.fromkeys(found))

    def where(self, *signals: str) -> list[str]:
        """The first few files that show one of ``signals``: evidence for a report."""
        return self.all(*signals)[:MAX_LISTED]

    def note(self, signal: str, path: str, store: dict[str, list[str]] | None = None) -> None:
        bucket = (self.hits if store is None else store).setdefault(signal, [])
        if len(bucket) < MAX_KEPT and path not in bucket:
            bucket.append(path)


def _name_signals(rel: str, name: str, suffix: str) -> list[str]:
    """Signals a file gives by its name or place alone."""
    found = []
    if name in ("Dockerfile", "Containerfile", "docker-compose.yml", "docker-compose.yaml", "compose.yaml",
                "bentofile.yaml") or name.endswith(".dockerfile"):
        found.append("container")
    if name == "MLmodel":
        found.append("log_model")
    if name in ("dvc.yaml", "dvc.lock") or suffix == ".dvc":
        found.append("data_versioning")
    if name in ("dvc.yaml", "MLproject", "kedro.yml", "zenml.yaml") or rel.startswith("dags/") or "/dags/" in rel:
        found.append("orchestrator")
    if suffix == ".tf" or name in ("Pulumi.yaml", "Chart.yaml", "kustomization.yaml", "serverless.yml"):
        found.append("infra")
    if name in LOCK_NAMES:
        found.append("pinned")
    if name in ("rung.yaml",):
        found.append("rung_project")
    return found


def _is_test(rel: str, name: str) -> bool:
    return (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
            or rel.startswith("tests/") or "/tests/" in rel or rel.startswith("test/"))


def _is_ci(rel: str) -> bool:
    return any(rel.startswith(p) if p.endswith("/") else rel == p for p in CI_PATHS)


def _git_commits(root: Path) -> int | None:
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-list", "--count", "HEAD"], capture_output=True,
                              text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else None


def scan_repository(root: str | Path, *, budget_s: float = 8.0, max_files: int = 200_000) -> Scan:
    """Walk ``root`` once and collect the signals every file check needs.

    Raises :class:`AssessError` when ``root`` is not a directory or holds no
    code at all; a walk cut short by ``budget_s`` or ``max_files`` returns
    what it found with ``partial`` saying why.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise AssessError(f"{root} does not exist: give the path of a repository (rung assess --repo PATH)")
    if not root.is_dir():
        raise AssessError(f"{root} is a file, not a repository: give the directory that holds the code")
    root = root.resolve()
    scan = Scan(root=root, git=(root / ".git").exists())
    started = time.perf_counter()
    deadline = started + budget_s
    stack = [root]
    code_files = 0
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            scan.unreadable.append(_rel(root, directory) + "/")
            continue
        for entry in entries:
            rel = _rel(root, entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name in SKIP_DIRS or entry.name.endswith(".egg-info"):
                        scan.skipped.append(rel + "/")
                        if entry.name == ".dvc":
                            scan.note("data_versioning", rel + "/", scan.names)
                    elif not entry.is_symlink():
                        stack.append(Path(entry.path))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
            except OSError:
                scan.unreadable.append(rel)
                continue
            scan.files += 1
            name = entry.name
            suffix = os.path.splitext(name)[1].lower()
            code_files += suffix in CODE_SUFFIXES
            _classify(scan, rel, name, suffix)
            if suffix in TEXT_SUFFIXES or name in TEXT_NAMES or _is_ci(rel) or name.startswith("requirements"):
                _read_signals(scan, Path(entry.path), rel, name)
            if time.perf_counter() > deadline or scan.files >= max_files:
                limit = f"{budget_s:g} s" if scan.files < max_files else f"{max_files:,} files"
                scan.partial = f"stopped at the limit of {limit} ({scan.files:,} files read); results are partial"
                stack.clear()
                break
    if scan.git:
        scan.commits = _git_commits(root)
    if scan.rung_yaml is not None:
        scan.rung_config = _read_yaml(root / scan.rung_yaml)
    scan.elapsed_s = time.perf_counter() - started
    if code_files == 0 and scan.partial is None:
        raise AssessError(f"found no code in {root} (no .py, .ipynb, .R, .scala, .java or .sql files outside "
                          f"vendored and data directories): is it the root of an ML repository?")
    return scan


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _rel(root: Path, path: str | Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _classify(scan: Scan, rel: str, name: str, suffix: str) -> None:
    if suffix == ".ipynb":
        scan.notebooks.append(rel)
    elif suffix == ".py":
        (scan.tests if _is_test(rel, name) else scan.scripts).append(rel)
    if _is_ci(rel):
        scan.ci.setdefault(rel, set())
    if name == "rung.yaml" and scan.rung_yaml is None:
        scan.rung_yaml = rel
    for signal in _name_signals(rel, name, suffix):
        scan.note(signal, rel, scan.names)


def _read_signals(scan: Scan, path: Path, rel: str, name: str) -> None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        scan.unreadable.append(rel)
        return
    scan.bytes_read += len(head)
    words = set(head.translate(_WORDS).split())
    code = name.endswith((".py", ".ipynb"))
    found = {signal for signal, pairs in _LITERALS
             if not (code and signal in CONFIG_ONLY) and any(w in words and t in head for w, t in pairs)}
    gate_words = (b"assert" in words and not words.isdisjoint(_GATE_WORDS)) or b"certify" in words or b"deepchecks" in words
    if gate_words and _GATE.search(head.decode("utf-8", errors="replace")):
        found.add("gate")
    if name.startswith("requirements") and _PINNED.search(head.decode("utf-8", errors="replace")):
        found.add("pinned")
    for signal in found:
        scan.note(signal, rel)
    if rel in scan.ci:
        scan.ci[rel] = found
