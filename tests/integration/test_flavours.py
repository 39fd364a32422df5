"""PyTorch and ONNX models a team trains itself, through the whole loop from the CLI; their files are guarded.

Each test writes a repository with a CSV and a ``model.py`` whose ``fit``
trains a tiny model inside the test (nothing is downloaded): a PyTorch MLP,
and an ONNX graph (``MatMul`` + ``Add`` + ``Softmax`` built with
``onnx.helper`` from a fitted linear model). ``rung init --data ... --train
model.py:fit`` sets rung up around it, and the version goes run ▸ certify ▸
serve ▸ a second version canaried to 100 % ▸ monitor ▸ retrain. A tampered
ONNX file is refused before it is loaded, and ``rung models`` says which
flavours deserialise with pickle. ``serve.device: cuda`` without a GPU is
refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import one_line_error, rung_cli
from tests.loop_walk import fast_loop, walk_the_loop

pytestmark = pytest.mark.slow

TORCH_FIT = '''\
import torch


class MLP(torch.nn.Module):
    """Two layers; one logit per class (rung applies the softmax)."""

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
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), target).backward()
        optimiser.step()
    return model
'''

ONNX_FIT = '''\
import numpy as np
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression


def fit(X, y, params=None):
    """A linear classifier fitted here, written out as an ONNX graph: softmax(x @ W + b)."""
    linear = LogisticRegression(max_iter=500).fit(X.to_numpy(dtype="float32"), y)
    weights = linear.coef_.T.astype("float32")
    bias = linear.intercept_.astype("float32")
    k, classes = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "churn_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [k, classes], weights.flatten().tolist()),
                     helper.make_tensor("B", TensorProto.FLOAT, [classes], bias.tolist())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
'''


PYFUNC_FIT = '''\
import mlflow.pyfunc
import numpy as np
import pandas as pd


class NearestCentroid(mlflow.pyfunc.PythonModel):
    """Any Python a team writes: a distance to each class's mean, as probabilities by class name."""

    def __init__(self, centroids):
        self.centroids = centroids

    def predict(self, context, model_input, params=None):
        names = list(self.centroids)
        distance = np.stack([((model_input.to_numpy() - self.centroids[n]) ** 2).sum(axis=1) for n in names], axis=1)
        weights = np.exp(-distance / distance.mean())
        return pd.DataFrame(weights / weights.sum(axis=1, keepdims=True), columns=names)


def fit(X, y, params=None):
    return NearestCentroid({c: X[y == c].mean().to_numpy() for c in sorted(y.unique())})
'''


def _data(rows: int, seed: int = 0) -> pd.DataFrame:
    """Three numeric inputs and a three-class text target that depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"usage": rng.normal(50, 15, rows), "tenure": rng.integers(1, 72, rows).astype(float),
                          "calls": rng.poisson(3, rows).astype(float)})
    score = (frame["usage"] - 50) / 15 - (frame["tenure"] - 36) / 20 + rng.normal(0, 0.5, rows)
    frame["plan"] = np.select([score < -0.5, score > 0.5], ["basic", "premium"], "standard")
    return frame


def _repository(root: Path, code: str, rows: int = 400) -> pd.DataFrame:
    root.mkdir(parents=True)
    (root / "model.py").write_text(code)
    frame = _data(rows)
    frame.to_csv(root / "data.csv", index=False)
    made = rung_cli("init", "--data", "data.csv", "--target", "plan", "--train", "model.py:fit", "--no-git", cwd=root)
    assert made.returncode == 0, made.stderr
    assert "task: classification" in made.stdout, made.stdout
    return frame


def _rows(frame: pd.DataFrame) -> list[dict[str, object]]:
    return frame.drop(columns=["plan"]).head(30).to_dict(orient="records")


def _loop(root: Path, frame: pd.DataFrame, flavor: str) -> None:
    fast_loop(root)
    ran = rung_cli("run", cwd=root)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    models = json.loads(rung_cli("models", "--json", cwd=root).stdout)
    assert [m["flavor"] for m in models] == [flavor]
    mlmodel = next((root / ".rung").rglob("MLmodel")).read_text()
    assert "classes:" in mlmodel and "- basic" in mlmodel  # the output column order travels with the model
    # A first check marks where monitoring starts, so the walk's check covers every window since (not only
    # the last one closed, which on a busy machine may hold none of its requests).
    assert rung_cli("monitor", "repo", "--json", cwd=root).returncode == 0
    walk = walk_the_loop(root, "repo", _rows(frame), new_data=lambda: _data(len(frame), seed=1).to_csv(root / "data.csv", index=False))
    assert walk.certified
    assert walk.versions_served >= {1, 2}
    assert walk.rollout["state"] == "promoted"
    answers = [a for a in walk.answers if "predictions" in a]
    assert answers and {a["predictions"][0] for a in answers} <= {"basic", "standard", "premium"}
    assert len({a["predictions"][0] for a in answers}) > 1, "the model answers one class to every row"
    # `rung monitor` lists the windows closed since the last check; the controller checks them too, so the
    # windows it took first are read from the store: requests to each version were monitored.
    from rung.project import Project

    with Project.open(root) as project:
        monitored = {w.version for w in project.store.windows("repo")}
    assert walk.windows or monitored, "no monitoring window was recorded"
    assert 2 in monitored, f"no monitoring window of repo:2 (windows of versions {sorted(monitored)})"
    assert walk.retrained


@pytest.mark.timeout(600)  # a dozen CLI processes that each import PyTorch: minutes on a small, busy machine
def test_a_pytorch_mlp_goes_round_the_loop(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install -e '.[torch]' (CI installs it); "
                                        "the PyTorch loop did not run")
    root = tmp_path / "repo"
    frame = _repository(root, TORCH_FIT)
    _loop(root, frame, "pytorch")
    table = rung_cli("models", cwd=root)
    assert table.returncode == 0 and "repo:1 (pytorch)" in table.stdout and "pickle" in table.stdout, table.stdout
    # The module's class travelled by value: the version loads without the repository's model.py.
    (root / "model.py").unlink()
    from rung.project import Project

    with Project.open(root) as project:
        model = project.models_loader.load(project.model_version("repo:1"))
        outputs = model.predict(model.frame(frame.drop(columns=["plan"]).head(20)))
    assert model.device == "cpu" and set(outputs["predict"]) <= {"basic", "premium", "standard"}


@pytest.mark.timeout(600)
def test_an_onnx_model_goes_round_the_loop(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra: pip install -e '.[dev]'")
    root = tmp_path / "repo"
    frame = _repository(root, ONNX_FIT)
    _loop(root, frame, "onnx")
    listed = json.loads(rung_cli("models", "--json", cwd=root).stdout)
    assert listed and not any(m["pickle"] for m in listed)


def test_a_tampered_onnx_file_is_refused_before_it_is_loaded(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra: pip install -e '.[dev]'")
    root = tmp_path / "repo"
    _repository(root, ONNX_FIT, rows=300)
    ran = rung_cli("run", cwd=root)
    assert ran.returncode == 0, ran.stderr
    try:
        import onnxruntime

        gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        gpu = False
    if not gpu:  # serve.device: cuda where there is no GPU is refused with what to write instead
        config = (root / "rung.yaml").read_text()
        (root / "rung.yaml").write_text(config + "\nserve:\n  device: cuda\n")
        one_line_error(rung_cli("certify", "repo:1", cwd=root), "serve.device is cuda", "auto or cpu")
        (root / "rung.yaml").write_text(config)
    files = list((root / ".rung").rglob("*.onnx"))
    assert files, "no ONNX file was registered"
    for file in files:  # the registry's copy (and the verified cache, if a load made one)
        data = bytearray(file.read_bytes())
        data[-1] ^= 0xFF
        file.write_bytes(bytes(data))
    one_line_error(rung_cli("certify", "repo:1", cwd=root), "repo:1", "integrity")
    report = rung_cli("certify", "repo:1", "--json", cwd=root)
    assert report.returncode != 0
    integrity = [c for c in json.loads(report.stdout)["checks"] if c["name"] == "integrity"]
    assert integrity and integrity[0]["status"] == "failed" and "sha256" in json.dumps(integrity[0]), integrity
    assert "model.onnx" in json.dumps(integrity[0])  # the file that changed is named


def test_a_python_model_registers_certifies_and_is_marked_as_pickled(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    frame = _repository(root, PYFUNC_FIT, rows=300)
    ran = rung_cli("run", cwd=root)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    listed = json.loads(rung_cli("models", "--json", cwd=root).stdout)
    assert [(m["flavor"], m["pickle"]) for m in listed] == [("pyfunc", True)]
    (root / "model.py").write_text("raise RuntimeError('edited away')\n")  # the class travelled by value
    certified = rung_cli("certify", "repo:1", "--json", cwd=root)
    assert certified.returncode in (0, 1), certified.stderr
    checks = {c["name"]: c["status"] for c in json.loads(certified.stdout)["checks"]}
    assert checks["integrity"] == "passed", certified.stdout

    from rung.project import Project

    with Project.open(root) as project:
        model = project.models_loader.load(project.model_version("repo:1"))
        outputs = model.predict(model.frame(frame.drop(columns=["plan"]).head(50)))
    assert set(outputs["predict"]) <= {"basic", "premium", "standard"} and len(set(outputs["predict"])) > 1
    assert ((outputs["proba"] > 0) & (outputs["proba"] <= 1)).all()
