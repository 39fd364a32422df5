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
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

__all__ = ["Step", "step", "StepContext", "INJECTED"]

INJECTED = frozenset({"ctx", "params"})


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
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step.

    ``outputs`` names what it returns (default: the function's name); with
    several names the function returns a tuple of that length. ``retries``
    re-runs it after an exception (not after a rung error such as a failed
    validation, which would fail again). ``cache=False`` always runs it.
    ``fingerprint(ctx)`` adds outside state to the cache key, e.g. the hash
    of a source file the step reads; returning ``None`` disables the cache
    for that run.
    """

    def wrap(fn: Callable[..., Any]) -> Step:
        if retries < 0:
            raise ValueError("retries must be >= 0")
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
        )

    if func is not None:
        return wrap(func)
    return wrap
