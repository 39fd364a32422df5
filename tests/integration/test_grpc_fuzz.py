"""Malformed gRPC inference calls, generated: each gets a status that says what is wrong, never INTERNAL, and the server lives on.

Hypothesis builds ``ModelInferRequest`` messages two ways: a valid request
with one or two things broken (a datatype, a shape, raw bytes cut short or
sent beside typed contents, a tensor missing or renamed, an unknown model,
version or output), and requests of arbitrary parts. Garbage bytes go on
the wire through a channel with no serialiser, and a message over
``serve.max_body_mb`` is refused before it is read. After each group the
server still answers ``ServerLive`` and a valid request. Each group is
bounded (examples, no shrinking past a budget), the file well under a minute.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rung.serving.grpc import inference_pb2 as pb
from rung.serving.grpc import inference_pb2_grpc as pb_grpc
from rung.serving.server import RunningGateway, start_gateway
from rung.serving.tensors import encode
from tests.conftest import rung_cli

ROW = {"tenure_months": 54, "monthly_charges": 77.73, "contract": "one-year", "region": "north",
       "support_calls": 1, "age": 42, "paperless_billing": "no"}
TYPES = {"tenure_months": "INT64", "monthly_charges": "FP64", "support_calls": "INT64", "age": "INT64"}
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32",
             "FP64", "BYTES"]
LISTS = ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents", "fp32_contents",
         "fp64_contents", "bytes_contents"]
# What a malformed request may be answered: refused for its input, its model or version, or its size; or answered.
EXPECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.RESOURCE_EXHAUSTED}
LIMIT_MB = 0.25
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, template_project: Path) -> Iterator[RunningGateway]:
    from rung.project import Project

    root = tmp_path_factory.mktemp("grpc-fuzz") / "churn"
    shutil.copytree(template_project, root)
    config = root / "rung.yaml"
    config.write_text(config.read_text().replace("max_iter: 200", "max_iter: 20")
                      + f"\nserve:\n  refresh_s: 0.05\n  isolation: thread\n  max_body_mb: {LIMIT_MB}\n")
    run = rung_cli("run", "--json", cwd=root, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    project = Project.open(root)
    try:
        with start_gateway(project, grpc_port=free_port()) as running:
            yield running
    finally:
        project.close()


@pytest.fixture(scope="module")
def channel(served: RunningGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.grpc_target, options=[("grpc.max_send_message_length", -1)]) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return pb_grpc.GRPCInferenceServiceStub(channel)


def valid(rows: int = 2) -> Any:
    request = pb.ModelInferRequest(model_name="churn", id="fuzz")
    for name, value in ROW.items():
        datatype = TYPES.get(name, "BYTES")
        values = np.array([value.encode() if isinstance(value, str) else value] * rows,
                          dtype=np.object_ if datatype == "BYTES" else None)
        request.inputs.add(name=name, datatype=datatype, shape=[rows])
        request.raw_input_contents.append(encode(values, datatype)[1])
    return request


def answer(stub: Any, request: Any) -> tuple[grpc.StatusCode, str, Any]:
    try:
        return grpc.StatusCode.OK, "", stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as error:
        return error.code(), error.details() or "", None


def check(stub: Any, request: Any) -> None:
    code, message, response = answer(stub, request)
    assert code in EXPECTED, (code, message, request)
    assert "Traceback" not in message and "Exception" not in message, message
    if code is not grpc.StatusCode.OK:
        assert message, code  # a refusal says why
    else:
        assert {o.name for o in response.outputs} <= {"predict", "proba"}


def alive(stub: Any) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert answer(stub, valid())[0] is grpc.StatusCode.OK


# -- a valid request, broken in one or two places ---------------------------------------------

MUTATIONS = st.sampled_from(["datatype", "shape", "truncate", "extend", "both", "drop_input", "drop_raw", "rename",
                             "model", "version", "output", "typed_wrong_list", "typed_count", "matrix", "empty",
                             "not_utf8", "parameter"])


@st.composite
def broken(draw: st.DrawFn) -> Any:
    request = valid(draw(st.integers(1, 5)))
    for kind in draw(st.lists(MUTATIONS, min_size=1, max_size=2)):
        i = draw(st.integers(0, len(request.inputs) - 1)) if request.inputs else 0
        if kind == "datatype" and request.inputs:
            request.inputs[i].datatype = draw(st.sampled_from([*DATATYPES, "FP128", "", "int64", "STRING"]))
        elif kind == "shape" and request.inputs:
            request.inputs[i].shape[:] = draw(st.lists(st.integers(-3, 2**40), max_size=4))
        elif kind == "truncate" and request.raw_input_contents:
            raw = request.raw_input_contents[min(i, len(request.raw_input_contents) - 1)]
            request.raw_input_contents[min(i, len(request.raw_input_contents) - 1)] = raw[:draw(st.integers(0, max(len(raw) - 1, 0)))]
        elif kind == "extend" and request.raw_input_contents:
            request.raw_input_contents[min(i, len(request.raw_input_contents) - 1)] += draw(st.binary(min_size=1, max_size=16))
        elif kind == "both" and request.inputs:
            request.inputs[i].contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
            request.inputs[i].contents.bytes_contents.append(b"x")
        elif kind == "drop_input" and request.inputs:
            del request.inputs[i]
        elif kind == "drop_raw" and request.raw_input_contents:
            del request.raw_input_contents[draw(st.integers(0, len(request.raw_input_contents) - 1))]
        elif kind == "rename" and request.inputs:
            request.inputs[i].name = draw(st.sampled_from(["", "x", "age", "tenure_months", "é", "a" * 300]))
        elif kind == "model":
            request.model_name = draw(st.sampled_from(["", "nope", "churn ", "CHURN", "churn/1", "ü" * 50]))
        elif kind == "version":
            request.model_version = draw(st.sampled_from(["0", "2", "x", "١", "9" * 30, "-1", " 1"]))
        elif kind == "output":
            request.outputs.add(name=draw(st.sampled_from(["logits", "", "predict", "proba"])))
        elif kind in ("typed_wrong_list", "typed_count", "matrix", "empty", "not_utf8"):
            request = typed(draw, kind)
        elif kind == "parameter":
            request.parameters["binary_data_output"].string_param = draw(st.text(max_size=5))
            request.outputs.add(name="proba").parameters["binary_data"].int64_param = draw(st.integers())
    return request


def typed(draw: st.DrawFn, kind: str) -> Any:
    """A request in typed contents, broken as ``kind`` says."""
    request = pb.ModelInferRequest(model_name="churn")
    for name, value in ROW.items():
        datatype = TYPES.get(name, "BYTES")
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1])
        if datatype == "BYTES":
            tensor.contents.bytes_contents.append(value.encode())
        elif datatype == "FP64":
            tensor.contents.fp64_contents.append(value)
        else:
            tensor.contents.int64_contents.append(value)
    tensor = request.inputs[draw(st.integers(0, len(ROW) - 1))]
    if kind == "typed_wrong_list":
        field = draw(st.sampled_from(LISTS))
        tensor.ClearField("contents")
        values = {"bool_contents": [True], "bytes_contents": [b"1"], "fp32_contents": [1.5], "fp64_contents": [1.5]}
        getattr(tensor.contents, field).extend(values.get(field, [1]))
    elif kind == "typed_count":
        tensor.shape[:] = [draw(st.sampled_from([0, 2, 3, 2**62]))]
    elif kind == "matrix":
        request.ClearField("inputs")
        width = draw(st.integers(1, 9))
        matrix = request.inputs.add(name="x", datatype="FP64", shape=[1, width])
        matrix.contents.fp64_contents.extend([1.0] * width)
    elif kind == "empty":
        for each in request.inputs:
            each.shape[:] = [0]
            each.ClearField("contents")
    else:
        tensor.datatype = "BYTES"
        tensor.ClearField("contents")
        tensor.contents.bytes_contents.append(draw(st.sampled_from([b"\xff\xfe", b"\xc3", b"a\x80b"])))
    return request


@FUZZ
@given(request=broken())
def test_a_broken_request_gets_a_status_that_says_why(stub: Any, request: Any) -> None:
    check(stub, request)


def test_the_server_lives_after_the_broken_requests(stub: Any) -> None:
    alive(stub)


# -- requests of arbitrary parts ----------------------------------------------------------------

TENSORS = st.fixed_dictionaries({
    "name": st.sampled_from([*ROW, "x", ""]),
    "datatype": st.sampled_from([*DATATYPES, "FP128", ""]),
    "shape": st.lists(st.integers(-2, 12), max_size=3),
    "list": st.sampled_from([None, *LISTS]),
    "values": st.lists(st.one_of(st.integers(-(2**31), 2**31 - 1), st.floats(allow_nan=True, allow_infinity=True),
                                 st.booleans(), st.binary(max_size=8)), max_size=12),
    "raw": st.one_of(st.none(), st.binary(max_size=64)),
})


def _fill(contents: Any, name: str, values: list[Any]) -> None:
    kinds = {"bool_contents": bool, "bytes_contents": bytes, "fp32_contents": float, "fp64_contents": float}
    wanted = kinds.get(name, int)
    target = getattr(contents, name)
    for value in values:
        if wanted is bytes:
            target.append(value if isinstance(value, bytes) else str(value).encode())
        elif wanted is bool:
            target.append(bool(value) if not isinstance(value, bytes) else bool(value))
        elif wanted is float:
            target.append(float(value) if not isinstance(value, bytes) else 0.5)
        elif not isinstance(value, (bytes, float)) and 0 <= int(value) < 2**31:
            target.append(int(value))  # fits every integer list, signed or not


@FUZZ
@given(model=st.sampled_from(["churn", "nope", ""]), version=st.sampled_from(["", "1", "7", "z"]),
       tensors=st.lists(TENSORS, max_size=9), extra_raw=st.lists(st.binary(max_size=16), max_size=2),
       outputs=st.lists(st.sampled_from(["predict", "proba", "nope", ""]), max_size=3))
def test_a_request_of_arbitrary_parts_gets_a_status(stub: Any, model: str, version: str, tensors: list[dict[str, Any]],
                                                    extra_raw: list[bytes], outputs: list[str]) -> None:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for spec in tensors:
        tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        if spec["list"] is not None:
            _fill(tensor.contents, spec["list"], spec["values"])
        if spec["raw"] is not None:
            request.raw_input_contents.append(spec["raw"])
    request.raw_input_contents.extend(extra_raw)
    for name in outputs:
        request.outputs.add(name=name)
    check(stub, request)


def test_the_server_lives_after_the_arbitrary_requests(stub: Any) -> None:
    alive(stub)


# -- bytes that are no message, and messages over the limit ---------------------------------

@FUZZ
@given(data=st.binary(max_size=256), method=st.sampled_from(["ModelInfer", "ModelMetadata", "ModelReady", "ServerLive",
                                                              "RepositoryIndex", "ModelStatistics"]))
def test_garbage_on_the_wire_is_refused_or_read(channel: grpc.Channel, data: bytes, method: str) -> None:
    call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")  # bytes in, bytes out
    try:
        call(data, timeout=30)
    except grpc.RpcError as error:
        # bytes that happen to parse ask for a model that is not there, or for inputs it cannot take
        assert error.code() in EXPECTED, (error.code(), error.details())
        assert "Traceback" not in (error.details() or "")


def test_a_message_over_the_limit_is_refused_before_it_is_read(stub: Any) -> None:
    big = valid(1)
    big.inputs.add(name="padding", datatype="BYTES", shape=[1])
    big.raw_input_contents.append(encode(np.array([b"x" * int(LIMIT_MB * 1024 * 1024)], dtype=np.object_), "BYTES")[1])
    code, message, _ = answer(stub, big)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, message
    just_under = valid(1)
    just_under.inputs.add(name="padding", datatype="BYTES", shape=[1])
    just_under.raw_input_contents.append(encode(np.array([b"x" * int(LIMIT_MB * 1024 * 1024 * 0.9)], dtype=np.object_),
                                                "BYTES")[1])
    assert answer(stub, just_under)[0] is grpc.StatusCode.OK  # a column the model does not take is left out
    alive(stub)
