"""``rung drift REFERENCE CURRENT`` through Typer's runner, on CSV and Parquet files written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from rung.cli.drift import register
from rung.cli.output import one_line
from rung.errors import DriftError, RungError

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough that table cells are not wrapped mid-word."""
    from rung.cli import drift

    monkeypatch.setattr(drift.console, "width", 200)


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Keep ``drift`` a subcommand, as in the real app."""

    register(app)
    return app


def _invoke(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and the error line, as ``rung.cli.main`` prints a RungError."""
    result = runner.invoke(_app(), ["drift", *args])
    error = ""
    if isinstance(result.exception, RungError):
        error = one_line(str(result.exception))
        return result.exception.exit_code, result.stdout, error
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, error


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    n = 3000
    root = tmp_path_factory.mktemp("drift")

    def frame(shift: float, new_city: bool) -> pd.DataFrame:
        city = rng.choice(["oslo", "lima", "pune"], n, p=[0.5, 0.3, 0.2]).astype(object)
        if new_city:
            city[rng.random(n) < 0.25] = "kyiv"
        return pd.DataFrame({
            "age": rng.normal(40 + shift * 10, 10, n).round(1),
            "income": rng.lognormal(10, 0.5, n),
            "city": city,
            "clicks": rng.poisson(3, n),
        })

    reference, current = frame(0.0, False), frame(0.6, True)
    paths = {
        "ref_csv": root / "reference.csv",
        "cur_csv": root / "current.csv",
        "ref_parquet": root / "reference.parquet",
        "cur_parquet": root / "current.parquet",
        "other": root / "other.csv",
        "bad_format": root / "data.xlsx",
        "garbage": root / "garbage.parquet",
    }
    reference.to_csv(paths["ref_csv"], index=False)
    current.to_csv(paths["cur_csv"], index=False)
    reference.to_parquet(paths["ref_parquet"])
    current.to_parquet(paths["cur_parquet"])
    pd.DataFrame({"something": [1, 2, 3]}).to_csv(paths["other"], index=False)
    paths["bad_format"].write_text("not a spreadsheet")
    paths["garbage"].write_bytes(b"this is not parquet")
    return paths


def test_table_and_verdict(files: dict[str, Path]) -> None:
    code, out, _ = _invoke(str(files["ref_csv"]), str(files["cur_csv"]), "--no-multivariate")
    assert code == 0
    for header in ("feature", "kind", "method", "value", "threshold", "drift", "missing %", "notes"):
        assert header in out
    rows = {line.split("│")[0].strip(): line for line in out.splitlines() if "│" in line}
    assert "drift" in rows["age"] and "wasserstein" in rows["age"]
    assert "1 unseen category" in rows["city"]
    assert "│ no " in rows["income"] and "drift" not in rows["income"]
    assert "\ndataset drift: 2 of 4 features drifted (50%" in out


def test_json_has_the_drifted_features(files: dict[str, Path]) -> None:
    code, out, _ = _invoke(str(files["ref_parquet"]), str(files["cur_parquet"]), "--json", "--no-multivariate")
    assert code == 0
    data = json.loads(out)
    assert set(data["drifted_features"]) == {"age", "city"}
    assert data["dataset_drifted"] is True
    city = next(f for f in data["features"] if f["name"] == "city")
    assert city["unseen"] == ["kyiv"] and city["kind"] == "categorical"
    assert data["multivariate"] is None


def test_csv_and_parquet_agree(files: dict[str, Path]) -> None:
    _, from_csv, _ = _invoke(str(files["ref_csv"]), str(files["cur_csv"]), "--json", "--no-multivariate")
    _, from_parquet, _ = _invoke(str(files["ref_parquet"]), str(files["cur_parquet"]), "--json", "--no-multivariate")
    statistic = lambda text: {f["name"]: f["statistic"] for f in json.loads(text)["features"]}  # noqa: E731
    assert statistic(from_csv) == pytest.approx(statistic(from_parquet), rel=1e-9)


def test_options_method_threshold_feature_categorical(files: dict[str, Path]) -> None:
    code, out, _ = _invoke(
        str(files["ref_parquet"]), str(files["cur_parquet"]), "--json", "--no-multivariate",
        "--method", "psi", "--threshold", "5", "-f", "age", "--feature", "clicks", "--categorical", "clicks",
    )
    assert code == 0
    data = json.loads(out)
    assert [f["name"] for f in data["features"]] == ["age", "clicks"]
    assert {f["method"] for f in data["features"]} == {"psi"}
    assert {f["threshold"] for f in data["features"]} == {5.0}
    assert data["drifted_features"] == []
    assert next(f for f in data["features"] if f["name"] == "clicks")["kind"] == "categorical"


def test_multivariate_and_html(files: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "drift.html"
    code, out, _ = _invoke(str(files["ref_parquet"]), str(files["cur_parquet"]), "--html", str(page))
    assert code == 0
    assert "domain classifier AUC" in out
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    assert "<script" not in html and "cdn" not in html.lower()


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "file not found"),
        ("bad_format", "unknown format"),
        ("garbage", "cannot be read as parquet"),
        ("other", "no column in common"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(files: dict[str, Path], which: str, message: str) -> None:
    current = files["cur_csv"].with_name("nope.csv") if which == "missing" else files[which]
    code, _, error = _invoke(str(files["ref_csv"]), str(current))
    assert code != 0
    assert message in error
    assert "\n" not in error and error


def test_unknown_method_and_feature(files: dict[str, Path]) -> None:
    code, _, error = _invoke(str(files["ref_csv"]), str(files["cur_csv"]), "--method", "magic")
    assert code != 0 and "unknown method" in error
    code, _, error = _invoke(str(files["ref_parquet"]), str(files["cur_parquet"]), "-f", "height")
    assert code != 0 and "no column named height" in error


def test_the_error_class_is_a_rung_error() -> None:
    assert issubclass(DriftError, RungError) and DriftError.exit_code == 1


def test_a_stored_parquet_index_is_not_a_feature(tmp_path: Path) -> None:
    from rung.cli.drift import read_frame

    path = tmp_path / "indexed.parquet"
    pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=[7, 8, 9]).to_parquet(path)
    assert list(read_frame(path).columns) == ["a"]
    assert list(read_frame(path, ["a"]).columns) == ["a"]


def test_the_real_command_prints_one_line_and_exits_1(files: dict[str, Path]) -> None:
    from rung.cli import app
    from tests.conftest import rung_cli

    if "drift" not in {c.name for c in app.registered_commands}:
        pytest.skip("rung drift is not registered in this checkout")
    bad = rung_cli("drift", str(files["ref_csv"]), str(files["cur_csv"].with_name("nope.csv")))
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error:") and "file not found" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    good = rung_cli("drift", str(files["ref_parquet"]), str(files["cur_parquet"]), "--json", "--no-multivariate")
    assert good.returncode == 0, good.stderr
    assert set(json.loads(good.stdout)["drifted_features"]) == {"age", "city"}
