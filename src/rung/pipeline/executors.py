"""Where steps run: in worker processes on this machine, or on Ray.

Both executors take a :class:`StepTask` and give back a future of a
:class:`StepOutcome`; the runner cannot tell them apart. A task carries
references to its inputs, not the data: the worker reads them from the
artifact store and writes its outputs there, so only hashes cross process
boundaries. (With Ray on several machines the artifact store must be a
shared path.)

Ray is imported only when the Ray executor is built.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import multiprocessing
import sys
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rung.errors import RungError
from rung.pipeline.artifacts import ArtifactStore
from rung.pipeline.owner import RunOwner, watch_owner
from rung.pipeline.step import Step, StepContext

PIPELINE_MODULE_PREFIX = "rung_pipeline_"  # how Project names the pipeline files it loads

__all__ = ["StepTask", "StepOutcome", "Executor", "LocalExecutor", "RayExecutor", "execute_step", "make_executor"]


@dataclass(frozen=True)
class StepTask:
    step: Step
    ctx: StepContext
    inputs: dict[str, str]
    artifact_root: Path
    log_path: Path


@dataclass(frozen=True)
class StepOutcome:
    name: str
    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    duration_s: float = 0.0
    error: str | None = None
    error_type: str | None = None
    report: dict[str, Any] | None = None


class Executor(Protocol):
    def submit(self, task: StepTask) -> Future[StepOutcome]: ...

    def close(self) -> None: ...


def execute_step(task: StepTask) -> StepOutcome:
    """Run one step with its retries; never raises (failures are outcomes)."""
    step, started = task.step, time.perf_counter()
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    attempts = 0
    with open(task.log_path, "a", encoding="utf-8") as log, _capture(log):
        try:
            store = ArtifactStore(task.artifact_root)
            kwargs = {name: store.get(ref) for name, ref in task.inputs.items()}
            if "ctx" in step.uses:
                kwargs["ctx"] = task.ctx
            if "params" in step.uses:
                kwargs["params"] = task.ctx.params
            while True:
                attempts += 1
                try:
                    result = step.func(**kwargs)
                    break
                except RungError:
                    raise
                except Exception as exc:
                    if attempts > step.retries:
                        raise  # the outer handler logs the final traceback once
                    traceback.print_exc()
                    print(f"[rung] attempt {attempts} of '{step.name}' failed ({exc!r}); retrying", flush=True)
                    time.sleep(step.retry_delay)
            values = (result,) if len(step.outputs) == 1 else _unpack(step, result)
            outputs = {name: store.put(value) for name, value in zip(step.outputs, values, strict=False)}
        except Exception as exc:
            if isinstance(exc, RungError):
                print(f"[rung] {exc}", flush=True)
            else:
                traceback.print_exc()
            return StepOutcome(
                name=step.name,
                ok=False,
                attempts=max(attempts, 1),
                duration_s=time.perf_counter() - started,
                error=str(exc) or type(exc).__name__,
                error_type=type(exc).__name__,
                report=getattr(exc, "report", None),
            )
    return StepOutcome(name=step.name, ok=True, outputs=outputs, attempts=attempts, duration_s=time.perf_counter() - started)


def _unpack(step: Step, result: Any) -> tuple[Any, ...]:
    if not isinstance(result, tuple) or len(result) != len(step.outputs):
        raise TypeError(f"step '{step.name}' declares outputs {list(step.outputs)}; return a tuple of {len(step.outputs)} values")
    return result


@contextlib.contextmanager
def _capture(log: Any) -> Any:
    """Send the step's prints and log records to its own log file."""
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class _Inline:
    """Runs a task in this process when it is submitted (``workers: 1``)."""

    def submit(self, fn: Any, task: StepTask) -> Future[StepOutcome]:
        future: Future[StepOutcome] = Future()
        future.set_result(fn(task))
        return future

    def close(self) -> None:
        pass


class LocalExecutor:
    """Parallel worker processes on this machine.

    Workers come from a fork server, not from forking the caller: the caller
    may hold threads (MLflow, Ray, a web server) and forking a threaded process
    can deadlock. Tasks travel as cloudpickle payloads, with the project's
    pipeline module pickled by value since workers cannot import it by name.
    Each worker dies with the process that built the executor (the run's
    owner, see :func:`~rung.pipeline.owner.watch_owner`).
    """

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | _Inline
        if workers <= 1:
            self._pool = _Inline()
        else:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                # Loaded once in the server, so each worker starts with them imported.
                context.set_forkserver_preload(["rung.pipeline.executors", "pandas"])
            self._pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=watch_owner, initargs=(RunOwner.current(),)
            )

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        if isinstance(self._pool, _Inline):
            return self._pool.submit(execute_step, task)
        import cloudpickle

        _pickle_by_value(cloudpickle, task.step.func.__module__)
        return self._pool.submit(_execute_payload, cloudpickle.dumps(task), list(sys.path))

    def close(self) -> None:
        if isinstance(self._pool, ProcessPoolExecutor):
            self._pool.shutdown(wait=True, cancel_futures=True)


def _execute_payload(payload: bytes, path: list[str]) -> StepOutcome:
    """Worker side of :class:`LocalExecutor`: the caller's import path, then the task."""
    import pickle

    sys.path[:0] = [entry for entry in path if entry not in sys.path]
    return execute_step(pickle.loads(payload))  # from our own parent, over the pool's pipe: not user data


def _pickle_by_value(cloudpickle: Any, module: str) -> None:
    """Make ``cloudpickle`` carry ``module``'s code when workers cannot import it."""
    if not _importable(module) and module in sys.modules:
        cloudpickle.register_pickle_by_value(sys.modules[module])


class RayExecutor:
    """Steps as Ray tasks: ``ray.init(address)`` or a local Ray instance when no address is given."""

    def __init__(self, address: str | None = None) -> None:
        from rung.optional import require

        ray = require("ray", purpose="executor 'ray'")
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    ignore_reinit_error=True,
                    **({} if address else {"num_cpus": max(2, _cpu_count()), "object_store_memory": 100 * 1024**2}),
                )
            except Exception as exc:
                where = address or "a local instance"
                raise RungError(f"cannot start Ray ({where}): {exc}") from exc
        self._remote = ray.remote(max_retries=0)(execute_step)

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        from ray import cloudpickle  # Ray pickles with its own copy of cloudpickle

        _pickle_by_value(cloudpickle, task.step.func.__module__)
        return self._remote.remote(task).future()

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def _importable(module: str) -> bool:
    """Whether a Ray worker can import ``module`` by name (a project's pipeline file cannot)."""
    if module == "__main__" or module.startswith(PIPELINE_MODULE_PREFIX):
        return False
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    return spec is not None


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 2


def make_executor(kind: str, *, workers: int = 2, address: str | None = None) -> Executor:
    """Build the executor named in the settings (``executor.kind``)."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address)
    raise RungError(f"unknown executor '{kind}'; use local or ray")
