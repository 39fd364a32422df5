"""The Open Inference Protocol over gRPC, on real sockets: tritonclient.grpc and KServe's client against rung.

A gateway in this process serves gRPC beside REST (``start_gateway(...,
grpc_port=N)``); ``rung serve --grpc-port N`` is driven as a subprocess
and drained with SIGTERM. Answers are compared with the model itself, loaded
in this process, on the very values sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from rung.project import Project
from rung.serving.auth import create_token
from rung.serving.grpc import inference_pb2 as pb
from rung.serving.grpc import inference_pb2_grpc as pb_grpc
from rung.serving.server import RunningGateway, start_gateway
from tests.conftest import RUNG, rung_cli, stop_processes, wait_until

COLUMNS = ["tenure_months", "monthly_charges", "contract", "region", "support_calls", "age", "paperless_billing"]
TEXT = {"contract", "region", "paperless_billing"}
WHOLE = {"tenure_months", "support_calls", "age"}
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kserve" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Path:
    """churn:1 trained small (20 boosting rounds), served in threads: these tests are about the protocol."""
    root = tmp_path_factory.mktemp("grpc") / "churn"
    shutil.copytree(template_project, root)
    config = root / "rung.yaml"
    config.write_text(config.read_text().replace("max_iter: 200", "max_iter: 20")
                      + "\nserve:\n  refresh_s: 0.05\n  isolation: thread\n")
    run = rung_cli("run", "--json", cwd=root, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    return root


@pytest.fixture(scope="module")
def project(root: Path) -> Iterator[Project]:
    project = Project.open(root, overrides={"monitor.request_log.flush_s": 0.05})
    yield project
    project.close()


@pytest.fixture(scope="module")
def served(project: Project) -> Iterator[RunningGateway]:
    with start_gateway(project, grpc_port=free_port()) as running:
        assert running.grpc_target is not None
        yield running


@pytest.fixture(scope="module")
def client(served: RunningGateway) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(served.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(served: RunningGateway) -> Iterator[Any]:
    """rung's own stubs on a plain channel: for what tritonclient does not send (typed contents, both at once)."""
    with grpc.insecure_channel(served.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def rows(project: Project) -> pd.DataFrame:
    """1,000 training rows (some with a missing ``monthly_charges``) and the model that answers them here."""
    from rung.models.loader import training_inputs

    record = project.store.get_model_version("churn", 1)
    frame = training_inputs(record, project.artifacts, project.settings.data.target)
    return frame.sample(1000, random_state=3, replace=len(frame) < 1000)[COLUMNS].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(project: Project) -> Any:
    return project.models_loader.load(project.store.get_model_version("churn", 1))


def expected(model: Any, columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    from rung.models.signature import to_frame

    return model.predict(to_frame(model.columns, columns))


def arrays(rows: pd.DataFrame, floats: str = "FP64", ints: str = "INT64") -> dict[str, tuple[str, np.ndarray]]:
    """Each column as the tensor a client would send: text as BYTES, numbers as ``floats``/``ints``."""
    dtypes = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32}
    out = {}
    for name in COLUMNS:
        values = rows[name]
        if name in TEXT:
            out[name] = ("BYTES", np.array([v.encode() for v in values], dtype=np.object_))
        elif name in WHOLE:
            out[name] = (ints, values.to_numpy().astype(dtypes[ints]))
        else:
            out[name] = (floats, values.to_numpy().astype(dtypes[floats]))
    return out


def as_columns(tensors: dict[str, tuple[str, np.ndarray]]) -> dict[str, list[Any]]:
    """What the model is given for those tensors: text decoded, NaN missing (the values as sent, not as before)."""
    out: dict[str, list[Any]] = {}
    for name, (_, values) in tensors.items():
        if values.dtype == np.object_:
            out[name] = [v.decode() for v in values]
        else:
            out[name] = [None if v != v else v for v in values.tolist()]
    return out


def triton_inputs(tensors: dict[str, tuple[str, np.ndarray]]) -> list[triton.InferInput]:
    inputs = []
    for name, (datatype, values) in tensors.items():
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def code_of(error: InferenceServerException) -> str:
    return str(error.status()).removeprefix("StatusCode.")


def refused(call: Any, code: str, *fragments: str) -> str:
    """``call()`` fails with gRPC status ``code``, its message holding each fragment and no traceback."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    message = caught.value.message()
    assert code_of(caught.value) == code, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def metric(url: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"{url}/metrics").text.splitlines()
               if line.startswith(prefix))


# -- tritonclient.grpc with its defaults (raw contents) ----------------------------------------


def test_one_row_is_answered_as_the_model_answers_it(client: triton.InferenceServerClient, rows: pd.DataFrame,
                                                    model: Any) -> None:
    tensors = arrays(rows.head(1))
    result = client.infer("churn", triton_inputs(tensors), request_id="grpc-one")
    want = expected(model, as_columns(tensors))
    assert result.as_numpy("predict").tolist() == want["predict"].tolist()
    assert result.as_numpy("proba").tolist() == want["proba"].tolist()  # exact: raw FP64 round-trips
    response = result.get_response()
    assert response.id == "grpc-one" and response.model_name == "churn" and response.model_version == "1"
    assert response.parameters["variant"].string_param == "champion"
    assert [o.datatype for o in response.outputs] == ["INT64", "FP64"] and len(response.raw_output_contents) == 2


@pytest.mark.parametrize(("floats", "ints"), [("FP64", "INT64"), ("FP32", "INT32")])
def test_a_thousand_rows_of_every_datatype(client: triton.InferenceServerClient, rows: pd.DataFrame, model: Any,
                                           floats: str, ints: str) -> None:
    tensors = arrays(rows, floats, ints)
    assert rows["monthly_charges"].isna().any()  # missing values travel as NaN
    result = client.infer("churn", triton_inputs(tensors))
    want = expected(model, as_columns(tensors))
    assert result.as_numpy("predict").tolist() == want["predict"].tolist()
    assert result.as_numpy("proba").tolist() == want["proba"].tolist()


def test_requested_outputs_in_their_order_and_an_unknown_one(client: triton.InferenceServerClient,
                                                             rows: pd.DataFrame, model: Any) -> None:
    tensors = arrays(rows.head(3))
    want = expected(model, as_columns(tensors))
    only = client.infer("churn", triton_inputs(tensors), outputs=[triton.InferRequestedOutput("proba")])
    assert [o.name for o in only.get_response().outputs] == ["proba"] and only.as_numpy("predict") is None
    assert only.as_numpy("proba").tolist() == want["proba"].tolist()
    both = client.infer("churn", triton_inputs(tensors),
                        outputs=[triton.InferRequestedOutput("proba"), triton.InferRequestedOutput("predict")])
    assert [o.name for o in both.get_response().outputs] == ["proba", "predict"]
    refused(lambda: client.infer("churn", triton_inputs(tensors), outputs=[triton.InferRequestedOutput("logits")]),
            "INVALID_ARGUMENT", "outputs[0].name", "logits", "predict, proba")


def test_health_metadata_and_readiness(client: triton.InferenceServerClient, served: RunningGateway) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("churn") and client.is_model_ready("churn", "1")
    server = client.get_server_metadata()
    assert server.name == "rung" and "rung-routing" in server.extensions
    meta = client.get_model_metadata("churn")
    rest = httpx.get(f"{served.url}/v2/models/churn").json()  # the same description as REST's
    assert meta.name == "churn" and list(meta.versions) == rest["versions"] == ["1"]
    assert meta.platform == rest["platform"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [(t["name"], t["datatype"], t["shape"])
                                                                           for t in rest["inputs"]]
    assert [t.name for t in meta.inputs] == COLUMNS
    assert [(t.name, t.datatype) for t in meta.outputs] == [("predict", "INT64"), ("proba", "FP64")]
    assert client.get_model_metadata("churn", "1").versions == meta.versions
    refused(lambda: client.get_model_metadata("nope"), "NOT_FOUND", "model_name", "nope")
    refused(lambda: client.is_model_ready("churn", "9"), "NOT_FOUND", "model_version")
    refused(lambda: client.is_model_ready("churn", "x"), "NOT_FOUND", "model_version")


def test_the_trailing_metadata_names_who_answered(stub: Any, rows: pd.DataFrame) -> None:
    request = raw_request(arrays(rows.head(2)), id="trailer-1")
    response, call = stub.ModelInfer.with_call(request, metadata=(("x-rung-key", "customer-7"),), timeout=30)
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] == "trailer-1" == response.id
    assert trailing["x-rung-model-version"] == "1" and trailing["x-rung-variant"] == "champion"
    assert int(trailing["x-rung-routing-revision"]) >= 1
    from_header, _ = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "from-metadata"),), timeout=30)
    assert from_header.id == "from-metadata"


# -- typed contents, layouts, refusals --------------------------------------------------------


def raw_request(tensors: dict[str, tuple[str, np.ndarray]], **fields: Any) -> Any:
    from rung.serving.tensors import encode

    request = pb.ModelInferRequest(**({"model_name": "churn"} | fields))
    for name, (datatype, values) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        request.raw_input_contents.append(encode(values, datatype)[1])
    return request


def typed_request(tensors: dict[str, tuple[str, np.ndarray]], **fields: Any) -> Any:
    lists = {"BYTES": "bytes_contents", "FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents",
             "INT32": "int_contents"}
    request = pb.ModelInferRequest(**({"model_name": "churn"} | fields))
    for name, (datatype, values) in tensors.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        getattr(tensor.contents, lists[datatype]).extend(values.tolist())
    return request


def outputs_of(response: Any) -> dict[str, list[Any]]:
    """A response's outputs by name, from typed contents or raw bytes."""
    from rung.serving.tensors import decode

    out = {}
    for i, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            out[tensor.name] = list(decode(tensor.datatype, list(tensor.shape), response.raw_output_contents[i], "outputs"))
        else:
            contents = tensor.contents
            out[tensor.name] = list(contents.int64_contents if tensor.datatype == "INT64" else contents.fp64_contents)
    return out


def test_typed_contents_are_answered_in_typed_contents(stub: Any, rows: pd.DataFrame, model: Any) -> None:
    tensors = arrays(rows.head(50))
    response = stub.ModelInfer(typed_request(tensors, id="typed"), timeout=30)
    assert not response.raw_output_contents and response.id == "typed"
    want = expected(model, as_columns(tensors))
    got = outputs_of(response)
    assert got["predict"] == want["predict"].tolist() and got["proba"] == want["proba"].tolist()
    asked = typed_request(tensors)
    asked.parameters["binary_data_output"].bool_param = True
    binary = stub.ModelInfer(asked, timeout=30)
    assert len(binary.raw_output_contents) == 2 and outputs_of(binary) == got


def status_of_call(stub: Any, request: Any) -> tuple[grpc.StatusCode, str, str | None]:
    """The status code, message and ``x-rung-field`` trailing metadata of a refused call."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    error = caught.value
    return error.code(), error.details(), dict(error.trailing_metadata() or ()).get("x-rung-field")


def test_bad_requests_name_their_field(stub: Any, rows: pd.DataFrame) -> None:
    tensors = arrays(rows.head(2))
    both = raw_request(tensors)
    both.inputs[1].contents.fp64_contents.extend([1.0, 2.0])
    short = raw_request(tensors)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
    fewer = raw_request(tensors)
    del fewer.raw_input_contents[-1]
    wrong_list = typed_request(tensors)
    wrong_list.inputs[0].contents.fp64_contents.append(1.0)
    matrix = typed_request({"x": ("FP64", np.zeros(6))})
    matrix.inputs[0].shape[:] = [2, 3]
    half = raw_request({"x": ("FP16", np.zeros(2, dtype=np.float16))})
    half.ClearField("raw_input_contents")
    text_in_number = typed_request(tensors | {"age": ("BYTES", np.array([b"old", b"young"], dtype=np.object_))})
    cases = [
        (both, grpc.StatusCode.INVALID_ARGUMENT, "inputs[1].contents"),
        (short, grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].data"),
        (fewer, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents"),
        (wrong_list, grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].contents"),
        (matrix, grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].shape"),  # the REST layouts: [n, k] needs k = 7
        (half, grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].datatype"),
        (text_in_number, grpc.StatusCode.INVALID_ARGUMENT, "age"),
        (pb.ModelInferRequest(model_name="churn"), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
        (raw_request(tensors, model_name="nope"), grpc.StatusCode.NOT_FOUND, "model_name"),
        (raw_request(tensors, model_version="9"), grpc.StatusCode.NOT_FOUND, "model_version"),
        (raw_request(tensors, model_version="١"), grpc.StatusCode.NOT_FOUND, "model_version"),
    ]
    for request, code, field in cases:
        got, message, named = status_of_call(stub, request)
        assert (got, named) == (code, field), message
        assert field.split(".")[0] in message and "Traceback" not in message, message


# -- tokens, metrics and the request log -------------------------------------------------------


def test_protect_predict_asks_for_a_viewer_token(root: Path, rows: pd.DataFrame) -> None:
    guarded = Project.open(root, overrides={"serve.protect_predict": True})
    try:
        viewer = f"Bearer {create_token(guarded.store, role='viewer')[1]}"
        inputs = triton_inputs(arrays(rows.head(1)))
        with start_gateway(guarded, grpc_port=free_port()) as running:
            client = triton.InferenceServerClient(running.grpc_target)
            refused(lambda: client.infer("churn", inputs), "UNAUTHENTICATED", "authorization", "Bearer")
            refused(lambda: client.infer("churn", inputs, headers={"authorization": "Bearer rung_nope"}),
                    "UNAUTHENTICATED", "unknown API token")
            assert client.infer("churn", inputs, headers={"authorization": viewer}).as_numpy("predict").shape == (1,)
            assert client.is_server_ready()  # health and metadata stay open, as over REST
            client.close()
    finally:
        guarded.close()


def test_grpc_requests_are_counted_and_logged_like_rest_ones(served: RunningGateway, client: triton.InferenceServerClient,
                                                            root: Path, rows: pd.DataFrame) -> None:
    from rung.monitor.logreader import RequestLogReader

    answered = 'rung_requests_total{model="churn",protocol="grpc",status="200",variant="champion",version="1"}'
    refusals = 'rung_request_errors_total{status="422"}'
    before, refused_before = metric(served.url, answered), metric(served.url, refusals)
    tensors = arrays(rows.head(4))
    for i in range(3):
        client.infer("churn", triton_inputs(tensors), request_id=f"logged-{i}")
    refused(lambda: client.infer("churn", triton_inputs(tensors)[1:]), "INVALID_ARGUMENT", "tenure_months")
    assert metric(served.url, answered) == before + 3
    assert metric(served.url, refusals) == refused_before + 1

    def logged() -> list[pd.DataFrame]:
        frame = RequestLogReader(root / ".rung" / "requests").window("churn", *EVER)
        mine = frame[frame["request_id"].str.startswith("logged-")]
        return [mine] if len(mine) == 12 else []

    [mine] = wait_until(logged, timeout=30, message="the gRPC requests in the request log")
    assert sorted(set(mine["request_id"])) == ["logged-0", "logged-1", "logged-2"]
    assert list(mine["age"][:4]) == rows["age"].head(4).tolist() and set(mine["status"]) == {200}
    assert set(mine["version"]) == {1} and set(mine["variant"]) == {"champion"}


# -- Triton's statistics and repository extensions ---------------------------------------------


def test_statistics_and_the_repository_as_tritonclient_asks(client: triton.InferenceServerClient, served: RunningGateway,
                                                            project: Project, rows: pd.DataFrame) -> None:
    inputs = triton_inputs(arrays(rows.head(3)))
    client.infer("churn", inputs)
    stats = client.get_inference_statistics("churn").model_stats
    rest = httpx.get(f"{served.url}/v2/models/churn/stats").json()["model_stats"]
    assert [(s.name, s.version, s.inference_count, s.inference_stats.success.count) for s in stats] == \
        [(s["name"], s["version"], s["inference_count"], s["inference_stats"]["success"]["count"]) for s in rest]
    assert stats[0].inference_count >= 3 and stats[0].inference_stats.success.ns > 0
    assert client.get_inference_statistics().model_stats[0].name == "churn"
    refused(lambda: client.get_inference_statistics("nope"), "NOT_FOUND", "nope")
    index = client.get_model_repository_index().models
    assert [(m.name, m.version, m.state) for m in index] == [("churn", "1", "READY")]

    deployer = {"authorization": f"Bearer {create_token(project.store, role='deployer')[1]}"}
    viewer = {"authorization": f"Bearer {create_token(project.store, role='viewer')[1]}"}
    refused(lambda: client.unload_model("churn"), "UNAUTHENTICATED", "authorization")
    refused(lambda: client.unload_model("churn", headers=viewer), "PERMISSION_DENIED", "deployer")
    refused(lambda: client.unload_model("nope", headers=deployer), "NOT_FOUND", "nope")
    refused(lambda: client.load_model("churn", headers=deployer, config="{}"), "INVALID_ARGUMENT", "parameters.config")
    try:
        client.unload_model("churn", headers=deployer)
        assert [m.state for m in client.get_model_repository_index().models] == ["UNLOADED"]
        refused(lambda: client.infer("churn", inputs), "UNAVAILABLE", "retry")
    finally:
        client.load_model("churn", headers=deployer)
    assert client.is_model_ready("churn") and client.infer("churn", inputs).as_numpy("predict").shape == (3,)
    assert {"gateway.unload", "gateway.load"} <= {e.kind for e in project.store.events(subject="churn")}  # audited


# -- KServe's client ---------------------------------------------------------------------------

KSERVE_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

target, payload = sys.argv[1], json.loads(sys.argv[2])

async def main():
    client = InferenceGRPCClient(target, timeout=30, retries=0)
    answers = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
               "model_ready": await client.is_model_ready("churn")}
    for mode in ("numpy", "lists"):
        inputs = []
        for name, datatype, values in payload:
            tensor = InferInput(name, [len(values)], datatype)
            if mode == "numpy":
                array = np.array([v.encode() for v in values], dtype=np.object_) if datatype == "BYTES" else np.array(values)
                tensor.set_data_from_numpy(array)
            else:
                tensor.data = [v.encode() for v in values] if datatype == "BYTES" else values
            inputs.append(tensor)
        result = await client.infer(InferRequest(model_name="churn", infer_inputs=inputs, request_id="kserve-" + mode))
        answers[mode] = {"id": result.id, **{o.name: o.as_numpy().tolist() for o in result.outputs}}
    await client.close()
    print(json.dumps(answers))

asyncio.run(main())
"""


def test_kserve_grpc_client(served: RunningGateway, rows: pd.DataFrame, model: Any, tmp_path: Path) -> None:
    if not KSERVE_PYTHON.exists():
        pytest.skip(f"KServe's SDK is not installed: {KSERVE_PYTHON} is missing (make it with scripts/kserve-venv)")
    tensors = arrays(rows.head(5).fillna({"monthly_charges": 50.0}))
    payload = [(name, datatype, [v.decode() for v in values] if datatype == "BYTES" else values.tolist())
               for name, (datatype, values) in tensors.items()]
    script = tmp_path / "kserve_client.py"
    script.write_text(KSERVE_SCRIPT)
    run = subprocess.run([str(KSERVE_PYTHON), str(script), served.grpc_target, json.dumps(payload)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout.strip().splitlines()[-1])
    assert answers["live"] and answers["ready"] and answers["model_ready"]
    want = expected(model, as_columns(tensors))
    for mode in ("numpy", "lists"):
        assert answers[mode]["id"] == f"kserve-{mode}"
        assert answers[mode]["predict"] == want["predict"].tolist()
        assert answers[mode]["proba"] == pytest.approx(want["proba"].tolist(), rel=1e-12)


# -- rung serve --grpc-port, and SIGTERM ------------------------------------------------------


def test_rung_serve_answers_grpc_and_drains_on_sigterm(root: Path, rows: pd.DataFrame) -> None:
    """Calls keep coming while SIGTERM arrives: each is answered in full or refused UNAVAILABLE, and every answer is logged."""
    from rung.monitor.logreader import RequestLogReader

    port, grpc_port = free_port(), free_port()
    log = open(root / "serve-grpc.log", "w")
    process = subprocess.Popen([RUNG, "serve", "--port", str(port), "--grpc-port", str(grpc_port)], cwd=root,
                               stdout=log, stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{grpc_port}"
    try:
        client = triton.InferenceServerClient(target)

        def ready() -> bool:
            try:
                return client.is_server_ready()
            except InferenceServerException:
                return process.poll() is not None  # ends the wait; asserted below

        wait_until(ready, timeout=90, interval=0.2, message="rung serve's gRPC service")
        assert process.poll() is None, (root / "serve-grpc.log").read_text()
        assert f"OIP gRPC on 127.0.0.1:{grpc_port}" in (root / "serve-grpc.log").read_text()
        inputs = triton_inputs(arrays(rows.head(20)))
        assert client.infer("churn", inputs).as_numpy("predict").shape == (20,)

        outcomes: list[str] = []
        answered: list[str] = []
        stop = threading.Event()

        def call(worker: int) -> None:
            own = triton.InferenceServerClient(target)
            i = 0
            while not stop.is_set():
                rid = f"drain-{worker}-{i}"
                i += 1
                try:
                    result = own.infer("churn", inputs, request_id=rid, client_timeout=30)
                except InferenceServerException as exc:
                    outcomes.append(code_of(exc))
                    if code_of(exc) == "UNAVAILABLE":
                        break
                    continue
                outcomes.append("OK")
                answered.append(result.get_response().id)
            own.close()

        threads = [threading.Thread(target=call, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: outcomes.count("OK") >= 8, timeout=30, message="calls answered before SIGTERM")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        client.close()
        assert set(outcomes) <= {"OK", "UNAVAILABLE"}, [o for o in outcomes if o not in ("OK", "UNAVAILABLE")]
        logged = RequestLogReader(root / ".rung" / "requests").window("churn", *EVER)
        mine = logged[logged["request_id"].isin(answered) & ~logged["shadow"]]
        assert sorted(set(mine["request_id"])) == sorted(answered) and len(mine) == 20 * len(answered)
        assert "Traceback" not in (root / "serve-grpc.log").read_text()
    finally:
        if process.poll() is None:
            stop_processes(process)
        log.close()


def test_a_grpc_port_in_use_is_one_line_naming_it(root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([RUNG, "serve", "--port", str(free_port()), "--grpc-port", str(port)], cwd=root,
                             capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr + run.stdout, run.stderr
    assert str(port) in errors[0] and "--grpc-port" in errors[0] and "serve.grpc_port" in errors[0]
