"""Where steps run: in worker processes on this machine, or on Ray.

Both executors take a :class:`StepTask` and give back a future of a
:class:`StepOutcome`; the runner cannot tell them apart. A task carries
references to its inputs, not the data: the worker reads them from the
artifact store and writes its outputs there, so only hashes cross process
boundaries. (With Ray on several machines the artifact store needs a remote
every node reaches, ``artifacts.uri``, or a shared path.)

A step's declared resources (``@step(num_cpus=, num_gpus=, memory=)``) are
reserved for its Ray task; the local executor cannot reserve anything, so it
refuses, before the step starts, one that asks for more CPUs, GPUs or
memory than this machine has.

Ray is imported only when the Ray executor is built (:mod:`rung.pipeline.cluster`).
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
from rung.pipeline.step import Step, StepContext, StepResources

PIPELINE_MODULE_PREFIX = "rung_pipeline_"  # how Project names the pipeline files it loads

__all__ = [
    "StepTask",
    "StepOutcome",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "execute_step",
    "make_executor",
    "local_shortfall",
    "capture_output",
    "pickle_by_value",
]


@dataclass(frozen=True)
class StepTask:
    step: Step
    ctx: StepContext
    inputs: dict[str, str]
    artifact_root: Path
    log_path: Path
    artifact_uri: str | None = None  # artifacts.uri: the remote the store at artifact_root caches


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
    with open(task.log_path, "a", encoding="utf-8") as log, capture_output(log):
        try:
            store = ArtifactStore(task.artifact_root, task.artifact_uri)
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
def capture_output(log: Any) -> Any:
    """Send a step's prints and log records to its own log file (an open text file)."""
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
        shortfall = local_shortfall(task.step.resources)
        if shortfall is not None:
            return _refused(task, f"step '{task.step.name}' asks for {shortfall}; the local executor cannot give it "
                                  "(run it on Ray: executor: ray)")
        if isinstance(self._pool, _Inline):
            return self._pool.submit(execute_step, task)
        import cloudpickle

        pickle_by_value(cloudpickle, task.step.func.__module__)
        return self._pool.submit(_execute_payload, cloudpickle.dumps(task), list(sys.path))

    def close(self) -> None:
        if isinstance(self._pool, ProcessPoolExecutor):
            self._pool.shutdown(wait=True, cancel_futures=True)


def _execute_payload(payload: bytes, path: list[str]) -> StepOutcome:
    """Worker side of :class:`LocalExecutor`: the caller's import path, then the task."""
    import pickle

    sys.path[:0] = [entry for entry in path if entry not in sys.path]
    return execute_step(pickle.loads(payload))  # from our own parent, over the pool's pipe: not user data


def pickle_by_value(cloudpickle: Any, module: str) -> None:
    """Make ``cloudpickle`` (ours or Ray's copy) carry ``module``'s code when workers cannot import it."""
    if not _importable(module) and module in sys.modules:
        cloudpickle.register_pickle_by_value(sys.modules[module])


class RayExecutor:
    """Steps as Ray tasks on the cluster at ``address``, or on a local Ray instance when none is given.

    Each task reserves its step's declared resources (one CPU when it
    declares none); Ray keeps a task waiting until some node has them free,
    and sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it reserved. A step that no
    node of the cluster could ever hold fails at once instead of waiting
    forever.
    """

    def __init__(self, address: str | None = None) -> None:
        from rung.pipeline.cluster import connect_ray

        self._connection = connect_ray(address, purpose="executor 'ray'", local_cpus=max(2, _cpu_count()))
        self._remote = self._connection.ray.remote(max_retries=0)(execute_step)

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        from ray import cloudpickle  # Ray pickles with its own copy of cloudpickle

        pickle_by_value(cloudpickle, task.step.func.__module__)
        remote = self._remote
        options = task.step.resources.ray_options()
        if options:
            resources = task.step.resources
            unmet = self._connection.unmet({"CPU": resources.num_cpus or 0.0, "GPU": resources.num_gpus or 0.0,
                                            "memory": float(resources.memory or 0)})
            if unmet is not None:
                return _refused(task, f"step '{task.step.name}' asks for {resources.describe()}: {unmet}")
            remote = remote.options(**options)
        return remote.remote(task).future()

    def close(self) -> None:
        self._connection.close()


def local_shortfall(resources: StepResources) -> str | None:
    """What of ``resources`` this machine cannot give (``"2 GPUs (this machine has 0)"``), or ``None``."""
    wanted = []
    if resources.num_cpus is not None and resources.num_cpus > _cpu_count():
        wanted.append(f"{resources.num_cpus:g} CPUs (this machine has {_cpu_count()})")
    if resources.num_gpus:
        gpus = _gpu_count()
        if resources.num_gpus > gpus:
            wanted.append(f"{resources.num_gpus:g} GPU{'s' if resources.num_gpus != 1 else ''} (this machine has {gpus})")
    if resources.memory is not None:
        import psutil

        total = psutil.virtual_memory().total
        if resources.memory > total:
            wanted.append(f"{resources.memory / 1e9:.1f} GB of memory (this machine has {total / 1e9:.1f} GB)")
    return " and ".join(wanted) or None


def _refused(task: StepTask, message: str) -> Future[StepOutcome]:
    """A step the executor will not start: failed at once, with the reason in its log too."""
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(task.log_path, "a", encoding="utf-8") as log:
        print(f"[rung] {message}", file=log)
    future: Future[StepOutcome] = Future()
    future.set_result(StepOutcome(name=task.step.name, ok=False, attempts=0, error=message, error_type="ResourcesUnavailable"))
    return future


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
    """The CPUs this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    import os

    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gpu_count() -> int:
    """The GPUs this process sees: ``CUDA_VISIBLE_DEVICES`` when set, else NVML's count, else the device files."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip()]
        return 0 if not entries or entries[0].strip() == "-1" else len(entries)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no nvidia-ml-py, no driver: count the device nodes instead
        return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())


def make_executor(kind: str, *, workers: int = 2, address: str | None = None) -> Executor:
    """Build the executor named in the settings (``executor.kind``)."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address)
    raise RungError(f"unknown executor '{kind}'; use local or ray")
