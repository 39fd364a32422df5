"""A model version in a process of its own, so predict never holds the gateway's GIL.

A scikit-learn pipeline on a pandas frame spends most of a predict call in
Python (column selection, validation, encoders): in a thread it holds the
GIL, and the event loop (parsing, routing, answering, metrics) waits for
it. In a worker process the loop and the model run on two cores, and a
shadow version's work no longer slows the primary's answers. Measured in
``bench/gateway.py``: see docs/benchmarks.md.

The worker gets the model already loaded and verified by the gateway
(pickled over a private pipe, never read from anywhere else), predicts
batches of plain columns and sends back the outputs. It exits when the
gateway closes the pipe, or dies with it (end of file on the pipe).

A worker that dies is started again: by the caller that found it dead in
the middle of a prediction (its batch fails with :class:`~rung.errors.WorkerDied`), or,
if it died while idle, by :meth:`ModelWorker.revive`, which the gateway
calls every half second, so no request meets the dead process.

Workers are forked by multiprocessing's fork server, which imports once
what they need: the worker's own modules, pandas, the library the model's
flavour predicts with (:data:`~rung.models.flavours.RUNTIMES`: PyTorch,
ONNX Runtime, ...) and the modules of the objects in the model's pickle
(scikit-learn's estimators, noted while pickling it). The first worker
started decides the list; a version of another flavour loaded later
imports its library after the fork (a PyTorch model's worker then takes
some 2 s and 280 MiB of its own, against 0.1 s and 15 MiB). Each worker
freezes the objects it inherits before anything else (:func:`gc.freeze`):
the garbage collector then never writes to their pages, which stay
shared with the fork server instead of being copied into each worker
(about 30 MiB less per worker for the churn template's model). Measured
in ``bench/serve_memory.py``.
"""

from __future__ import annotations

import gc
import io
import logging
import multiprocessing
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from rung.errors import WorkerDied
from rung.models.flavours import RUNTIMES
from rung.models.loaded import LoadedModel
from rung.models.signature import Columns

__all__ = ["ModelWorker"]

log = logging.getLogger(__name__)

# What every worker imports, whatever its model: its loop and the frames of a model without a compiled route.
WORKER_MODULES = ("rung.serving.worker", "rung.serving.batching", "pandas")


class ModelWorker:
    """Predicts in a child process; call it from one thread at a time (the version's prediction thread)."""

    def __init__(self, model: LoadedModel, threads: int = 1, on_restart: Callable[[], None] | None = None) -> None:
        self.model = model
        self.threads = threads
        self.on_restart = on_restart  # called after each new process that replaced a dead one
        self._payload, named = _pickled(model)  # raises if the model cannot travel
        runtime = RUNTIMES.get(model.flavor)
        self._preload = list(dict.fromkeys([*WORKER_MODULES, *([runtime] if runtime in sys.modules else []), *named]))
        self._lock = threading.Lock()
        self._closed = False
        self._start()

    def _start(self) -> None:
        context = _context(self._preload)
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, list(sys.path), self.threads),
                                        name=f"rung-model-{self.model.ref}", daemon=True)
        self._process.start()
        child.close()
        self._conn.send_bytes(self._payload)
        status, detail = _receive(self._conn)
        if status != "ready":
            self._stop()
            raise detail

    def _restart(self, when: str) -> None:
        """A new process for one that died (the caller holds the lock)."""
        log.error("model worker of %s died %s (exit code %s); starting a new one", self.model.ref, when, self._process.exitcode)
        self._process.join(timeout=1)
        self._start()
        if self.on_restart is not None:
            self.on_restart()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __call__(self, columns: Columns) -> dict[str, Any]:
        with self._lock:
            try:
                self._conn.send_bytes(pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL))
                status, result = _receive(self._conn)
            except (EOFError, OSError) as exc:
                code = self._process.exitcode
                self._restart("while predicting")
                raise WorkerDied(f"the process of {self.model.ref} died while predicting (exit code {code}); "
                                 "a new one is starting, retry the request") from exc
        if status == "error":
            raise result
        return result

    def revive(self) -> bool:
        """Start a new process if this one died while idle; ``True`` when it did.

        A worker busy predicting is left alone: its caller notices a death
        itself. Never blocks on the worker's lock.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self._process.is_alive():
                return False
            self._restart("while idle")
            return True
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()

    def _stop(self) -> None:
        self._conn.close()  # the worker reads end of file and exits
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)


def _receive(conn: Connection) -> Any:
    """Unpickle a message from the other end of a private pipe between the gateway and its own worker.

    Never user data or a file: the model travelling to the worker is the
    object the gateway loaded after verifying the files' sha256 (and with
    skops' trusted types); everything else is columns, outputs and status.
    """
    return pickle.loads(conn.recv_bytes())


class _Pickler(pickle.Pickler):
    """A pickler that notes the module of each object, class and function it pickles: what the worker will import."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: dict[str, None] = {}

    def reducer_override(self, obj: Any) -> Any:
        module = getattr(obj, "__module__", None) if isinstance(obj, type) or callable(obj) else type(obj).__module__
        if isinstance(module, str):
            self.modules[module] = None
        return NotImplemented  # pickled as it would be otherwise


def _pickled(model: LoadedModel) -> tuple[bytes, list[str]]:
    """``model`` pickled, and the modules it names (in the order met) that this process has imported."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(model)
    # Only modules imported here without harm: one that fails in the fork server would stop every worker. Never
    # the main script: the fork server would run it without the script's folder on sys.path (each worker runs it).
    named = [module for module in pickler.modules if module in sys.modules and module not in ("__main__", "__mp_main__")]
    return buffer.getvalue(), named


def _context(preload: list[str]) -> Any:
    # Never fork the gateway itself: it holds threads (uvloop, prediction threads).
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Imported once in the fork server, if this worker is the one that starts it: a new worker
        # then starts in tens of milliseconds, not seconds.
        context.set_forkserver_preload(preload)
    return context


def _serve(conn: Connection, path: list[str], threads: int) -> None:
    """The worker's loop: the model, then batches until the pipe closes."""
    gc.freeze()  # first: a collection would write to every inherited object's page, and so copy it
    sys.path[:0] = [entry for entry in path if entry not in sys.path]
    from threadpoolctl import threadpool_limits

    from rung.serving.batching import predict_columns

    # Ctrl-C in a terminal reaches the whole process group: the gateway stops its workers itself, after draining
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(threads)
    try:
        model = _receive(conn)
    except Exception as exc:
        conn.send_bytes(pickle.dumps(("failed", RuntimeError(f"could not receive the model: {exc}"))))
        return
    conn.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            columns = _receive(conn)
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", predict_columns(model, columns))
        except Exception as exc:
            reply = ("error", exc)
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # an exception that does not pickle still reaches the caller, as text
            conn.send_bytes(pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}"))))
