"""The gateway's request path in one process, without HTTP: decode, check, predict, encode, in µs per request.

What a ``rung serve`` request costs besides the network and the event
loop, stage by stage, for the churn template's classifier (the boosted
trees and the linear model of ``bench/_common.py``) served as the gateway
serves it: the registered version loaded through the verified cache and
its compiled route checked against the training rows. Two bodies, each
with 1 and 100 rows taken from the training data:

* MLflow scoring ``dataframe_split`` (``/invocations``), answered with
  predictions and probabilities;
* OIP v2 JSON, one tensor per column (``/v2/models/{name}/infer``).

Each stage is timed alone over ``--iterations`` calls (``parse``: the
bytes to raw columns; ``check``: :func:`~rung.serving.protocols.check_columns`;
``predict``: the compiled route; ``encode``: the answer's bytes), and the
whole path once more end to end. Cases alternate within each round, and
each round prints the load average; the table keeps each figure's median
over the rounds. OpenMP and BLAS get one thread, as in the gateway's
prediction threads (``serve.model_threads``).

    .venv/bin/python bench/predict_path.py [--iterations 2000] [--rounds 3] [--work DIR] [--profile CASE]

``--work DIR`` keeps the trained projects there for the next run;
``--profile mlflow-100-boosted`` (protocol-rows-model) prints cProfile's
top functions of that case's whole path instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from _common import MODELS, console, table, trained_project
from threadpoolctl import threadpool_limits

from rung.models.compiled import compile_model
from rung.models.loaded import LoadedModel
from rung.models.loader import training_inputs
from rung.project import Project
from rung.serving.batching import predict_columns
from rung.serving.http import parse_json
from rung.serving.oip import Asked, asked_outputs, infer_body, parse_oip, split_body
from rung.serving.protocols import check_columns, parse_mlflow, to_jsonable

TYPES = {"tenure_months": "INT64", "monthly_charges": "FP64", "support_calls": "INT64", "age": "INT64"}  # as bench/gateway.py
STAGES = ("parse", "check", "predict", "encode", "total")
NOTHING_ASKED = Asked([], {})


def load_champion(root: Path) -> tuple[LoadedModel, pd.DataFrame]:
    """The project's newest version, loaded and compiled as the gateway's pool does it, and its training rows."""
    with Project.open(root) as project:
        record = project.store.list_model_versions(project.settings.model_name)[0]
        model = project.models_loader.load(record)
        sample = training_inputs(record, project.artifacts, project.settings.data.target)
    model.compiled, why = compile_model(model, sample)
    if model.compiled is None:
        raise SystemExit(f"{model.ref} did not compile: {why}")
    return model, sample


def rows_of(model: LoadedModel, sample: pd.DataFrame, count: int) -> dict[str, list[Any]]:
    """``count`` training rows as a client sends them: Python values per column, in the signature's order."""
    frame = sample.sample(count, random_state=1)
    return {c.name: frame[c.name].tolist() for c in model.columns}


def mlflow_body(columns: dict[str, list[Any]]) -> bytes:
    names = list(columns)
    return orjson.dumps({"dataframe_split": {"columns": names, "data": [list(row) for row in zip(*columns.values(), strict=True)]}})


def oip_body(columns: dict[str, list[Any]]) -> bytes:
    return orjson.dumps({"inputs": [{"name": name, "shape": [len(values)], "datatype": TYPES.get(name, "BYTES"), "data": values}
                                    for name, values in columns.items()]})


@dataclass
class Case:
    """One protocol, row count and model: each stage as a call on the previous stage's result."""

    name: str
    stages: dict[str, Callable[[], Any]]


def _case(name: str, model: LoadedModel, parse: Callable[[], tuple[Any, Asked]],
          encode: Callable[[dict[str, Any], Asked], bytes]) -> Case:
    """The stages of one protocol: ``parse`` gives the raw columns and the outputs asked; ``encode`` the answer."""
    signature = model.columns
    raw, asked = parse()
    checked = check_columns(raw, signature)
    outputs = predict_columns(model, checked)

    def total() -> bytes:
        raw, asked = parse()
        return encode(predict_columns(model, check_columns(raw, signature)), asked)

    return Case(name, {"parse": parse, "check": lambda: check_columns(raw, signature),
                       "predict": lambda: predict_columns(model, checked), "encode": lambda: encode(outputs, asked),
                       "total": total})


def mlflow_case(name: str, model: LoadedModel, content: bytes) -> Case:
    def parse() -> tuple[Any, Asked]:
        return parse_mlflow(parse_json(content), model.columns)[0], NOTHING_ASKED

    def encode(outputs: dict[str, Any], _: Asked) -> bytes:
        body: dict[str, Any] = {"predictions": to_jsonable(outputs["predict"]),
                                "rung": {"model": model.name, "version": model.version, "variant": "champion",
                                         "request_id": "r"}}
        if "proba" in outputs:
            body["probabilities"] = to_jsonable(outputs["proba"])
        return orjson.dumps(body)

    return _case(name, model, parse, encode)


def oip_case(name: str, model: LoadedModel, content: bytes) -> Case:
    head = {"model_name": model.name, "model_version": str(model.version), "id": "r",
            "parameters": {"variant": "champion", "routing_revision": 1}}

    def parse() -> tuple[Any, Asked]:
        body, binary = split_body(content, None)
        asked = asked_outputs(body)
        return parse_oip(body, model.columns, binary)[0], asked

    return _case(name, model, parse, lambda outputs, asked: infer_body(head, outputs, asked)[0])


def per_call_us(call: Callable[[], Any], iterations: int) -> float:
    call()
    started = time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.perf_counter() - started) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the trained projects here (reused when present)")
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both")
    parser.add_argument("--profile", help="protocol-rows-model, e.g. mlflow-100-boosted: cProfile that case's whole path")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="rung-predict-path-"))
    cases: list[Case] = []
    for kind in MODELS if args.model == "both" else [args.model]:
        root = work / kind / "churn"
        if not root.exists():
            (work / kind).mkdir(parents=True, exist_ok=True)
            console.print(f"training the {kind} model in {root} ...")
            trained_project(work / kind, model=kind)
        model, sample = load_champion(root)
        for rows in (1, 100):
            columns = rows_of(model, sample, rows)
            cases.append(mlflow_case(f"mlflow-{rows}-{kind}", model, mlflow_body(columns)))
            cases.append(oip_case(f"oip-{rows}-{kind}", model, oip_body(columns)))
    threadpool_limits(1)  # as the gateway's prediction threads (serve.model_threads); after the libraries are loaded

    if args.profile:
        case = next((c for c in cases if c.name == args.profile), None)
        if case is None:
            raise SystemExit(f"no case {args.profile!r}; the cases are {', '.join(c.name for c in cases)}")
        profiler = cProfile.Profile()
        profiler.runcall(per_call_us, case.stages["total"], args.iterations)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return

    figures: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        console.print(f"round {round_ + 1}/{args.rounds}: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        for case in cases:
            for stage in STAGES:
                figures.setdefault((case.name, stage), []).append(per_call_us(case.stages[stage], args.iterations))
    console.print(f"after the rounds: load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    out = table(f"µs per request, median of {args.rounds} rounds of {args.iterations} calls", ["case", *STAGES])
    for case in cases:
        out.add_row(case.name, *(f"{statistics.median(figures[case.name, stage]):.1f}" for stage in STAGES))
    console.print(out)


if __name__ == "__main__":
    main()
