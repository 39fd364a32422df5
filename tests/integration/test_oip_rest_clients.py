"""Standard REST inference clients against rung, on a real socket: tritonclient.http, KServe's SDK, raw bodies.

A gateway in this process (``start_gateway``, port 0) serves a small trained
churn model. ``tritonclient.http`` is used with its defaults (every input and
output as binary tensor data) and as JSON; KServe's ``InferenceRESTClient``
(v1 and v2) runs from ``.venv-kserve`` as a subprocess. Every answer is
compared with the model itself, loaded in this process, on the very values
sent. Malformed binary bodies go out through httpx: each is a 4xx naming the
field, and the gateway answers the next request.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from rung.project import Project
from rung.serving.server import RunningGateway, start_gateway
from tests.conftest import rung_cli

COLUMNS = ["tenure_months", "monthly_charges", "contract", "region", "support_calls", "age", "paperless_billing"]
TEXT = {"contract", "region", "paperless_billing"}
WHOLE = {"tenure_months", "support_calls", "age"}
DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32}
KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kserve" / "bin" / "python"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Iterator[Project]:
    """churn:1 trained small (20 boosting rounds): these tests are about the protocol."""
    root = tmp_path_factory.mktemp("oip-rest") / "churn"
    shutil.copytree(template_project, root)
    config = root / "rung.yaml"
    config.write_text(config.read_text().replace("max_iter: 200", "max_iter: 20")
                      + "\nserve:\n  refresh_s: 0.05\n  isolation: thread\n")
    run = rung_cli("run", "--json", cwd=root, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    project = Project.open(root)
    yield project
    project.close()


@pytest.fixture(scope="module")
def served(project: Project) -> Iterator[RunningGateway]:
    with start_gateway(project, grpc_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: RunningGateway) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(served.url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(served: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def rows(project: Project) -> pd.DataFrame:
    """1,000 training rows, some with a missing ``monthly_charges``."""
    from rung.models.loader import training_inputs

    record = project.store.get_model_version("churn", 1)
    frame = training_inputs(record, project.artifacts, project.settings.data.target)
    return frame.sample(1000, random_state=5, replace=len(frame) < 1000)[COLUMNS].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(project: Project) -> Any:
    return project.models_loader.load(project.store.get_model_version("churn", 1))


def arrays(rows: pd.DataFrame, floats: str = "FP64", ints: str = "INT64") -> dict[str, tuple[str, np.ndarray]]:
    """Each column as a client sends it: text as BYTES, numbers as ``floats`` / ``ints``."""
    out = {}
    for name in COLUMNS:
        if name in TEXT:
            out[name] = ("BYTES", np.array(rows[name].tolist(), dtype=np.object_))
        else:
            datatype = ints if name in WHOLE else floats
            out[name] = (datatype, rows[name].to_numpy().astype(DTYPES[datatype]))
    return out


def expected(model: Any, tensors: dict[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """What the model says, in this process, on the values as sent (float32-rounded if so; NaN missing)."""
    from rung.models.signature import to_frame

    columns = {name: [v for v in values.tolist()] if values.dtype == np.object_
               else [None if v != v else v for v in values.tolist()] for name, (_, values) in tensors.items()}
    return model.predict(to_frame(model.columns, columns))


def triton_inputs(tensors: dict[str, tuple[str, np.ndarray]], binary: bool = True) -> list[triton.InferInput]:
    inputs = []
    for name, (datatype, values) in tensors.items():
        tensor = triton.InferInput(name, [len(values)], datatype)
        if binary:
            tensor.set_data_from_numpy(values)  # the default: binary_data=True
        else:
            tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(tensor)
    return inputs


def assert_answers(result: triton.InferResult, want: dict[str, np.ndarray], names: tuple[str, ...] = ("predict", "proba")) -> None:
    for name in names:
        assert result.as_numpy(name).tolist() == want[name].tolist(), name  # exact: FP64 round-trips either way


def binary_body(header: dict[str, Any], *parts: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + b"".join(parts), {HEADER: str(len(raw)), "content-type": "application/octet-stream"}


def strings(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


ONE_ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
           "support_calls": 1, "age": 42, "paperless_billing": "no"}


def good_binary() -> tuple[list[dict[str, Any]], list[bytes]]:
    """One row as binary tensors, in COLUMNS order: the base every malformed body below spoils one part of."""
    inputs, parts = [], []
    for name in COLUMNS:
        value = ONE_ROW[name]
        if name in TEXT:
            raw, datatype = strings(value), "BYTES"
        elif name in WHOLE:
            raw, datatype = struct.pack("<q", value), "INT64"
        else:
            raw, datatype = struct.pack("<d", value), "FP64"
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}})
        parts.append(raw)
    return inputs, parts


# -- tritonclient.http with its defaults: binary both ways --------------------------------------


@pytest.mark.parametrize("count", [1, 1000])
def test_tritonclient_defaults_send_and_get_binary_tensors(client: triton.InferenceServerClient, rows: pd.DataFrame,
                                                           model: Any, count: int) -> None:
    tensors = arrays(rows.head(count))
    if count == 1000:
        assert rows["monthly_charges"].isna().any()  # a missing value travels as NaN
    result = client.infer("churn", triton_inputs(tensors), request_id=f"binary-{count}")
    assert_answers(result, expected(model, tensors))
    response = result.get_response()
    assert response["id"] == f"binary-{count}" and response["model_version"] == "1"
    assert response["parameters"]["variant"] == "champion"
    for output in response["outputs"]:  # no outputs named: binary_data_output, every output binary
        assert "data" not in output and output["parameters"]["binary_data_size"] == count * 8
        assert output["shape"] == [count] and output["datatype"] in ("INT64", "FP64")


@pytest.mark.parametrize(("floats", "ints"), [("FP64", "INT64"), ("FP32", "INT32"), ("FP32", "INT64"), ("FP64", "INT32")])
def test_every_numeric_datatype_of_the_columns(client: triton.InferenceServerClient, rows: pd.DataFrame, model: Any,
                                               floats: str, ints: str) -> None:
    tensors = arrays(rows, floats, ints)
    assert_answers(client.infer("churn", triton_inputs(tensors)), expected(model, tensors))


@pytest.mark.parametrize("count", [1, 1000])
def test_tritonclient_as_json_both_ways(client: triton.InferenceServerClient, rows: pd.DataFrame, model: Any,
                                        count: int) -> None:
    """binary_data=False on inputs and outputs: plain JSON (JSON has no NaN: a missing value is left out here)."""
    tensors = arrays(rows.dropna().head(count))
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("predict", "proba")]
    result = client.infer("churn", triton_inputs(tensors, binary=False), outputs=outputs)
    assert_answers(result, expected(model, tensors))
    assert all("data" in o and "parameters" not in o for o in result.get_response()["outputs"])


def test_requested_outputs_one_at_a_time_and_mixed(client: triton.InferenceServerClient, rows: pd.DataFrame,
                                                   model: Any) -> None:
    tensors = arrays(rows.head(10))
    want = expected(model, tensors)
    for name in ("predict", "proba"):
        for binary in (True, False):
            result = client.infer("churn", triton_inputs(tensors), outputs=[triton.InferRequestedOutput(name, binary)])
            assert [o["name"] for o in result.get_response()["outputs"]] == [name]
            assert_answers(result, want, (name,))
    mixed = client.infer("churn", triton_inputs(tensors, binary=False), outputs=[
        triton.InferRequestedOutput("proba", binary_data=False), triton.InferRequestedOutput("predict", binary_data=True)])
    outputs = mixed.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["proba", "predict"]  # the request's order
    assert "data" in outputs[0] and outputs[1]["parameters"]["binary_data_size"] == 80
    assert_answers(mixed, want)


def test_an_unknown_output_is_a_422_naming_it(client: triton.InferenceServerClient, rows: pd.DataFrame) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("churn", triton_inputs(arrays(rows.head(2))),
                     outputs=[triton.InferRequestedOutput("proba"), triton.InferRequestedOutput("label")])
    assert caught.value.status() == "422"
    assert caught.value.message() == "outputs[1].name: the model has no output 'label'; it gives predict, proba"


def test_metadata_and_health_through_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("churn")
    metadata = client.get_model_metadata("churn")
    assert [i["name"] for i in metadata["inputs"]] == COLUMNS
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [("predict", "INT64"), ("proba", "FP64")]


# -- raw bodies: the binary extension's edges --------------------------------------------------


def test_a_hand_made_binary_body_with_any_content_type(http: httpx.Client, model: Any) -> None:
    inputs, parts = good_binary()
    body, headers = binary_body({"id": "raw-1", "inputs": inputs, "outputs": [{"name": "proba", "parameters": {"binary_data": True}}]}, *parts)
    want = model.predict(model.frame([ONE_ROW]))
    for content_type in ("application/octet-stream", None, "application/json"):
        sent = {k: v for k, v in headers.items() if k != "content-type"} | ({"content-type": content_type} if content_type else {})
        response = http.post("/v2/models/churn/infer", content=body, headers=sent)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["x-rung-model-version"] == "1" and response.headers["x-request-id"] == "raw-1"
        length = int(response.headers[HEADER])
        head = json.loads(response.content[:length])
        assert head["outputs"] == [{"name": "proba", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}]
        assert np.frombuffer(response.content[length:], "<f8").tolist() == want["proba"].tolist()
    as_json = http.post("/v2/models/churn/infer", content=body[:int(headers[HEADER])], headers={"content-type": "application/json"})
    assert as_json.status_code == 422 and as_json.json()["field"] == "inputs[0].parameters.binary_data_size"


def _spoil(case: str) -> tuple[bytes, dict[str, str]]:
    inputs, parts = good_binary()
    header: dict[str, Any] = {"inputs": inputs}
    if case == "length not a number":
        body, headers = binary_body(header, *parts)
        return body, headers | {HEADER: "12abc"}
    if case == "length past the body":
        body, headers = binary_body(header, *parts)
        return body, headers | {HEADER: str(len(body) + 1)}
    if case == "length short of the JSON":
        body, headers = binary_body(header, *parts)
        return body, headers | {HEADER: str(int(headers[HEADER]) - 3)}
    if case == "truncated BYTES":
        parts[2] = parts[2][:-2]
        inputs[2]["parameters"]["binary_data_size"] -= 2
    elif case == "BYTES prefix past its part":
        parts[2] = struct.pack("<I", 99) + b"one-year"
    elif case == "sizes short of the blob":
        parts.append(b"\x00" * 5)
    elif case == "size past the blob":
        inputs[6]["parameters"]["binary_data_size"] += 4
    elif case == "FP64 of 4 bytes":
        parts[1] = parts[1][:4]
        inputs[1]["parameters"]["binary_data_size"] = 4
    elif case == "shape of two rows":
        inputs[0]["shape"] = [2]
    elif case == "data and binary":
        inputs[0]["data"] = [54]
    elif case == "negative size":
        inputs[0]["parameters"]["binary_data_size"] = -8
    elif case == "BYTES not UTF-8":
        parts[3] = struct.pack("<I", 2) + b"\xff\xfe"
    elif case == "binary_data_output not a flag":
        header["parameters"] = {"binary_data_output": "yes"}
    elif case == "binary_data not a flag":
        header["outputs"] = [{"name": "predict", "parameters": {"binary_data": 1}}]
    return binary_body(header, *parts)


@pytest.mark.parametrize(
    ("case", "status", "field"),
    [
        ("length not a number", 400, "inference-header-content-length"),
        ("length past the body", 400, "inference-header-content-length"),
        ("length short of the JSON", 400, "inference-header-content-length"),
        ("truncated BYTES", 422, "inputs[2].data"),
        ("BYTES prefix past its part", 422, "inputs[2].data"),
        ("sizes short of the blob", 422, "inputs[6].parameters.binary_data_size"),
        ("size past the blob", 422, "inputs[6].parameters.binary_data_size"),
        ("FP64 of 4 bytes", 422, "inputs[1].data"),
        ("shape of two rows", 422, "inputs[0].data"),
        ("data and binary", 422, "inputs[0].data"),
        ("negative size", 422, "inputs[0].parameters.binary_data_size"),
        ("BYTES not UTF-8", 422, "inputs[3].data"),
        ("binary_data_output not a flag", 422, "parameters.binary_data_output"),
        ("binary_data not a flag", 422, "outputs[0].parameters.binary_data"),
    ],
)
def test_a_malformed_binary_body_is_a_4xx_naming_the_field(http: httpx.Client, case: str, status: int, field: str) -> None:
    body, headers = _spoil(case)
    response = http.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["field"] == field and "Traceback" not in answer["error"]
    good, headers = _spoil("none")
    assert http.post("/v2/models/churn/infer", content=good, headers=headers).status_code == 200  # alive, and unharmed


# -- KServe v1 over plain HTTP ----------------------------------------------------------------


def test_kserve_v1_predict_and_ready(http: httpx.Client, rows: pd.DataFrame, model: Any) -> None:
    frame = rows.dropna().head(4)
    want = model.predict(model.frame(frame)).get("predict").tolist()
    records = frame.to_dict(orient="records")
    for body in ({"instances": records}, {"instances": [list(r.values()) for r in records]}, {"inputs": frame.to_dict(orient="list")}):
        response = http.post("/v1/models/churn:predict", json=body, headers={"x-request-id": "v1-call"})
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": want}
        assert response.headers["x-rung-model-version"] == "1" and response.headers["x-rung-variant"] == "champion"
        assert response.headers["x-request-id"] == "v1-call"
    assert http.get("/v1/models/churn").json() == {"name": "churn", "ready": True}
    assert http.get("/v1/models/nope").status_code == 404
    assert http.post("/v1/models/nope:predict", json={"instances": records}).status_code == 404
    refused = http.post("/v1/models/churn:predict", json={"instances": [[1, 2]]})
    assert refused.status_code == 422 and refused.json()["field"] == "instances[0]"
    both = http.post("/v1/models/churn:predict", json={"instances": records, "inputs": records})
    assert both.status_code == 422 and both.json()["field"] == "body"
    assert http.post("/v1/models/churn:predict", json={"dataframe_records": records}).json()["field"] == "body"


# -- KServe's SDK (its own venv) ----------------------------------------------------------------

KSERVE_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

url, payload = sys.argv[1], json.loads(sys.argv[2])
DTYPES = {"FP64": np.float64, "INT64": np.int64, "FP32": np.float32, "INT32": np.int32}

def inputs(binary):
    made = []
    for name, datatype, values in payload:
        tensor = InferInput(name, [len(values)], datatype)
        array = np.array(values, dtype=np.object_ if datatype == "BYTES" else DTYPES[datatype])
        tensor.set_data_from_numpy(array, binary_data=binary)
        made.append(tensor)
    return made

async def main():
    answers = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
    answers["v1_ready"] = [await v1.is_server_live(url), await v1.is_model_ready(url, "churn")]
    names = [name for name, _, _ in payload]
    records = [dict(zip(names, row)) for row in zip(*(values for _, _, values in payload))]
    answers["v1"] = (await v1.infer(url, {"instances": records}, model_name="churn"))["predictions"]
    await v1.close()
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    answers["v2_ready"] = [await v2.is_server_live(url), await v2.is_server_ready(url), await v2.is_model_ready(url, "churn")]
    for binary in (False, True):
        result = await v2.infer(url, InferRequest(model_name="churn", infer_inputs=inputs(binary), request_id=f"kserve-{binary}"),
                                model_name="churn")
        answers[f"v2-{binary}"] = {"id": result.id, **{o.name: o.as_numpy().tolist() for o in result.outputs}}
        asked = [RequestedOutput("proba", parameters={"binary_data": binary})]
        result = await v2.infer(url, InferRequest(model_name="churn", infer_inputs=inputs(binary), request_outputs=asked),
                                model_name="churn")
        answers[f"v2-{binary}-proba"] = {o.name: o.as_numpy().tolist() for o in result.outputs}
    try:
        await v2.infer(url, InferRequest(model_name="churn", infer_inputs=inputs(True),
                                         request_outputs=[RequestedOutput("nope")]), model_name="churn")
    except Exception as exc:
        answers["unknown"] = [getattr(getattr(exc, "response", None), "status_code", None), str(exc)]
    await v2.close()
    print(json.dumps(answers))

asyncio.run(main())
"""


def test_kserve_rest_client_v1_and_v2(served: RunningGateway, rows: pd.DataFrame, model: Any, tmp_path: Path) -> None:
    if not KSERVE_PYTHON.exists():
        pytest.skip(f"KServe's SDK is not installed: {KSERVE_PYTHON} is missing (make it with scripts/kserve-venv)")
    tensors = arrays(rows.dropna().head(5))
    payload = [(name, datatype, values.tolist()) for name, (datatype, values) in tensors.items()]
    script = tmp_path / "kserve_rest_client.py"
    script.write_text(KSERVE_SCRIPT)
    run = subprocess.run([str(KSERVE_PYTHON), str(script), served.url, json.dumps(payload)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout.strip().splitlines()[-1])
    want = expected(model, tensors)
    assert answers["v1_ready"] == [True, True] and answers["v2_ready"] == [True, True, True]
    assert answers["v1"] == want["predict"].tolist()
    for binary in ("False", "True"):
        assert answers[f"v2-{binary}"] == {"id": f"kserve-{binary}", "predict": want["predict"].tolist(),
                                           "proba": want["proba"].tolist()}
        assert answers[f"v2-{binary}-proba"] == {"proba": want["proba"].tolist()}
    status, message = answers["unknown"]
    assert status == 422 and "outputs[0].name: the model has no output 'nope'" in message
