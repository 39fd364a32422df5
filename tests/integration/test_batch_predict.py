"""``rung predict``: a registered version over CSV, Parquet and SQL inputs, against the model loaded through the API.

One trained project per module (two versions: the champion and a newer one),
scored through Typer's runner and through the real ``rung`` script where the
process itself is the point (the one-line error, ``kill -9`` mid-run).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from rung.cli import app
from rung.cli.output import one_line
from rung.errors import DataValidationError, ModelVersionNotFound, RungError
from rung.project import Project
from rung.testing import temporary_project
from tests.conftest import RUNG, one_line_error, rung_cli, wait_until

runner = CliRunner()


@pytest.fixture(scope="module")
def project_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """churn:1 (the champion) and churn:2 (fewer trees: other scores, not promoted)."""
    with temporary_project(tmp_path_factory.mktemp("batch"), rows=800) as project:
        assert project.run().run.model_version == 1
        root = project.root
    with Project.open(root, overrides={"train.params.max_iter": 15, "store.database_url": None,
                                       "tracking.uri": None, "executor.kind": "local"}) as project:
        assert project.run().run.model_version == 2
    return root


@pytest.fixture(scope="module")
def rows(project_root: Path) -> pd.DataFrame:
    """Rows to score: the training data without its target, with an id column the model does not take."""
    frame = pd.read_csv(project_root / "data" / "train.csv").drop(columns=["churned"])
    return frame.assign(customer_id=[f"c{i:05d}" for i in range(len(frame))])


def expected(project_root: Path, ref: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """What the version says through the Python API: loaded (sha256 checked) and called as the gateway calls it."""
    with Project.open(project_root) as project:
        model = project.models_loader.load(project.model_version(ref))
        return model.predict(model.frame(frame))


def invoke(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and the one error line, as ``rung.cli.main`` would print a RungError."""
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, RungError):
        return result.exception.exit_code, result.stdout, one_line(str(result.exception))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, ""


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_csv_in_parquet_out_scores_as_the_python_api(project_root: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "new.csv"
    rows.to_csv(source, index=False)
    out = tmp_path / "scored.parquet"
    code, stdout, error = invoke("predict", "churn@champion", str(source), "--out", str(out), "--batch-rows", "300",
                                 "-C", str(project_root))
    assert code == 0, error
    assert f"Scored {len(rows):,} rows with churn:1" in stdout
    scored = pd.read_parquet(out)
    assert list(scored.columns) == [*rows.columns, "prediction", "score", "model_version"]
    pd.testing.assert_frame_equal(scored[rows.columns], rows, check_dtype=False)
    want = expected(project_root, "churn:1", rows)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), want["predict"])
    np.testing.assert_allclose(scored["score"].to_numpy(), want["proba"], rtol=0, atol=1e-12)
    assert set(scored["model_version"]) == {"churn:1"}
    assert leftovers(tmp_path) == []


def test_parquet_in_csv_out_with_a_named_version_and_kept_columns(project_root: Path, rows: pd.DataFrame,
                                                                  tmp_path: Path) -> None:
    source = tmp_path / "new.parquet"
    rows.to_parquet(source, row_group_size=250)
    out = tmp_path / "scored.csv"
    code, _, error = invoke("predict", "churn:2", str(source), "--out", str(out), "--keep", "customer_id",
                            "-C", str(project_root))
    assert code == 0, error
    scored = pd.read_csv(out)
    assert list(scored.columns) == ["customer_id", "prediction", "score", "model_version"]
    assert scored["customer_id"].tolist() == rows["customer_id"].tolist()
    want = expected(project_root, "churn:2", rows)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), want["predict"])
    np.testing.assert_allclose(scored["score"].to_numpy(), want["proba"], rtol=1e-12)
    assert not np.allclose(want["proba"], expected(project_root, "churn:1", rows)["proba"])  # the versions differ
    assert set(scored["model_version"]) == {"churn:2"}


def test_a_bare_name_is_its_champion_and_an_unknown_alias_is_refused(project_root: Path, rows: pd.DataFrame,
                                                                      tmp_path: Path) -> None:
    from rung.batch import predict_file, resolve_version

    source = tmp_path / "new.parquet"
    rows.head(50).to_parquet(source)
    with Project.open(project_root) as project:
        assert resolve_version(project, "churn").version == 1
        assert resolve_version(project, "churn@champion").version == 1
        project.tracking.set_alias("churn", "shadow", 2)
        result = predict_file(project, "churn@shadow", source, tmp_path / "out.parquet")
        assert (result.name, result.version, result.rows) == ("churn", 2, 50)
        with pytest.raises(ModelVersionNotFound, match="churn has no @nope"):
            resolve_version(project, "churn@nope")
    assert set(pd.read_parquet(tmp_path / "out.parquet")["model_version"]) == {"churn:2"}


def test_a_query_on_a_database_is_scored(project_root: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    rows.to_sql("customers", engine, index=False)
    engine.dispose()
    out = tmp_path / "scored.parquet"
    query = "SELECT * FROM customers WHERE region = 'east'"
    code, _, error = invoke("predict", "churn", query, "--sql", url, "--out", str(out), "--batch-rows", "100",
                            "-C", str(project_root))
    assert code == 0, error
    east = rows[rows["region"] == "east"].reset_index(drop=True)
    scored = pd.read_parquet(out)
    assert scored["customer_id"].tolist() == east["customer_id"].tolist()
    np.testing.assert_allclose(scored["score"].to_numpy(), expected(project_root, "churn:1", east)["proba"], rtol=1e-12)
    with Project.open(project_root) as project:
        event = project.store.events(subject="churn", kinds=["batch.scored"])[-1]
    assert event.data["input"]["kind"] == "sql"
    assert event.data["input"]["sha256"] == hashlib.sha256(query.encode()).hexdigest()


def test_a_bad_value_is_one_line_naming_column_and_row_and_no_output_appears(project_root: Path, rows: pd.DataFrame,
                                                                               tmp_path: Path) -> None:
    bad = rows.astype({"tenure_months": object})
    bad.loc[613, "tenure_months"] = "twelve"
    source = tmp_path / "bad.csv"
    bad.to_csv(source, index=False)
    out = tmp_path / "scored.parquet"
    result = rung_cli("predict", "churn", str(source), "--out", str(out), "--batch-rows", "200", "-C", str(project_root))
    one_line_error(result, "column tenure_months", "row offset 613", "'twelve'")
    assert not out.exists() and leftovers(tmp_path) == []

    source = tmp_path / "bad.parquet"  # a Parquet column of text where the model takes numbers: found by the checks
    bad.astype({"tenure_months": str}).to_parquet(source, row_group_size=100)
    with Project.open(project_root) as project:
        from rung.batch import predict_file

        with pytest.raises(DataValidationError, match=r"at row offset 613: column tenure_months: expected a number"):
            predict_file(project, "churn", source, out)
        with pytest.raises(DataValidationError, match="missing input column.*age"):
            predict_file(project, "churn", _write(rows.drop(columns=["age"]), tmp_path / "no-age.parquet"), out)
    assert not out.exists() and leftovers(tmp_path) == []


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path)
    return path


def test_a_run_killed_mid_way_leaves_nothing_under_the_final_name(project_root: Path, rows: pd.DataFrame,
                                                                   tmp_path: Path) -> None:
    source = tmp_path / "large.parquet"
    # 120,000 rows in batches of 50: long enough to be caught mid-way on a fast machine.
    pd.concat([rows] * 150, ignore_index=True).to_parquet(source, row_group_size=4000)
    outs = {how: tmp_path / f"scored-{how.name}.parquet" for how in (signal.SIGKILL, signal.SIGTERM)}
    processes = {how: subprocess.Popen([RUNG, "predict", "churn", str(source), "--out", str(out), "--batch-rows", "50",
                                        "-C", str(project_root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for how, out in outs.items()}

    def parts(out: Path) -> list[Path]:
        return list(tmp_path.glob(f".{out.name}.*.part"))

    try:
        for how, process in processes.items():
            # A part file past its first batches: the run is writing.
            wait_until(lambda out=outs[how]: any(p.stat().st_size > 50_000 for p in parts(out)),
                       timeout=60, message="the run to write its first batches")
            os.kill(process.pid, how)
        for process in processes.values():
            process.wait(timeout=30)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for how, process in processes.items():
        assert process.returncode != 0, how
        assert not outs[how].exists(), how
    assert not parts(outs[signal.SIGTERM])  # stopped as by Ctrl-C: its temporary file is removed too
    assert processes[signal.SIGTERM].returncode == 130  # handled as an interrupt, not killed


def test_each_run_is_recorded_with_its_lineage_and_shown_in_history(project_root: Path, rows: pd.DataFrame,
                                                                   tmp_path: Path) -> None:
    source = tmp_path / "new.parquet"
    rows.to_parquet(source)
    out = tmp_path / "scored.parquet"
    code, stdout, error = invoke("predict", "churn", str(source), "--out", str(out), "--json", "--batch-rows", "100",
                                 "-C", str(project_root))
    assert code == 0, error
    printed: dict[str, Any] = json.loads(stdout)
    assert pq.ParquetFile(out).metadata.num_row_groups == len(rows) // 100  # streamed: written a batch at a time
    with Project.open(project_root) as project:
        event = project.store.events(subject="churn", kinds=["batch.scored"])[-1]
    data = event.data
    assert data["version"] == 1 and data["rows"] == len(rows) and data["seconds"] > 0
    assert data["input"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert data["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() == printed["output"]["sha256"]
    code, stdout, error = invoke("history", "churn", "-C", str(project_root))
    assert code == 0, error
    assert f"batch v1: {len(rows):,} rows" in stdout and "scored.parquet" in stdout
    code, stdout, _ = invoke("history", "churn", "--json", "-C", str(project_root))
    assert any(e["kind"] == "batch.scored" and e["data"]["output"]["sha256"] == data["output"]["sha256"]
               for e in json.loads(stdout))


def test_ray_scores_row_groups_as_tasks_into_one_file(project_root: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from rung.batch import predict_file

    source = tmp_path / "new.parquet"
    rows.to_parquet(source, row_group_size=200)
    out = tmp_path / "scored.parquet"
    started = time.monotonic()
    with Project.open(project_root) as project:
        result = predict_file(project, "churn", source, out, executor="ray")
    assert result.executor == "ray" and result.rows == len(rows), time.monotonic() - started
    scored = pd.read_parquet(out)
    assert scored["customer_id"].tolist() == rows["customer_id"].tolist()  # parts concatenated in order
    np.testing.assert_allclose(scored["score"].to_numpy(), expected(project_root, "churn:1", rows)["proba"], rtol=1e-12)
    assert leftovers(tmp_path) == [] and [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
