"""A small PyTorch MLP and an ONNX model served by rung and by MLServer: requests/s and p99, same models, same run.

Each model is trained by a team's own ``fit`` in a project ``rung init
--data ... --train model.py:fit`` made (the code of
``tests/integration/test_flavours.py``: a 3-input MLP with 16 hidden units,
and softmax(x @ W + b) as an ONNX graph), registered by ``rung run``, then
served on loopback, one server after the other, loaded by wrk with
single-row MLflow-format requests (``{"dataframe_records": [row]}`` on
``/invocations``) over 8 connections:

* ``rung serve`` (routing, metrics and the request log on; one worker
  process per version; the predictor of :mod:`rung.models.predictors`);
* MLServer with its MLflow runtime on the very same registered model
  directory (pyfunc, ``parallel_workers: 0``: its worker processes fail to start
  with the uvloop this installs, ``There is no current event loop``).

MLServer is installed in a separate virtualenv so it cannot disturb
rung's (``--mlserver /tmp/mlserver-venv/bin/mlserver``); without it, rung
alone is measured.

    .venv/bin/python bench/flavours_serving.py [--duration 10] [--mlserver PATH] [--models pytorch,onnx]

Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from _common import console, rung_executable, table
from gateway import free_port, start, stop, wait_ready, wrk

TORCH_FIT = '''\
import torch


class MLP(torch.nn.Module):
    def __init__(self, inputs, classes, hidden=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)


def fit(X, y, params=None):
    torch.manual_seed(0)
    classes = sorted(y.unique())
    target = torch.tensor(y.map({c: i for i, c in enumerate(classes)}).to_numpy())
    inputs = torch.tensor(X.to_numpy(dtype="float32"))
    model = MLP(inputs.shape[1], len(classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), target).backward()
        optimiser.step()
    return model
'''

ONNX_FIT = '''\
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression


def fit(X, y, params=None):
    linear = LogisticRegression(max_iter=500).fit(X.to_numpy(dtype="float32"), y)
    weights = linear.coef_.T.astype("float32")
    bias = linear.intercept_.astype("float32")
    k, classes = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [k, classes], weights.flatten().tolist()),
                     helper.make_tensor("B", TensorProto.FLOAT, [classes], bias.tolist())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
'''

CODE = {"pytorch": TORCH_FIT, "onnx": ONNX_FIT}
ROW = {"usage": 51.9, "tenure": 12.0, "calls": 3.0}


def data(rows: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"usage": rng.normal(50, 15, rows), "tenure": rng.integers(1, 72, rows).astype(float),
                          "calls": rng.poisson(3, rows).astype(float)})
    score = (frame["usage"] - 50) / 15 - (frame["tenure"] - 36) / 20 + rng.normal(0, 0.5, rows)
    frame["plan"] = np.select([score < -0.5, score > 0.5], ["basic", "premium"], "standard")
    return frame


def project(work: Path, flavour: str) -> Path:
    root = work / flavour
    root.mkdir()
    (root / "model.py").write_text(CODE[flavour])
    data().to_csv(root / "data.csv", index=False)
    rung = rung_executable()
    for args in (["init", "--data", "data.csv", "--target", "plan", "--train", "model.py:fit", "--no-git", "bench"],
                 ["run"]):
        done = subprocess.run([rung, *args], cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"rung {' '.join(args)} failed for the {flavour} project: {done.stderr[-2000:]}")
    return root


def model_dir(root: Path) -> Path:
    """The registered version's model folder, as MLflow stored it."""
    return next(p.parent for p in (root / ".rung" / "mlartifacts").rglob("MLmodel"))


def mlserver_repository(work: Path, flavour: str, model: Path, workers: int) -> tuple[Path, int]:
    folder = work / f"mlserver-{flavour}-{workers}"
    (folder / "bench").mkdir(parents=True)
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                                                      "parallel_workers": workers}))
    (folder / "bench" / "model-settings.json").write_text(json.dumps(
        {"name": "bench", "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": str(model)}}))
    return folder, port


def check_answer(url: str) -> str:
    request = urllib.request.Request(url, data=json.dumps({"dataframe_records": [ROW]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()[:120]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--mlserver", default="/tmp/mlserver-venv/bin/mlserver", help="the mlserver script of its own venv")
    parser.add_argument("--models", default="pytorch,onnx")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    mlserver = args.mlserver if Path(args.mlserver).exists() else None
    work = Path(tempfile.mkdtemp(prefix="rung-bench-flavours-"))
    body = work / "mlflow.json"
    body.write_text(json.dumps({"dataframe_records": [ROW]}))
    results: list[tuple[str, str, dict[str, float]]] = []
    try:
        for flavour in args.models.split(","):
            with console.status(f"{flavour}: training and registering"):
                root = project(work, flavour)
            port = free_port()
            gateway = start([rung_executable(), "serve", "--port", str(port)], root)
            try:
                wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", gateway)
                console.print(f"{flavour} · rung answers {check_answer(f'http://127.0.0.1:{port}/invocations')}")
                with console.status(f"{flavour}: rung serve, {args.connections} connections, {args.duration} s"):
                    results.append((flavour, "rung serve", wrk(f"http://127.0.0.1:{port}/invocations", body,
                                                               args.connections, args.duration, work)))
            finally:
                stop(gateway)
            if mlserver is None:
                continue
            for workers in (0,):  # parallel_workers >= 1: MLServer 1.7.1 workers die on uvloop 0.21 (no current event loop)
                folder, port = mlserver_repository(work, flavour, model_dir(root), workers)
                log = open(folder / "mlserver.log", "w")
                server = subprocess.Popen([mlserver, "start", str(folder)], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "PATH": f"{Path(mlserver).parent}:{os.environ['PATH']}"},
                                          start_new_session=True)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", server)
                    time.sleep(1)
                    url = f"http://127.0.0.1:{port}/invocations"
                    try:
                        console.print(f"{flavour} · MLServer answers {check_answer(url)}")
                    except OSError as exc:
                        raise SystemExit(f"MLServer did not answer ({exc}): {(folder / 'mlserver.log').read_text()[-3000:]}") from exc
                    with console.status(f"{flavour}: MLServer ({workers} workers), {args.connections} connections"):
                        results.append((flavour, f"MLServer 1.7 mlflow runtime, parallel_workers {workers}",
                                        wrk(url, body, args.connections, args.duration, work)))
                finally:
                    stop(server)
                    log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = table(f"Single-row /invocations, wrk {args.connections} connections, {args.duration} s each",
                ["model", "server", "req/s", "p99 ms", "failed"], left=2)
    for flavour, server, r in results:
        out.add_row(flavour, server, f"{r['rps']:,.0f}", f"{r['p99_ms']:.2f}", str(r["failed"]))
    console.print(out)
    if mlserver is None:
        console.print(f"[yellow]MLServer not found at {args.mlserver}[/]: rung alone was measured "
                      "(python -m venv /tmp/mlserver-venv && /tmp/mlserver-venv/bin/pip install mlserver mlserver-mlflow torch onnxruntime)")


if __name__ == "__main__":
    main()
