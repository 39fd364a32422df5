"""The gateway's protocols side by side: OIP v2 over REST (JSON and binary tensors) and over gRPC, and MLServer's gRPC.

One ``rung serve`` with its gRPC port open serves the churn template's
classifier (``--model linear`` by default: the server's own cost shows);
each load runs in turn on loopback, at 8 and 64 connections, with
single-row requests and 100-row tensors (one tensor per column):

* REST JSON and REST binary (the binary tensor data extension, as
  ``tritonclient.http`` sends it by default): wrk;
* gRPC ``ModelInfer`` with ``raw_input_contents`` (as ``tritonclient.grpc``
  sends it): h2load (bench/_grpc_load.py says how), one call in flight per
  connection as wrk keeps one request. Answers are checked by rung's own
  count of successful gRPC requests (``rung_requests_total``). The
  ceiling of a Python gRPC server with this generator, a server that
  answers every call with the same bytes, is measured in the same run;
* MLServer's gRPC on the same MLflow model (``--mlserver PATH``, the
  ``mlserver`` script of a venv with ``mlserver`` and ``mlserver-mlflow``),
  with the same generator, when it is there.

    .venv/bin/python bench/protocols.py [--duration 10] [--model linear|boosted] [--mlserver /tmp/mlserver-venv/bin/mlserver]

Needs ``wrk`` and ``h2load`` (Debian packages ``wrk``, ``nghttp2-client``) and tritonclient (dev extra) to
build the gRPC request.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from _common import MODELS, console, rung_executable, table, trained_project
from _grpc_load import grpc_body, h2load, null_server
from gateway import ROW, TYPES, free_port, start, stop, wait_ready

LUA = """
wrk.method = "POST"
{headers}
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""
INFER = "/inference.GRPCInferenceService/ModelInfer"
NUMPY = {"INT64": "<i8", "FP64": "<f8"}


def columns(rows: int) -> dict[str, list[Any]]:
    return {name: [value] * rows for name, value in ROW.items()}


def oip_json(rows: int) -> bytes:
    return json.dumps({"inputs": [{"name": k, "shape": [rows], "datatype": TYPES.get(k, "BYTES"), "data": v}
                                  for k, v in columns(rows).items()]}).encode()


def raw_tensor(datatype: str, values: list[Any]) -> bytes:
    import numpy as np

    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return np.asarray(values, dtype=NUMPY[datatype]).tobytes()


def oip_binary(rows: int) -> tuple[bytes, int]:
    """The body tritonclient.http sends by default: a JSON header, then each tensor's bytes; and the header's length."""
    inputs, blobs = [], []
    for name, values in columns(rows).items():
        datatype = TYPES.get(name, "BYTES")
        blob = raw_tensor(datatype, values)
        inputs.append({"name": name, "shape": [rows], "datatype": datatype, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header = json.dumps({"inputs": inputs, "outputs": [{"name": "predict", "parameters": {"binary_data": True}},
                                                         {"name": "proba", "parameters": {"binary_data": True}}]}).encode()
    return header + b"".join(blobs), len(header)


def grpc_request(model: str, rows: int, *, pandas: bool = False) -> bytes:
    """A serialised ModelInferRequest with raw_input_contents (tritonclient.grpc's own messages)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    if pandas:  # MLServer's MLflow runtime decodes a request marked "pd" into a DataFrame
        request.parameters["content_type"].string_param = "pd"
    for name, values in columns(rows).items():
        datatype = TYPES.get(name, "BYTES")
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[rows])
        if pandas and datatype == "BYTES":
            tensor.parameters["content_type"].string_param = "str"
        request.raw_input_contents.append(raw_tensor(datatype, values))
    return request.SerializeToString()


def wrk(url: str, body: bytes, headers: dict[str, str], connections: int, duration: int, work: Path) -> dict[str, float]:
    name = f"body-{abs(hash((body, tuple(headers.items()))))}"
    (work / name).write_bytes(body)
    script = work / f"{name}.lua"
    script.write_text(LUA.format(body=work / name, headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)],
            "failed": int(non2xx.group(1)) if non2xx else 0}


def grpc_load(port: int, request: bytes, connections: int, duration: int, work: Path) -> dict[str, float]:
    body = work / f"grpc-{abs(hash(request))}.bin"
    body.write_bytes(grpc_body(request))
    return h2load(f"http://127.0.0.1:{port}{INFER}", body, connections, duration)


def _grpc_answered(port: int) -> int:
    """rung's count of gRPC predictions answered with success, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return int(sum(float(v) for v in re.findall(r'^rung_requests_total\{[^}]*protocol="grpc"[^}]*status="200"[^}]*\} ([\d.e+]+)$',
                                                  text, re.M)))


def check_grpc(target: str, request: bytes) -> None:
    """One call, decoded: a load that only collects errors would report nonsense."""
    import grpc
    from tritonclient.grpc import service_pb2

    with grpc.insecure_channel(target) as channel:
        answer = channel.unary_unary(INFER)(request, timeout=30)
    outputs = service_pb2.ModelInferResponse.FromString(answer).outputs
    if not outputs:
        raise SystemExit(f"{target} answered ModelInfer without outputs")


def mlserver_folder(work: Path, project: Path) -> tuple[Path, int, int]:
    model = next(p.parent for p in (project / ".rung" / "mlartifacts").rglob("MLmodel"))
    folder = work / "mlserver"
    (folder / "churn").mkdir(parents=True)
    http, grpc_port = free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({"http_port": http, "grpc_port": grpc_port, "metrics_port": free_port(),
                                                      # its worker pool dies at start with this uvloop; in-process models work
                                                      "parallel_workers": 0}))
    (folder / "churn" / "model-settings.json").write_text(json.dumps(
        {"name": "churn", "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": str(model)}}))
    return folder, http, grpc_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per load")
    parser.add_argument("--model", choices=sorted(MODELS), default="linear")
    parser.add_argument("--mlserver", default="/tmp/mlserver-venv/bin/mlserver", help="the mlserver script of its own venv")
    parser.add_argument("--connections", default="8,64")
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install {package}")
    conns = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rung-bench-protocols-"))
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    try:
        with console.status("creating and training the churn project"):
            project = trained_project(work, model=args.model)
        port, grpc_port = free_port(), free_port()
        gateway = start([rung_executable(), "serve", "--port", str(port), "--grpc-port", str(grpc_port)], project,
                        {"RUNG_GRPC_PORT": str(grpc_port)})
        try:
            with console.status("rung serve: starting"):
                wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", gateway)
            url = f"http://127.0.0.1:{port}/v2/models/churn/infer"
            for rows in (1, 100):
                binary, header = oip_binary(rows)
                request = grpc_request("churn", rows)
                check_grpc(f"127.0.0.1:{grpc_port}", request)
                for c in conns:
                    with console.status(f"rung, {rows} row(s), {c} connections"):
                        results[("rung · REST JSON", rows, c)] = wrk(url, oip_json(rows), {"Content-Type": "application/json"},
                                                                      c, args.duration, work)
                        results[("rung · REST binary", rows, c)] = wrk(
                            url, binary, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header)},
                            c, args.duration, work)
                        before = _grpc_answered(port)
                        results[("rung · gRPC", rows, c)] = grpc_load(grpc_port, request, c, args.duration, work)
                        answered = _grpc_answered(port) - before
                        results[("rung · gRPC", rows, c)]["failed"] += max(0, results[("rung · gRPC", rows, c)]["requests"] - answered)
        finally:
            stop(gateway)
        # the generator's ceiling: a server that answers at once, with an answer of rung's size
        for rows in (1, 100):
            answer = _rung_sized_answer(rows)
            null_port = free_port()
            ready = multiprocessing.get_context("spawn").Event()
            server = multiprocessing.get_context("spawn").Process(target=null_server, args=(null_port, answer, ready), daemon=True)
            server.start()
            ready.wait(30)
            try:
                for c in conns:
                    results[("null grpc.aio server (ceiling)", rows, c)] = grpc_load(null_port, grpc_request("churn", rows), c,
                                                                                      args.duration, work)
            finally:
                server.kill()
        if Path(args.mlserver).exists():
            folder, http, mls_grpc = mlserver_folder(work, project)
            env = {"PATH": f"{Path(args.mlserver).parent}:{os.environ['PATH']}"}
            mlserver = start([args.mlserver, "start", str(folder)], folder, env)
            try:  # MLServer not starting leaves its rows out, not the table
                with console.status("MLServer: starting"):
                    wait_ready(f"http://127.0.0.1:{http}/v2/models/churn/ready", mlserver, timeout=300)
                for rows in (1, 100):
                    request = grpc_request("churn", rows, pandas=True)
                    check_grpc(f"127.0.0.1:{mls_grpc}", request)
                    for c in conns:
                        with console.status(f"MLServer gRPC, {rows} row(s), {c} connections"):
                            results[("MLServer · gRPC", rows, c)] = grpc_load(mls_grpc, request, c, args.duration, work)
                    check_grpc(f"127.0.0.1:{mls_grpc}", request)
            except (SystemExit, Exception) as exc:
                console.print(f"[yellow]MLServer left out: {exc}")
            finally:
                stop(mlserver)
        else:
            console.print(f"[yellow]MLServer left out: no {args.mlserver} (pip install mlserver mlserver-mlflow in a venv of its own)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    out = table(f"OIP v2 by protocol (model: {MODELS[args.model]}; {args.duration} s a load, loopback; "
                f"load average before the table {load[0]:.2f})",
                ["server · protocol", "rows", "conn", "req/s", "rows/s", "p99", "failed", "× REST JSON"], left=3)
    for (name, rows, c), r in results.items():
        base = results.get(("rung · REST JSON", rows, c), {}).get("rps")
        out.add_row(name, str(rows), str(c), f"{r['rps']:,.0f}", f"{r['rps'] * rows:,.0f}", f"{r['p99_ms']:.1f} ms",
                    str(int(r["failed"])), f"{r['rps'] / base:.2f}×" if base else "–")
    console.print(out)
    for c in conns:
        grpc_, json_ = results.get(("rung · gRPC", 1, c)), results.get(("rung · REST JSON", 1, c))
        binary_, json100 = results.get(("rung · REST binary", 100, c)), results.get(("rung · REST JSON", 100, c))
        if grpc_ and json_:
            verdict = "pass" if grpc_["rps"] >= 1.2 * json_["rps"] else "FAIL"
            console.print(f"{verdict}  gRPC >= 1.2x REST JSON, single rows, {c} conn: {grpc_['rps'] / json_['rps']:.2f}x")
        if binary_ and json100:
            verdict = "pass" if binary_["rps"] >= 1.5 * json100["rps"] else "FAIL"
            console.print(f"{verdict}  REST binary >= 1.5x REST JSON, 100 rows, {c} conn: {binary_['rps'] / json100['rps']:.2f}x")


def _rung_sized_answer(rows: int) -> bytes:
    from tritonclient.grpc import service_pb2

    answer = service_pb2.ModelInferResponse(model_name="churn", model_version="1", id="0123456789abcdef")
    for name, datatype in (("predict", "INT64"), ("proba", "FP64")):
        answer.outputs.add(name=name, datatype=datatype, shape=[rows])
        answer.raw_output_contents.append(b"\0" * 8 * rows)
    return answer.SerializeToString()


if __name__ == "__main__":
    main()
