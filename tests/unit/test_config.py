"""rung.config.load_settings: defaults, one-line errors naming the key, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from rung.config import SqlSource, load_settings
from rung.errors import ConfigError, RungError

ENV_VARS = ("RUNG_DATABASE_URL", "RUNG_TRACKING_URI", "RUNG_EXECUTOR", "RUNG_RAY_ADDRESS")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def write(root: Path, text: str) -> Path:
    (root / "rung.yaml").write_text(text, encoding="utf-8")
    return root


def config_error(root: Path, text: str) -> str:
    write(root, text)
    with pytest.raises(ConfigError) as info:
        load_settings(root)
    message = str(info.value)
    assert "\n" not in message, f"ConfigError must be one line, got {message!r}"
    return message


# -- defaults ---------------------------------------------------------------------------------


def test_minimal_file_gives_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "name: x\n"))
    assert settings.name == "x"
    assert settings.task == "classification"
    assert settings.pipeline == "pipeline.py:pipeline"
    assert settings.data.source == "data/train.csv"
    assert settings.data.target == "target"
    assert settings.data.schema_file == "schema.yaml"
    assert settings.validation.min_rows == 100
    assert settings.validation.max_missing_rate == 0.05
    assert settings.validation.max_duplicate_rate == 0.01
    assert settings.validation.missing_rate == {}
    assert settings.validation.sample_rows == 5
    assert settings.split.test_size == 0.2
    assert settings.split.seed == 42
    assert settings.split.stratify is True
    assert settings.train == {}
    assert settings.params == {}
    assert settings.evaluate.slices == []
    assert settings.evaluate.primary_metric is None
    assert settings.evaluate.max_slice_values == 20
    assert settings.executor.kind == "local"
    assert settings.executor.workers == 2
    assert settings.executor.address is None
    assert settings.store.database_url is None
    assert settings.tracking.uri is None
    assert settings.tracking.experiment is None
    assert settings.registry.model_name is None
    assert settings.model_name == "x"
    assert settings.deploy.strategy == "canary"


def test_values_from_file_override_defaults(tmp_path: Path) -> None:
    text = """
name: churn
task: regression
data:
  target: price
  schema: my_schema.yaml
validation:
  min_rows: 7
  missing_rate: {income: 0.5}
train:
  params: {C: 0.5, max_iter: 10}
registry: {model_name: churn-model}
deploy: {strategy: shadow}
"""
    settings = load_settings(write(tmp_path, text))
    assert settings.task == "regression"
    assert settings.data.target == "price"
    assert settings.data.schema_file == "my_schema.yaml"
    assert settings.validation.min_rows == 7
    assert settings.validation.missing_rate == {"income": 0.5}
    assert settings.params == {"C": 0.5, "max_iter": 10}
    assert settings.model_name == "churn-model"
    assert settings.deploy.strategy == "shadow"


def test_empty_file_reports_missing_name(tmp_path: Path) -> None:
    message = config_error(tmp_path, "")
    assert "name" in message and "missing" in message


# -- invalid values ---------------------------------------------------------------------------


def test_invalid_deploy_strategy_names_the_key_and_choices(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\ndeploy: {strategy: canery}\n")
    assert message == "rung.yaml: deploy.strategy: 'canery' is not one of direct, canary, ab, shadow"


def test_keys_starting_with_str_are_named_whole(tmp_path: Path) -> None:
    # regression: the location was once cleaned with .replace(".str", ""), giving "splitatify"
    message = config_error(tmp_path, "name: x\nsplit: {stratify: maybe}\n")
    assert message.startswith("rung.yaml: split.stratify: ")


def test_invalid_task_names_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\ntask: clustering\n")
    assert "task: 'clustering' is not one of classification, regression" in message


def test_invalid_executor_kind_names_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\nexecutor: {kind: k8s}\n")
    assert "executor.kind" in message
    assert "'k8s' is not one of local, ray" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: x\nvalidation: {min_rows: -1}\n", "validation.min_rows"),
        ("name: x\nvalidation: {max_missing_rate: 1.5}\n", "validation.max_missing_rate"),
        ("name: x\nsplit: {test_size: 1.0}\n", "split.test_size"),
        ("name: x\nexecutor: {workers: 0}\n", "executor.workers"),
        ("name: 'has space'\n", "name"),
    ],
)
def test_out_of_range_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)
    assert message.startswith(f"rung.yaml: {key}: ")


def test_several_problems_are_still_one_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\nexecutor: {kind: k8s, workers: 0}\n")
    assert "executor.kind" in message
    assert "executor.workers" in message
    assert "1 more" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: x\nfoo: 1\n", "foo"),
        ("name: x\ndata: {sourc: a.csv}\n", "data.sourc"),
        ("name: x\nexecutor: {kind: local, threads: 4}\n", "executor.threads"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)
    assert f"{key}: unknown key" in message


def test_missing_name(tmp_path: Path) -> None:
    message = config_error(tmp_path, "task: regression\n")
    assert "rung.yaml: name: required key is missing" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\ntask: classification\n  bad: indent\n")
    assert "line 3" in message
    assert "fix the YAML syntax" in message


def test_yaml_syntax_error_unclosed_flow(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\ndeploy: {strategy: canary\nsplit: {seed: 1}\n")
    assert "line " in message
    assert "YAML" in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_non_mapping_file(tmp_path: Path, text: str, kind: str) -> None:
    message = config_error(tmp_path, text)
    assert "expected a mapping" in message
    assert kind in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    message = str(info.value)
    assert "not found" in message
    assert str(tmp_path / "rung.yaml") in message
    assert "rung init" in message


def test_config_error_is_a_rung_error() -> None:
    assert issubclass(ConfigError, RungError)


# -- environment and overrides ----------------------------------------------------------------------


def test_env_database_url_and_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\nstore: {database_url: 'sqlite:///file.db'}\ntracking: {uri: 'file:./mlruns'}\n")
    monkeypatch.setenv("RUNG_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("RUNG_TRACKING_URI", "http://mlflow:5000")
    settings = load_settings(tmp_path)
    assert settings.store.database_url == "postgresql://u@h/db"
    assert settings.tracking.uri == "http://mlflow:5000"


def test_empty_env_values_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\nstore: {database_url: 'sqlite:///file.db'}\n")
    monkeypatch.setenv("RUNG_DATABASE_URL", "")
    assert load_settings(tmp_path).store.database_url == "sqlite:///file.db"


def test_env_executor_keeps_other_executor_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\nexecutor: {kind: local, workers: 3}\n")
    monkeypatch.setenv("RUNG_EXECUTOR", "ray")
    settings = load_settings(tmp_path)
    assert settings.executor.kind == "ray"
    assert settings.executor.workers == 3


def test_env_executor_over_shorthand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\nexecutor: ray\n")
    monkeypatch.setenv("RUNG_EXECUTOR", "local")
    monkeypatch.setenv("RUNG_RAY_ADDRESS", "ray://head:10001")
    settings = load_settings(tmp_path)
    assert settings.executor.kind == "local"
    assert settings.executor.address == "ray://head:10001"


def test_env_executor_invalid_value_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\n")
    monkeypatch.setenv("RUNG_EXECUTOR", "k8s")
    with pytest.raises(ConfigError, match=r"executor\.kind: 'k8s' is not one of local, ray"):
        load_settings(tmp_path)


def test_overrides_beat_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\n")
    monkeypatch.setenv("RUNG_DATABASE_URL", "sqlite:///from-env.db")
    settings = load_settings(tmp_path, {"store.database_url": "sqlite:///from-flag.db", "executor.workers": 4})
    assert settings.store.database_url == "sqlite:///from-flag.db"
    assert settings.executor.workers == 4


def test_invalid_override_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match=r"unknown key"):
        load_settings(tmp_path, {"executor.bogus": 1})


def test_load_settings_does_not_mutate_between_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: x\nexecutor: {workers: 3}\n")
    monkeypatch.setenv("RUNG_EXECUTOR", "ray")
    assert load_settings(tmp_path).executor.kind == "ray"
    monkeypatch.delenv("RUNG_EXECUTOR")
    assert load_settings(tmp_path).executor.kind == "local"


# -- shorthands and alternative forms ----------------------------------------------------------------


def test_executor_shorthand(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "name: x\nexecutor: ray\n"))
    assert settings.executor.kind == "ray"
    assert settings.executor.workers == 2


def test_executor_shorthand_invalid(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\nexecutor: slurm\n")
    assert "executor.kind" in message and "'slurm'" in message


def test_data_source_as_path(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "name: x\ndata: {source: data/batch.parquet}\n"))
    assert settings.data.source == "data/batch.parquet"


def test_data_source_as_sql(tmp_path: Path) -> None:
    text = "name: x\ndata:\n  source:\n    url: 'sqlite:///warehouse.db'\n    query: SELECT * FROM customers\n"
    settings = load_settings(write(tmp_path, text))
    assert isinstance(settings.data.source, SqlSource)
    assert settings.data.source.url == "sqlite:///warehouse.db"
    assert settings.data.source.query == "SELECT * FROM customers"


def test_data_source_sql_without_query_names_the_missing_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "name: x\ndata: {source: {url: 'sqlite:///w.db'}}\n")
    assert "data.source.query" in message
    assert "required key is missing" in message


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "name: x\n"))
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error, whatever its class
        settings.name = "y"  # type: ignore[misc]


# -- what invalidates the pipeline cache ------------------------------------------------------


def test_pipeline_fingerprint_ignores_where_things_run_but_not_what_they_compute(tmp_path: Path) -> None:
    base = load_settings(write(tmp_path, "name: x\ntrain: {params: {C: 1.0}}\n")).pipeline_fingerprint()
    elsewhere = load_settings(
        write(tmp_path, "name: x\ntrain: {params: {C: 1.0}}\nexecutor: ray\ndeploy: {strategy: canary}\n"
              "store: {database_url: 'postgresql://db/x'}\n")
    ).pipeline_fingerprint()
    assert elsewhere == base
    changed = load_settings(write(tmp_path, "name: x\ntrain: {params: {C: 2.0}}\n")).pipeline_fingerprint()
    assert changed != base


def test_canary_steps_are_checked_and_end_at_100() -> None:
    from rung.config import CanarySettings

    assert CanarySettings(steps=[5, 50]).steps == [5.0, 50.0, 100.0]
    for bad in ([100], [50, 25], [], [0, 50], [5, 5, 100]):
        with pytest.raises(ValueError, match="increasing percentages"):
            CanarySettings(steps=bad)


def test_loading_settings_imports_no_component() -> None:
    """Settings are a leaf: importing them pulls in nothing above the foundation (no monitoring, no scheduler)."""
    import subprocess
    import sys

    code = "import sys, rung.config; print(' '.join(sorted(m for m in sys.modules if m.startswith('rung'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    allowed = {"rung", "rung.errors", "rung.clock", "rung.version"}
    assert "rung.config" in loaded
    assert [m for m in loaded if m not in allowed and not m.startswith("rung.config")] == []


def test_every_section_is_importable_from_rung_config() -> None:
    import rung.config

    for name in rung.config.__all__:
        assert getattr(rung.config, name) is not None
    assert rung.config.Settings.model_fields["alerts"].annotation is rung.config.AlertSettings
    assert rung.config.MonitorSettings.model_fields["drift"].annotation is rung.config.DriftSettings


@pytest.mark.parametrize(("given", "count"), [("1", 1), ("3", 3), ("auto", None)])
def test_serve_processes_is_a_count_or_auto_one_per_core(tmp_path: Path, given: str, count: int | None) -> None:
    import os

    settings = load_settings(write(tmp_path, f"name: x\nserve: {{processes: {given}}}\n")).serve
    cores = len(os.sched_getaffinity(0))
    assert settings.process_count() == (count if count is not None else min(cores, 8))


@pytest.mark.parametrize("given", ["0", "65", "many", "-1"])
def test_a_bad_serve_processes_names_the_key(tmp_path: Path, given: str) -> None:
    assert config_error(tmp_path, f"name: x\nserve: {{processes: {given}}}\n").startswith("rung.yaml: serve.processes")
