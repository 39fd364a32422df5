"""``/invocations`` reads CSV as ``mlflow models serve`` does, and every route leaves out columns the model does not take.

The gateway's app runs in this process (``httpx.ASGITransport``, see
tests/integration/test_gateway_inprocess.py) on a project trained by
``rung run``: a CSV body gets the JSON body's answer, bad CSV is a 4xx
saying what is wrong, and a request's extra columns reach the request log
but neither the model nor monitoring.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from rung.clock import SYSTEM
from rung.models.loader import training_inputs
from rung.monitor.logreader import RequestLogReader
from rung.monitor.requestlog import log_root
from rung.monitor.windows import Monitor
from rung.project import Project
from rung.serving.app import create_app
from rung.serving.gateway import LOGGED_EXTRAS
from tests.conftest import rung_cli
from tests.integration.test_gateway import ROW, oip
from tests.integration.test_gateway_inprocess import InProcess, refused

CSV = {"content-type": "text/csv"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Iterator[Project]:
    """churn:1, a small model served in threads (compiled route on), drift computed from 50 answered rows."""
    root = tmp_path_factory.mktemp("csv") / "churn"
    shutil.copytree(template_project, root)
    config = root / "rung.yaml"
    config.write_text(config.read_text().replace("max_iter: 200", "max_iter: 20")
                      + "\nserve:\n  max_body_mb: 0.05\n  refresh_s: 0.05\n  isolation: thread\n"
                      + "monitor:\n  min_rows: 50\n")
    run = rung_cli("run", "--json", cwd=root, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    project = Project.open(root)
    yield project
    project.close()


@pytest.fixture(scope="module")
def served(project: Project) -> Iterator[InProcess]:
    running = InProcess(create_app(project))
    yield running
    running.close()


@pytest.fixture(scope="module")
def records(project: Project) -> list[dict[str, Any]]:
    """60 training rows as JSON records (None where a value is missing), one with a missing charge."""
    record = project.store.get_model_version("churn", 1)
    rows = training_inputs(record, project.artifacts, project.settings.data.target).sample(60, random_state=3)
    out = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows[list(ROW)].to_dict("records")]
    out[0]["monthly_charges"] = None
    return out


def answer(response: httpx.Response) -> dict[str, Any]:
    """The body without its request id (each request has its own)."""
    assert response.status_code == 200, response.text
    body = response.json()
    del body["rung"]["request_id"]
    return body


def test_csv_gets_the_json_answer(served: InProcess, records: list[dict[str, Any]]) -> None:
    assert served.get("/v2/models/churn").json()["parameters"]["compiled"] is True
    frame = pd.DataFrame(records)
    expected = answer(served.post("/invocations", json={"dataframe_records": records}))
    assert len(expected["predictions"]) == 60 and len(expected["probabilities"]) == 60
    # as pandas writes it: the index as a first column with an empty name, a missing value as an empty cell
    with_index = frame.to_csv().encode()
    assert with_index.startswith(b",tenure_months,") and b",," in with_index
    for body, content_type in ((with_index, "text/csv"), (frame.to_csv(index=False).encode(), "text/csv; charset=utf-8"),
                               (b"\xef\xbb\xbf" + frame.to_csv(index=False, lineterminator="\r\n").encode(), "text/csv")):
        for path in ("/invocations", "/models/churn/invocations"):
            got = served.post(path, content=body, headers={"content-type": content_type})
            assert answer(got) == expected
            assert got.headers["x-rung-model-version"] == "1" and got.headers["content-type"] == "application/json"
    one = pd.DataFrame([ROW]).to_csv(index=False).encode()
    assert answer(served.post("/invocations", content=one, headers=CSV)) == answer(
        served.post("/invocations", json={"dataframe_records": [ROW]}))


def test_extra_columns_are_left_out_of_the_model(served: InProcess, records: list[dict[str, Any]]) -> None:
    """Ids and notes next to the inputs change nothing (compiled route and batcher see the model's columns only)."""
    plain = answer(served.post("/invocations", json={"dataframe_records": records}))
    extras = [{"customer_id": f"c-{i}", **r, "note": {"free": "form"}} for i, r in enumerate(records)]
    assert answer(served.post("/invocations", json={"dataframe_records": extras})) == plain
    split = {"columns": ["id", *ROW], "data": [[7, *ROW.values()]]}
    single = answer(served.post("/invocations", json={"dataframe_records": [ROW]}))
    assert answer(served.post("/invocations", json={"dataframe_split": split})) == single
    with_csv = pd.DataFrame(extras).drop(columns="note").to_csv(index=False).encode()
    assert answer(served.post("/invocations", content=with_csv, headers=CSV)) == plain
    tensor = {"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": ["c-1"]}
    inferred = served.post("/v2/models/churn/infer", json={"inputs": [tensor, *oip([ROW])["inputs"]]})
    assert inferred.status_code == 200, inferred.text
    assert [o["data"] for o in inferred.json()["outputs"] if o["name"] == "proba"] == [single["probabilities"]]
    # what the model takes is still required, and named
    refused(served.post("/invocations", json={"dataframe_records": [{k: v for k, v in ROW.items() if k != "age"} | {"x": 1}]}),
            422, "age", "missing input column 'age'", "the model takes tenure_months")
    refused(served.post("/invocations", content=b"tenure_months,x\n1,2\n", headers=CSV), 422, "monthly_charges",
            "missing input column 'monthly_charges'")
    refused(served.post("/v2/models/churn/infer", json={"inputs": [{**tensor, "shape": [2], "data": ["a", "b"]},
                                                                    *oip([ROW])["inputs"]]}), 422, "inputs[1].shape", "rows")


def test_extra_columns_reach_the_request_log_but_not_drift(served: InProcess, project: Project,
                                                         records: list[dict[str, Any]]) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    tagged = [r | {"customer_id": f"log-{i}"} for i, r in enumerate(records)]
    answered = served.post("/invocations", content=pd.DataFrame(tagged).to_csv(index=False).encode(), headers=CSV)
    rid = answered.json()["rung"]["request_id"]
    for i in range(LOGGED_EXTRAS + 4):  # ever new names: the log keeps a bounded number of them
        served.post("/invocations", json={"dataframe_records": [ROW | {f"junk_{i}": i}]})
    served.gateway.requests.flush()
    until = datetime.now(UTC) + timedelta(seconds=1)
    logged = RequestLogReader(log_root(project)).window("churn", started, until)
    mine = logged[logged["request_id"] == rid]
    assert len(mine) == 60 and list(mine["customer_id"]) == [f"log-{i}" for i in range(60)]
    assert list(mine["tenure_months"]) == [r["tenure_months"] for r in records]  # the model's inputs, as parsed
    junk = [c for c in logged.columns if c.startswith("junk_")]
    assert 0 < len(junk) <= LOGGED_EXTRAS - 1  # customer_id took one of the names

    window = Monitor(project, SYSTEM).check_window("churn", started, until)[0]
    drift = window.report["drift"]
    assert {f["name"] for f in drift["features"]} == set(ROW), drift
    assert drift["extra_columns"] == [] and not any("customer_id" in k or "junk" in k for k in window.metrics)


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "field", "fragment"),
    [
        ("/invocations", b"", "text/csv", 400, "body", "send a CSV with a header row"),
        ("/invocations", b"\n\n", "text/csv", 400, "body", "the CSV body is empty"),
        ("/invocations", b"tenure_months,age\n1,2\n3\n", "text/csv", 400, "body", "line 3 has 1 values; the header has 2"),
        ("/invocations", b"tenure_months,contract\n1,\xe9t\xe9\n", "text/csv", 400, "body", "not UTF-8"),
        ("/invocations", b'tenure_months,contract\n1,"open\n', "text/csv", 400, "body", "cannot be read"),
        ("/invocations", b"age,age\n1,2\n", "text/csv", 400, "body", "'age' appears twice"),
        ("/invocations", b",,\n1,2,3\n", "text/csv", 400, "body", "names no columns"),
        ("/invocations", ",".join(ROW).encode() + b"\n", "text/csv", 422, "inputs", "no rows"),
        ("/invocations", ",".join(map(str, ROW.values())).encode() + b"\n", "text/csv", 422, "tenure_months",
         "the first row must be the header"),
        ("/invocations", (",".join(ROW) + "\n" + ",".join(map(str, (ROW | {"age": "old"}).values()))).encode(), "text/csv",
         422, "age", "expected a number, got 'old' (CSV line 2)"),
        ("/invocations", b"a,b\n1,2\n", "text/csv; charset=latin-1", 415, "content-type", "send charset=utf-8"),
        ("/invocations", b"<a/>", "application/xml", 415, "content-type", "send application/json or text/csv"),
        ("/models/churn/invocations", b"a=1", "application/x-www-form-urlencoded", 415, "content-type", "or text/csv"),
        ("/v2/models/churn/infer", b"a,b\n1,2\n", "text/csv", 415, "content-type", "send application/json"),
    ],
)
def test_bad_csv_is_a_4xx_saying_what_is_wrong(served: InProcess, path: str, body: bytes, content_type: str,
                                               status: int, field: str, fragment: str) -> None:
    response = served.post(path, content=body, headers={"content-type": content_type})
    refused(response, status, field, fragment)
    assert response.headers["x-request-id"]
    if path == "/v2/models/churn/infer":
        assert response.json()["error"].endswith("; send application/json")  # OIP is JSON only


def test_a_csv_over_the_body_limit_is_refused(served: InProcess) -> None:
    """``serve.max_body_mb`` (0.05 here) holds for CSV as for JSON: on the length given, and while streaming."""
    line = ",".join(map(str, ROW.values())).encode() + b"\n"
    big = ",".join(ROW).encode() + b"\n" + line * 2000
    refused(served.post("/invocations", content=big, headers=CSV), 413, "body", "serve.max_body_mb")

    async def chunks() -> Any:
        yield ",".join(ROW).encode() + b"\n"
        for _ in range(100):
            yield line * 20

    refused(served.post("/invocations", content=chunks(), headers=CSV), 413, "body", "over the limit")
    assert served.post("/invocations", content=big[:20_000].rsplit(b"\n", 1)[0], headers=CSV).status_code == 200
