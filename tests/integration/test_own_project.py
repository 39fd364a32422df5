"""A team's own repository through the whole loop: its CSV, its training function, its feature preparation.

Two shapes that rung's template does not have: a scikit-learn pipeline fitted
by ``fit(frame, target)`` with an id column and a column the model must not
take; and LightGBM fitted on ``category`` columns made by a ``prepare``
function, which evaluation, certification, serving and retraining must all
apply (without it, LightGBM refuses the raw text columns).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pandas as pd
import pytest

from rung.templates.datasets import churn
from tests.conftest import one_line_error, rung_cli
from tests.loop_walk import fast_loop, walk_the_loop

SKLEARN_FIT = '''\
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def fit(frame, target, params=None):
    X, y = frame.drop(columns=[target]), frame[target]
    text = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    numbers = [c for c in X.columns if c not in text]
    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), text), (make_pipeline(SimpleImputer(), StandardScaler()), numbers))
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(X, y)
'''

LIGHTGBM_FIT = '''\
import lightgbm as lgb
import pandas as pd

CATEGORIES = {"contract": ["month-to-month", "one-year", "two-year"], "region": ["north", "south", "east", "west"],
              "paperless_billing": ["yes", "no"]}


def prepare(frame):
    out = frame.copy()
    for name, values in CATEGORIES.items():
        out[name] = pd.Categorical(out[name], categories=values)
    out["charge_per_tenure"] = out["monthly_charges"] / (out["tenure_months"] + 1)
    return out


def fit(X, y, params=None):
    return lgb.LGBMClassifier(n_estimators=40, verbose=-1, **(params or {})).fit(X, y)
'''


def _repository(root: Path, code: str, rows: int = 1500) -> pd.DataFrame:
    (root / "src").mkdir(parents=True)
    (root / "src" / "__init__.py").write_text("")
    (root / "src" / "model.py").write_text(code)
    (root / "data").mkdir()
    frame = churn(rows)
    frame.insert(0, "customer_id", [f"C{i:05d}" for i in range(len(frame))])
    frame["year"] = 2025
    frame.to_csv(root / "data" / "train.csv", index=False)
    return frame


def _new_data(root: Path) -> None:
    """A new batch of the team's data, as a retraining would find it."""
    frame = churn(1500, seed=8)
    frame.insert(0, "customer_id", [f"D{i:05d}" for i in range(len(frame))])
    frame["year"] = 2025
    frame.to_csv(root / "data" / "train.csv", index=False)


def _request_rows(frame: pd.DataFrame, drop: list[str]) -> list[dict[str, object]]:
    rows = frame.drop(columns=["churned", *drop]).head(20)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict(orient="records")]


def test_a_scikit_learn_fit_of_a_whole_frame_is_registered_on_its_inputs_and_served_raw_rows(tmp_path: Path) -> None:
    """The frame shape of training function; ids and constant columns are never inputs, and clients need not send them.

    (The whole loop is walked by the LightGBM test below: the same machinery after `rung run`.)
    """
    root = tmp_path / "repo"
    frame = _repository(root, SKLEARN_FIT)
    made = rung_cli("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/model.py:fit", "--no-git", cwd=root)
    assert made.returncode == 0, made.stderr
    assert "row ids, never inputs: customer_id" in made.stdout and "task: classification" in made.stdout
    pipeline = (root / "rung_pipeline.py").read_text()
    assert "fit(frame, target=TARGET, params=params)" in pipeline
    assert "constant, dropped: year" in made.stdout and "drop: [year]" in (root / "rung.yaml").read_text()
    ran = rung_cli("run", cwd=root)
    assert ran.returncode == 0, ran.stderr
    mlmodel = next((root / ".rung").rglob("MLmodel")).read_text()
    assert "customer_id" not in mlmodel and "- year" not in mlmodel  # the signature holds the model's inputs only
    certified = rung_cli("certify", "repo:1", "--json", cwd=root)
    assert certified.returncode == 0, certified.stderr

    from rung.project import Project
    from rung.serving.app import create_app

    with Project.open(root) as project:
        app = create_app(project)
        transport = httpx.ASGITransport(app=app)

        async def call() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                row = _request_rows(frame, drop=[])[0]  # with the id and the dropped column: both ignored
                good = await client.post("/invocations", json={"dataframe_records": [row]})
                bare = await client.post("/invocations", json={"dataframe_records": [{k: v for k, v in row.items()
                                                                                       if k not in ("customer_id", "year")}]})
                row.pop("region")
                bad = await client.post("/invocations", json={"dataframe_records": [row]})
                return good, bare, bad

        import asyncio

        good, bare, bad = asyncio.run(call())
    assert good.status_code == 200, good.text
    assert bare.status_code == 200 and bare.json()["predictions"] == good.json()["predictions"], bare.text
    assert bad.status_code == 422 and bad.json()["field"] == "region", bad.text


@pytest.mark.timeout(600)
def test_lightgbm_on_categories_made_by_prepare_goes_round_the_loop(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    frame = _repository(root, LIGHTGBM_FIT)
    made = rung_cli("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/model.py:fit", "--no-git", cwd=root)
    assert made.returncode == 0, made.stderr
    assert "prepare hook: src/model.py:prepare" in made.stdout
    assert "  prepare: src/model.py:prepare" in (root / "rung.yaml").read_text()
    fast_loop(root)
    ran = rung_cli("run", "--json", cwd=root)
    assert ran.returncode == 0, ran.stderr

    # The prepare hook travels with the model: change the repository's copy and the registered version still works.
    (root / "src" / "model.py").write_text(LIGHTGBM_FIT.replace("def prepare(frame):", "def prepare(frame):\n    raise RuntimeError('edited')"))
    rows = _request_rows(frame, drop=["customer_id", "year"])  # neither is an input: a client need not send them
    walk = walk_the_loop(root, "repo", rows, make_second=lambda: _second_version(root), new_data=lambda: _new_data(root))
    assert walk.versions_served >= {1, 2}
    assert walk.rollout["state"] == "promoted"
    scores = [a["predictions"][0] for a in walk.answers if "predictions" in a]
    assert scores and set(scores) <= {0, 1}
    assert walk.windows
    assert walk.retrained["version"] == 3 and walk.retrained["status"] != "failed"


def _second_version(root: Path) -> None:
    (root / "src" / "model.py").write_text(LIGHTGBM_FIT)
    ran = rung_cli("run", "--no-cache", cwd=root)
    assert ran.returncode == 0, ran.stderr


def test_missing_inputs_are_named_and_a_new_data_column_is_only_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    frame = _repository(root, SKLEARN_FIT, rows=600)
    assert rung_cli("init", "--data", "data/train.csv", "--target", "churned", "--no-git", cwd=root).returncode == 0
    assert "build_model" in (root / "rung_pipeline.py").read_text()  # no --train: rung's default model
    first = rung_cli("run", cwd=root)
    assert first.returncode == 0, first.stderr
    frame.assign(discount=0.1).to_csv(root / "data" / "train.csv", index=False)
    second = rung_cli("run", cwd=root)
    assert second.returncode == 0, second.stderr
    assert "new columns" in second.stdout and "discount" in second.stdout
    mlmodels = sorted((root / ".rung").rglob("MLmodel"), key=lambda p: p.stat().st_mtime)
    assert "discount" not in mlmodels[-1].read_text()  # never silently an input

    from rung.models.loaded import LoadedModel  # noqa: F401  (the API the gateway uses)
    from rung.project import Project

    with Project.open(root) as project:
        model = project.models_loader.load(project.model_version("repo:2"))
        row = frame.drop(columns=["churned"]).head(1)
        assert len(model.predict(model.frame(row.assign(unused="x")))["predict"]) == 1
        with pytest.raises(Exception, match="tenure_months"):
            model.frame(row.drop(columns=["tenure_months"]))


def test_bad_arguments_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _repository(root, SKLEARN_FIT, rows=300)
    one_line_error(rung_cli("init", "--data", "data/nope.csv", "--target", "churned", cwd=root), "nope.csv")
    one_line_error(rung_cli("init", "--data", "data/train.csv", "--target", "churned", "--task", "ranking", cwd=root), "--task")
    one_line_error(rung_cli("init", "--data", "data/train.csv", "--target", "churned", "--prepare", "src/model.py:prep", cwd=root),
                   "no function 'prep'", "fit")
    (root / "src" / "empty.py").write_text(textwrap.dedent("def fit():\n    return None\n"))
    one_line_error(rung_cli("init", "--data", "data/train.csv", "--target", "churned", "--train", "src/empty.py:fit", cwd=root),
                   "takes no data")
    assert not (root / "rung.yaml").exists() and not (root / "rung_pipeline.py").exists()
