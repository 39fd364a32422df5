"""A step: a plain function whose parameters name the outputs it consumes.

::

    @step(outputs="model", retries=2)
    def train(train_set, params):
        ...
        return model

``train`` reads the output ``train_set`` of an upstream step and the
pipeline's ``params``; it produces ``model``. Two parameter names are
injected rather than wired: ``ctx`` (the :class:`StepContext`) and
``params``. The decorated object still calls like the function, so unit
tests of a step need no pipeline.

A step may say what it needs to run, ``@step(num_cpus=4, num_gpus=1,
memory="8GB")`` (:class:`StepResources`): the Ray executor reserves it on
the cluster, the local one refuses a step this machine cannot give it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from rung.errors import PipelineError

__all__ = ["Step", "step", "StepContext", "StepResources", "INJECTED", "parse_memory"]

INJECTED = frozenset({"ctx", "params"})

# "2GB" is 2 * 1000**3 bytes and "2GiB" 2 * 1024**3, as Kubernetes and Ray's docs count them.
_MEMORY_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
                 "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_memory(value: int | float | str, *, where: str = "memory") -> int:
    """Bytes from ``value``: a number of bytes, or a string such as ``"2GB"``, ``"512MiB"``, ``"1.5 GiB"``.

    Anything else (negative, a unit rung does not know, not a number) is a
    :class:`~rung.errors.PipelineError` naming ``where``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PipelineError(f"{where}: {value!r} is not an amount of memory; write bytes or a string like '2GB'")
    if isinstance(value, str):
        match = _MEMORY.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _MEMORY_UNITS:
            raise PipelineError(f"{where}: {value!r} is not an amount of memory; write bytes or e.g. '512MB', '2GB', '4GiB'")
        return int(float(match.group(1)) * _MEMORY_UNITS[unit])
    if not math.isfinite(value) or value < 0:
        raise PipelineError(f"{where}: {value!r} must be a number of bytes >= 0")
    return int(value)


def _count(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PipelineError(f"{where}: {value!r} must be a number >= 0")
    return float(value)


@dataclass(frozen=True)
class StepResources:
    """What one run of a step needs: CPUs and GPUs (fractions allowed, as Ray allows them) and memory in bytes.

    ``None`` leaves it to the executor's default (one CPU, no GPU, no
    memory reserved on Ray). Resources are not part of the cache key: where
    a step runs does not change what it computes.
    """

    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None

    @classmethod
    def of(cls, num_cpus: Any = None, num_gpus: Any = None, memory: Any = None, *, step: str = "step") -> StepResources:
        """Checked resources; a bad value is a :class:`~rung.errors.PipelineError` naming the argument."""
        return cls(
            num_cpus=_count(num_cpus, f"step {step}: num_cpus"),
            num_gpus=_count(num_gpus, f"step {step}: num_gpus"),
            memory=None if memory is None else parse_memory(memory, where=f"step {step}: memory"),
        )

    def ray_options(self) -> dict[str, Any]:
        """The arguments of Ray's ``.options()`` for what is set."""
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory}
        return {key: value for key, value in options.items() if value is not None}

    def describe(self) -> str:
        """``2 CPUs, 1 GPU, 2.0 GB``: for messages."""
        parts = []
        if self.num_cpus is not None:
            parts.append(f"{self.num_cpus:g} CPU{'s' if self.num_cpus != 1 else ''}")
        if self.num_gpus is not None:
            parts.append(f"{self.num_gpus:g} GPU{'s' if self.num_gpus != 1 else ''}")
        if self.memory is not None:
            parts.append(f"{self.memory / 1e9:.1f} GB")
        return ", ".join(parts) or "nothing in particular"


@dataclass(frozen=True)
class StepContext:
    """What a running step knows about its run. Picklable: it travels to workers."""

    run_id: str
    step: str
    project_root: Path
    params: dict[str, Any]
    settings: Any = None
    hashes: dict[str, str] = field(default_factory=dict)
    artifact_root: Path | None = None
    log_path: Path | None = None

    @property
    def state_dir(self) -> Path:
        return self.project_root / ".rung"

    @property
    def run_dir(self) -> Path:
        """Where a step writes files for people (reports): ``.rung/runs/<run id>/``."""
        path = self.state_dir / "runs" / self.run_id
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True, eq=False)
class Step:
    """One node of a pipeline. Build it with :func:`step`."""

    func: Callable[..., Any]
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    retries: int = 0
    retry_delay: float = 0.0
    cache: bool = True
    fingerprint: Callable[[StepContext], str | None] | None = None
    uses: frozenset[str] = frozenset()
    resources: StepResources = StepResources()
    _code_hash: str | None = field(default=None, init=False, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def code_hash(self) -> str:
        """Identity of the code: the step's source and the file that defines it.

        The whole defining file counts for user code, so an edited helper
        function next to the step invalidates the cache too. rung's own
        steps count by rung's version and the step's source.
        """
        if self._code_hash is not None:
            return self._code_hash
        digest = hashlib.sha256(self.name.encode())
        try:
            digest.update(inspect.getsource(self.func).encode())
        except (OSError, TypeError):
            digest.update(self.func.__qualname__.encode())
        module = sys.modules.get(self.func.__module__)
        module_file = getattr(module, "__file__", None)
        if module is not None and self.func.__module__.startswith("rung."):
            from rung.version import __version__

            digest.update(__version__.encode())
        elif module_file and "site-packages" not in module_file:
            with contextlib.suppress(OSError):
                digest.update(Path(module_file).read_bytes())
        value = digest.hexdigest()
        object.__setattr__(self, "_code_hash", value)  # memo on the frozen instance
        return value


@overload
def step(func: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    outputs: str | list[str] | tuple[str, ...] | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    cache: bool = True,
    fingerprint: Callable[[StepContext], str | None] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | str | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    outputs: str | list[str] | tuple[str, ...] | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    cache: bool = True,
    fingerprint: Callable[[StepContext], str | None] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | str | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step.

    ``outputs`` names what it returns (default: the function's name); with
    several names the function returns a tuple of that length. ``retries``
    re-runs it after an exception (not after a rung error such as a failed
    validation, which would fail again). ``cache=False`` always runs it.
    ``fingerprint(ctx)`` adds outside state to the cache key, e.g. the hash
    of a source file the step reads; returning ``None`` disables the cache
    for that run.

    ``num_cpus``, ``num_gpus`` and ``memory`` (bytes, or ``"2GB"``) are what
    one run of the step needs (:class:`StepResources`); a negative or
    unreadable value is a :class:`~rung.errors.PipelineError` naming it.
    """

    def wrap(fn: Callable[..., Any]) -> Step:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        resources = StepResources.of(num_cpus, num_gpus, memory, step=name or fn.__name__)
        params = inspect.signature(fn).parameters
        for pname, param in params.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"step {fn.__name__}: *{pname} is not allowed; name each input")
        inputs = tuple(p for p in params if p not in INJECTED)
        if outputs is None:
            outs: tuple[str, ...] = (fn.__name__,)
        elif isinstance(outputs, str):
            outs = (outputs,)
        else:
            outs = tuple(outputs)
        if not outs:
            raise ValueError(f"step {fn.__name__}: outputs must name at least one output")
        # The module attribute named like the function becomes the Step; pointing the
        # qualname through it keeps the function picklable by reference for workers.
        if "<locals>" not in fn.__qualname__:
            fn.__qualname__ = f"{fn.__qualname__}.func"
        return Step(
            func=fn,
            name=name or fn.__name__,
            inputs=inputs,
            outputs=outs,
            retries=retries,
            retry_delay=retry_delay,
            cache=cache,
            fingerprint=fingerprint,
            uses=frozenset(p for p in params if p in INJECTED),
            resources=resources,
        )

    if func is not None:
        return wrap(func)
    return wrap
