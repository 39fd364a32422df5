"""The peers of ``rung serve`` in ``bench/peers``: how each is installed, fed the model, started and asked.

Every server serves the churn template's boosted pipeline from one
training run, each in the form it takes:

* ``rung serve`` the project itself;
* ``mlflow models serve`` the champion's MLflow model directory, downloaded
  from the project's registry (``--env-manager local``);
* MLServer (``mlserver-sklearn``), LitServe (defaults, and with its batching)
  and a hand-written FastAPI endpoint a joblib of the same pipeline;
* the raw-ASGI hello-world no model at all: the ceiling of Python on uvicorn.

Each peer runs from its own venv, ``~/.cache/rung-bench-peers/<venv>``,
made once with ``python -m venv`` and ``pip install`` and reused while its
requirements stay the same. The scikit-learn, numpy and pandas of rung's
venv are pinned in each, so the pickle loads to the same pipeline; mlflow
(and skops, its serialisation here) is the version of rung's venv. The
ceiling runs on rung's own venv: the uvicorn, uvloop and httptools that
rung serves on. A venv that cannot be made is a reason to skip its peers
(:class:`Unavailable`), not a crash.

Model servers run with ``OMP_NUM_THREADS=1``, as rung's model workers do:
a single row through OpenMP threads costs CPU and no time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import TYPES, free_port

CACHE = Path.home() / ".cache" / "rung-bench-peers"
SERVERS = Path(__file__).resolve().parent / "servers"
PINNED = ("scikit-learn", "numpy", "pandas")
SHOWN = {"mlflow", "skops", "mlserver", "mlserver-sklearn", "litserve", "fastapi", "starlette", "uvicorn", "uvloop",
         "httptools", "gunicorn", "scikit-learn", "numpy", "pandas", "joblib", "pydantic"}


class Unavailable(Exception):
    """A peer that cannot be run here (its venv failed to install, it did not start): skipped, with the reason."""


@dataclass(frozen=True)
class Exports:
    """The one trained pipeline, in each form a server loads."""

    project: Path  # the trained churn project: rung serve
    mlflow_model: Path  # the champion's MLflow model directory: mlflow models serve
    pickle: Path  # joblib of the same pipeline: MLServer, LitServe, FastAPI


def export(project: Path, work: Path) -> tuple[Exports, Any]:
    """Download the champion of the project's MLflow registry and dump its pipeline with joblib; returns the pipeline too."""
    import joblib
    import mlflow
    import mlflow.sklearn

    uri = f"sqlite:///{project / '.rung' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    target = work / "mlflow-model"
    target.mkdir()
    found = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{project.name}@champion", dst_path=str(target)))
    pipeline = mlflow.sklearn.load_model(str(found))
    pickle = work / "model.joblib"
    joblib.dump(pipeline, pickle)
    return Exports(project=project, mlflow_model=found, pickle=pickle), pipeline


# -- venvs ------------------------------------------------------------------------------------------------------------

def _pins() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in PINNED]


VENVS: dict[str, Callable[[], list[str]]] = {
    "mlflow": lambda: [f"mlflow=={importlib.metadata.version('mlflow')}", f"skops=={importlib.metadata.version('skops')}",
                       *_pins()],
    # MLServer 1.7's model workers call asyncio.get_event_loop() with no loop set, which uvloop 0.22 refuses
    "mlserver": lambda: ["mlserver", "mlserver-sklearn", "uvloop<0.22", "joblib", *_pins()],
    "litserve": lambda: ["litserve", "joblib", *_pins()],
    "fastapi": lambda: ["fastapi", "uvicorn[standard]", "joblib", *_pins()],
}


def install(venv: str | None, log: Callable[[str], None]) -> Path:
    """The bin folder of ``venv`` (``None``: rung's own), made and filled on first use; raises :class:`Unavailable`."""
    if venv is None:
        return Path(sys.executable).parent
    home = CACHE / venv
    requirements = VENVS[venv]()
    marker = home / "rung-bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted and (home / "bin" / "python").exists():
        return home / "bin"
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    log(f"installing {venv} into {home}: {' '.join(requirements)}")
    with (CACHE / f"{venv}-install.log").open("w") as out:
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [[base, "-m", "venv", str(home)],
                 [str(home / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *requirements]]
        for step in steps:
            try:
                subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                shutil.rmtree(home, ignore_errors=True)
                raise Unavailable(f"{venv} venv: {' '.join(step[:4])} failed ({exc}); see {out.name}: "
                                  f"{_tail(Path(out.name))}") from exc
    marker.write_text(wanted)
    return home / "bin"


def installed(bin_dir: Path) -> dict[str, str]:
    """Versions of the packages that matter here, as installed in the venv of ``bin_dir``."""
    listing = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"],
        capture_output=True, text=True, check=True).stdout
    return {name: v for name, v in sorted(json.loads(listing).items()) if name.lower().replace("_", "-") in SHOWN}


def _tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(line.strip() for line in path.read_text().splitlines()[-lines:])
    return ""


# -- what each server is asked, and how it answers ----------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    labels: list[Any]
    probabilities: list[Any] | None  # per row, P(positive) or one per class; None: the server gives labels only


def records(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """MLflow's scoring body (rung, mlflow, LitServe and FastAPI here)."""
    return {"dataframe_records": rows}


def from_records(answer: dict[str, Any]) -> Answer:
    return Answer(answer["predictions"], answer.get("probabilities"))


def v2_pandas(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An Open Inference Protocol (V2) body that MLServer decodes to a DataFrame: one input per column, both outputs."""
    inputs = []
    for column in rows[0]:
        datatype = TYPES.get(column, "BYTES")
        one = {"name": column, "shape": [len(rows)], "datatype": datatype, "data": [row[column] for row in rows]}
        inputs.append(one | ({"parameters": {"content_type": "str"}} if datatype == "BYTES" else {}))
    return {"parameters": {"content_type": "pd"}, "inputs": inputs,
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}


def from_v2(answer: dict[str, Any]) -> Answer:
    outputs = {output["name"]: output for output in answer["outputs"]}
    proba = outputs.get("predict_proba")
    probabilities = None
    if proba is not None:
        width = proba["shape"][1]
        probabilities = [proba["data"][i:i + width] for i in range(0, len(proba["data"]), width)]
    return Answer(outputs["predict"]["data"], probabilities)


# -- the servers --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """What a peer's command is made of: its venv, the model, its port, a folder of its own, extra arguments."""

    bin: Path
    exports: Exports
    port: int
    folder: Path
    extra: list[str]


@dataclass(frozen=True)
class Peer:
    key: str  # its name for --only
    label: str  # its name in the tables
    venv: str | None  # the venv under CACHE it runs from; None: rung's own
    command: Callable[[Launch], tuple[list[str], Path]]  # the command and the folder it runs in
    ready: str  # answers 2xx once the model is loaded
    path: str  # where predictions are asked
    body: Callable[[list[dict[str, Any]]], dict[str, Any]]
    answer: Callable[[dict[str, Any]], Answer] | None  # None: serves no model (the ceiling)


def _rung(at: Launch) -> tuple[list[str], Path]:
    return [str(at.bin / "rung"), "serve", "--port", str(at.port), "--grpc-port", "0", *at.extra], at.exports.project


def _mlflow(at: Launch) -> tuple[list[str], Path]:
    return ([str(at.bin / "mlflow"), "models", "serve", "-m", str(at.exports.mlflow_model), "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(at.port)], at.folder)


def _mlserver(at: Launch) -> tuple[list[str], Path]:
    """``mlserver start`` on a folder of its own: settings.json (HTTP port, gRPC on a free one, no metrics) and the model."""
    settings = {"host": "127.0.0.1", "http_port": at.port, "grpc_port": free_port(), "metrics_endpoint": None}
    (at.folder / "settings.json").write_text(json.dumps(settings))
    model = {"name": "churn", "implementation": "mlserver_sklearn.SKLearnModel",
             "parameters": {"uri": str(at.exports.pickle)}}
    (at.folder / "model-settings.json").write_text(json.dumps(model))
    return [str(at.bin / "mlserver"), "start", str(at.folder)], at.folder


def _litserve(*flags: str) -> Callable[[Launch], tuple[list[str], Path]]:
    def command(at: Launch) -> tuple[list[str], Path]:
        return [str(at.bin / "python"), str(SERVERS / "litserve_app.py"), str(at.exports.pickle), str(at.port), *flags], at.folder
    return command


def _fastapi(at: Launch) -> tuple[list[str], Path]:
    return [str(at.bin / "python"), str(SERVERS / "fastapi_app.py"), str(at.exports.pickle), str(at.port)], at.folder


def _ceiling(at: Launch) -> tuple[list[str], Path]:
    return [str(at.bin / "python"), str(SERVERS / "asgi_hello.py"), str(at.port), *at.extra], at.folder


RUNG = "rung"
CEILING = "asgi"
PEERS = [
    Peer(RUNG, "rung serve", None, _rung, "/v2/health/ready", "/invocations", records, from_records),
    Peer("mlflow", "mlflow models serve", "mlflow", _mlflow, "/ping", "/invocations", records, from_records),
    Peer("mlserver", "MLServer (mlserver-sklearn)", "mlserver", _mlserver, "/v2/models/churn/ready",
         "/v2/models/churn/infer", v2_pandas, from_v2),
    Peer("litserve", "LitServe (defaults)", "litserve", _litserve(), "/health", "/predict", records, from_records),
    Peer("litserve-batch", "LitServe (batching 64, 1 ms)", "litserve", _litserve("--batch"), "/health", "/predict",
         records, from_records),
    Peer("fastapi", "FastAPI endpoint", "fastapi", _fastapi, "/ping", "/invocations", records, from_records),
    Peer(CEILING, "raw ASGI hello-world (ceiling)", None, _ceiling, "/", "/", records, None),
]


def environment(bin_dir: Path) -> dict[str, str]:
    """The environment of a server: no ``RUNG_*`` variable, its venv first on PATH, one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNG_") and k != "VIRTUAL_ENV"}
    return env | {"PATH": f"{bin_dir}:{env.get('PATH', '')}", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
