"""The MLflow adapter: runs, datasets, the model registry and its aliases.

rung writes to MLflow what an MLflow user expects to find there (params,
metrics, a ``log_input`` dataset with its digest, the model with signature
and input example, tags for the code version) and adds what MLflow lacks:
the sha256 of every model file, recorded at registration so a tampered
model can be refused before it is loaded. scikit-learn models are saved in
the skops format, not pickle. XGBoost, LightGBM, PyTorch, ONNX and MLflow
``PythonModel`` s use their own MLflow flavours.

On a local SQLite tracking store, registrations from concurrent processes
are serialised with a file lock: MLflow's SQLite store does not guard
version numbers or its own migrations against concurrent writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import RungError, TrackingError
from rung.skops_io import skops_io

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Tracking", "Registered", "hash_tree", "CHAMPION", "CHALLENGER"]

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Registered:
    name: str
    version: int
    mlflow_run_id: str
    model_uri: str
    flavor: str
    sha256: dict[str, str]
    aliases: list[str]


_FLUENT_LOCK = threading.RLock()

# Written by MLflow into a model directory when it is downloaded through the
# registry; it describes the download, not the model, so it is not hashed.
UNHASHED = frozenset({"registered_model_meta"})


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every model file under ``root``, by relative path."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in UNHASHED):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(root).as_posix()] = digest.hexdigest()
    return out


def _migrated_template() -> Path:
    """An empty MLflow database migrated to the installed version, made once and kept in rung's cache."""
    import mlflow

    cache = Path(os.environ.get("RUNG_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rung")
    template = cache / f"mlflow-{mlflow.__version__}.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".mlflow-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.is_file():
            from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

            partial = cache / f".mlflow-{os.getpid()}.db"
            partial.unlink(missing_ok=True)
            uri = f"sqlite:///{partial}"
            TrackingStore(uri, "./mlruns")
            RegistryStore(uri)
            for store_class in (TrackingStore, RegistryStore):
                engine = getattr(store_class, "_engine_map", {}).pop(uri, None)
                if engine is not None:
                    engine.dispose()
            os.replace(partial, template)
    return template


def manifest_digest(manifest: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(manifest.items())).encode()).hexdigest()


class Tracking:
    """MLflow for one project: ``uri`` (tracking and registry) and a local artifact root."""

    def __init__(self, uri: str, *, artifact_root: Path, lock_path: Path) -> None:
        self.uri = uri
        self.artifact_root = artifact_root
        self.lock_path = lock_path

    @property
    def is_local(self) -> bool:
        return self.uri.startswith("sqlite:") or self.uri.startswith("file:") or "://" not in self.uri

    def check_reachable(self, timeout: float = 5.0) -> None:
        """Fail fast, before any training, when a tracking server does not answer."""
        if self.is_local:
            target = self.artifact_root
            target.mkdir(parents=True, exist_ok=True)
            if not os.access(target, os.W_OK):
                raise TrackingError(f"MLflow artifact directory {target} is not writable")
            return
        if self.uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout):
                    return
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise TrackingError(
                    f"MLflow tracking server {self.uri} cannot be reached ({reason}); start it or fix RUNG_TRACKING_URI"
                ) from None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if not self.is_local:
            yield
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the database connections MLflow pooled for this project's URI.

        Tracking itself holds nothing open (each call makes a client), but
        MLflow keeps one SQLAlchemy engine per database URI for the life of
        the process, with its connections to ``mlflow.db``. Disposing it
        closes them; the engine stays usable and reconnects on its next use,
        so closing while another :class:`Tracking` on the same URI works on
        is harmless. Nothing is imported: if MLflow's stores were never
        loaded, there is nothing to close.
        """
        for module_name in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"):
            store_class = getattr(sys.modules.get(module_name), "SqlAlchemyStore", None)
            engine = getattr(store_class, "_engine_map", {}).get(self.uri)
            if engine is not None:
                engine.dispose()

    def _client(self) -> Any:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        import mlflow

        self._ensure_database()
        return mlflow.MlflowClient(self.uri, self.uri)

    def _ensure_database(self) -> None:
        """A new project's SQLite MLflow database, copied from a migrated empty one instead of migrated anew.

        MLflow creates its tables by running every Alembic migration since its
        first release: 10 to 20 s on a small machine, paid by the first
        command of every project. rung migrates an empty database once per
        MLflow version, under ``$RUNG_CACHE_DIR`` (default ``~/.cache/rung``),
        and copies it; the copy is what MLflow itself would have made (its
        tables, its default experiment). Anything unusual (not SQLite, the
        file exists, the cache cannot be written) leaves it to MLflow.
        """
        if self.__dict__.get("_database_ready") or not self.uri.startswith("sqlite:///"):
            return
        self._database_ready = True
        target = Path(self.uri.removeprefix("sqlite:///"))
        if target.exists():
            return
        try:
            template = _migrated_template()
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(template, partial)
            try:
                os.link(partial, target)  # never over a database another process made meanwhile
            except FileExistsError:
                pass
            finally:
                partial.unlink(missing_ok=True)
        except Exception:  # the cache is an optimisation: MLflow creates the database as it always would
            return

    @contextlib.contextmanager
    def fluent(self) -> Iterator[Any]:
        """MLflow's fluent API pointed at this project, and put back afterwards.

        ``mlflow.set_tracking_uri`` is process-global and also exports
        ``MLFLOW_TRACKING_URI`` to child processes; rung used as a library
        must not leave the caller's MLflow pointing at a rung project.
        """
        import mlflow
        from mlflow.tracking import _model_registry, _tracking_service

        saved_env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        globals_ = ((_tracking_service.utils, "_tracking_uri"), (_model_registry.utils, "_registry_uri"))
        with _FLUENT_LOCK:  # threads (the gateway's loaders) take turns with the globals
            saved = [(module, attr, getattr(module, attr)) for module, attr in globals_ if hasattr(module, attr)]
            self._ensure_database()
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_registry_uri(self.uri)
            try:
                yield mlflow
            finally:
                for module, attr, value in saved:
                    setattr(module, attr, value)
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def _experiment_id(self, client: Any, name: str) -> str:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = self.artifact_root.resolve().as_uri() if self.is_local else None
        return str(client.create_experiment(name, artifact_location=location))

    def register(
        self,
        model: Any,
        *,
        flavor: str,
        inputs: list[str],
        predict: Callable[[pd.DataFrame], Any],
        name: str,
        experiment: str,
        train: pd.DataFrame,
        target: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        data_digest: str,
        data_source: str,
        data_path: Path,
        artifacts: dict[str, Any],
        code_paths: list[Path] | None = None,
        metadata: dict[str, Any] | None = None,
        fence: Callable[[], None] | None = None,
        run_id: str | None = None,
    ) -> Registered:
        """Log a run with the native ``model`` (an MLflow ``flavor``) and register it as a new version of ``name``.

        ``run_id`` continues a run made earlier for this pipeline run (the
        parent of its tuning trials, :meth:`log_search`) instead of a new one.

        The signature holds ``inputs`` (the raw columns the model takes, before
        any prepare hook) and what ``predict`` answers on them; ``code_paths``
        (the prepare hook's file) travel with the model, ``metadata`` goes into
        its MLmodel file.

        The new version gets the ``challenger`` alias; the first version of a
        model also gets ``champion``. If anything fails after the version
        was created, the version is deleted: no half-registered model.
        ``fence`` is called just before the version is created and again
        before any alias moves; whatever it raises stops the registration
        (the register step passes one that checks its run is still alive).
        """
        try:
            with self._lock(), self.fluent() as mlflow:
                return self._register(
                    mlflow,
                    model, flavor, inputs, predict, name, experiment, train, target, params, metrics, tags, data_digest, data_source,
                    data_path, artifacts, code_paths or [], metadata or {}, fence or (lambda: None), run_id,
                )
        except RungError:
            raise
        except Exception as exc:
            raise TrackingError(f"MLflow at {self.uri} refused the registration of '{name}': {_first_line(exc)}") from exc

    def _register(
        self,
        mlflow: Any,
        model: Any,
        flavor: str,
        inputs: list[str],
        predict: Callable[[pd.DataFrame], Any],
        name: str,
        experiment: str,
        train: pd.DataFrame,
        target: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        data_digest: str,
        data_source: str,
        data_path: Path,
        artifacts: dict[str, Any],
        code_paths: list[Path],
        metadata: dict[str, Any],
        fence: Callable[[], None],
        run_id: str | None = None,
    ) -> Registered:
        from mlflow.models import infer_signature

        client = self._client()
        experiment_id = self._experiment_id(client, experiment)
        example = train[inputs].head(5)
        signature = infer_signature(example, predict(example))
        created_version: int | None = None
        started = {"run_id": run_id} if run_id else {"experiment_id": experiment_id, "run_name": tags.get("rung.run_id", "")[:8]}
        with mlflow.start_run(**started) as run:
            try:
                mlflow.log_params({k: str(v)[:500] for k, v in _flat(params).items()})
                mlflow.log_metrics(metrics)
                mlflow.set_tags(tags)
                # MLflow's dataset source is the immutable snapshot rung kept, not the
                # (mutable, maybe SQL) source it came from; that one goes in a tag.
                dataset = mlflow.data.from_pandas(train, source=str(data_path), targets=target, name=f"{name}-train")
                mlflow.log_input(dataset, context="training", tags={"rung.snapshot": data_digest, "rung.source": data_source})
                for filename, content in artifacts.items():
                    mlflow.log_dict(content, filename)
                info = self._log_model(mlflow, model, flavor, signature, example, code_paths, metadata)
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri))
                manifest = hash_tree(local)
                fence()
                version = mlflow.register_model(info.model_uri, name, await_registration_for=60)
                created_version = int(version.version)
                client.set_model_version_tag(name, version.version, "rung.sha256", manifest_digest(manifest))
                client.set_model_version_tag(name, version.version, "rung.run_id", tags.get("rung.run_id", ""))
                client.set_model_version_tag(name, version.version, "rung.flavor", flavor)
                champion = self.alias_version(name, CHAMPION)  # before any alias moves: a failed read moves none
                fence()
                aliases = [CHALLENGER]
                client.set_registered_model_alias(name, CHALLENGER, version.version)
                if champion is None:
                    client.set_registered_model_alias(name, CHAMPION, version.version)
                    aliases.append(CHAMPION)
            except BaseException:
                if created_version is not None:
                    with contextlib.suppress(Exception):
                        client.delete_model_version(name, str(created_version))
                raise
        return Registered(
            name=name,
            version=created_version,
            mlflow_run_id=run.info.run_id,
            model_uri=f"models:/{name}/{created_version}",
            flavor=flavor,
            sha256=manifest,
            aliases=aliases,
        )

    def log_search(self, *, experiment: str, run_name: str, tags: dict[str, str], trials: list[dict[str, Any]]) -> str:
        """A parent run with one child run per trial (``name``, ``params``, ``metrics``, ``failed``); the parent's id.

        The parent is left finished and without params: registration
        continues it (``register(run_id=...)``) and logs the chosen ones.
        """
        try:
            from mlflow.entities import Metric, Param

            with self._lock():
                client = self._client()
                experiment_id = self._experiment_id(client, experiment)
                parent = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
                now = int(time.time() * 1000)
                for trial in trials:
                    child = client.create_run(experiment_id, run_name=trial["name"],
                                              tags={**tags, "mlflow.parentRunId": parent}).info.run_id
                    client.log_batch(
                        child,
                        metrics=[Metric(k, float(v), now, 0) for k, v in trial["metrics"].items() if math.isfinite(v)],
                        params=[Param(k, str(v)[:500]) for k, v in _flat(trial["params"]).items()],
                    )
                    client.set_terminated(child, "FAILED" if trial.get("failed") else "FINISHED")
                client.set_terminated(parent, "FINISHED")
                return str(parent)
        except Exception as exc:
            raise TrackingError(f"MLflow at {self.uri} refused the tuning trials: {_first_line(exc)}") from exc

    @staticmethod
    def _log_model(mlflow: Any, model: Any, flavor: str, signature: Any, example: Any, code_paths: list[Path],
                   metadata: dict[str, Any]) -> Any:
        """Log ``model`` with its flavour's MLflow API, pinned to the versions installed here.

        PyTorch modules and ``PythonModel`` s are pickled by MLflow; the
        classes they are made of that live in the team's own files are
        pickled by value (:func:`_own_code_by_value`), so loading the version
        later needs no copy of those files on the import path.
        """
        from importlib.metadata import version as installed

        common: dict[str, Any] = {"name": "model", "signature": signature, "input_example": example,
                                  "metadata": metadata or None, "code_paths": [str(p) for p in code_paths] or None}
        if flavor == "xgboost":
            return mlflow.xgboost.log_model(model, pip_requirements=[f"xgboost=={installed('xgboost')}"], **common)
        if flavor == "lightgbm":
            skops_io()  # MLflow saves LightGBM with skops: imported first, without PyTorch (rung.skops_io)
            return mlflow.lightgbm.log_model(model, pip_requirements=[f"lightgbm=={installed('lightgbm')}"], **common)
        if flavor == "pytorch":
            import mlflow.pytorch

            with _own_code_by_value(type(m) for m in model.modules()):
                # pickle, not pt2: pt2 traces forward() on a tensor example, which a module taking the
                # prepared frame's matrix does not have at hand here; rung models marks pickled versions.
                return mlflow.pytorch.log_model(model, serialization_format="pickle",
                                                pip_requirements=[f"torch=={_release(installed('torch'))}"], **common)
        if flavor == "onnx":
            import mlflow.onnx
            import onnx

            proto = onnx.load_model_from_string(bytes(model)) if isinstance(model, (bytes, bytearray)) else model
            requirements = [f"onnx=={installed('onnx')}", f"onnxruntime=={installed('onnxruntime')}"]
            return mlflow.onnx.log_model(proto, pip_requirements=requirements, **common)
        if flavor == "pyfunc":
            import mlflow.pyfunc

            requirements = [f"mlflow=={installed('mlflow')}", f"cloudpickle=={installed('cloudpickle')}"]
            with _own_code_by_value(type(model).__mro__):
                return mlflow.pyfunc.log_model(python_model=model, pip_requirements=requirements, **common)
        skops = skops_io()
        trusted = skops.get_untrusted_types(data=skops.dumps(model))
        requirements = [f"scikit-learn=={installed('scikit-learn')}", f"skops=={installed('skops')}"]
        return mlflow.sklearn.log_model(
            model,
            serialization_format="skops",
            skops_trusted_types=trusted or None,
            pip_requirements=requirements,
            **common,
        )

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at; ``None`` only when MLflow says the model or alias does not exist.

        Any other failure (a connection error, a refused call) is a
        :class:`TrackingError`: taking it for "no champion yet" would make an
        uncertified version the champion.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

        try:
            aliases = self._client().get_registered_model(name).aliases or {}
        except Exception as exc:
            if isinstance(exc, MlflowException) and exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise TrackingError(f"cannot read @{alias} of '{name}' from MLflow at {self.uri}: {_first_line(exc)}") from exc
        version = aliases.get(alias)
        return int(version) if version is not None else None

    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> None:
        """Tag a registered version (certification results, deployment state)."""
        try:
            client = self._client()
            for key, value in tags.items():
                client.set_model_version_tag(name, str(version), key, value)
        except Exception as exc:
            raise TrackingError(f"cannot tag {name}:{version} in MLflow at {self.uri}: {str(exc).splitlines()[0]}") from exc

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        try:
            return dict(self._client().get_model_version(name, str(version)).tags)
        except Exception as exc:
            raise TrackingError(f"cannot read {name}:{version} from MLflow at {self.uri}: {str(exc).splitlines()[0]}") from exc

    def set_alias(self, name: str, alias: str, version: int) -> None:
        try:
            self._client().set_registered_model_alias(name, alias, str(version))
        except Exception as exc:
            raise TrackingError(f"cannot set @{alias} on {name}:{version} in MLflow at {self.uri}: {str(exc).splitlines()[0]}") from exc

    def delete_alias(self, name: str, alias: str) -> None:
        try:
            self._client().delete_registered_model_alias(name, alias)
        except Exception as exc:
            raise TrackingError(f"cannot remove @{alias} from {name} in MLflow at {self.uri}: {str(exc).splitlines()[0]}") from exc

    def delete_version(self, name: str, version: int) -> None:
        """Undo a registration whose lineage could not be recorded."""
        with contextlib.suppress(Exception):
            self._client().delete_model_version(name, str(version))

    def aliases(self) -> dict[str, dict[str, int]]:
        """``{model name: {alias: version}}`` for every registered model."""
        try:
            client = self._client()
            return {m.name: {a: int(v) for a, v in (m.aliases or {}).items()} for m in client.search_registered_models()}
        except Exception as exc:
            raise TrackingError(f"cannot read the MLflow registry at {self.uri}: {str(exc).splitlines()[0]}") from exc


def _release(version: str) -> str:
    """``2.4.1`` of ``2.4.1+cu121``: the local build tag is not on the package index."""
    return version.split("+", 1)[0]


@contextlib.contextmanager
def _own_code_by_value(classes: Any) -> Iterator[None]:
    """While logging: cloudpickle the modules of ``classes`` that are the team's own code by value, not by name.

    A class from an installed package (torch, mlflow) is pickled by name, as
    usual; one from a file of the project (``model.py``) would need that file
    on the import path of every process that loads the version, and would
    load whatever the file says *then*. By value, the version carries the
    code it was trained with.
    """
    import sysconfig

    import cloudpickle

    installed = tuple(str(Path(p).resolve()) for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
                                                       sysconfig.get_path("stdlib")} if p)
    modules = set()
    for cls in classes:
        module = sys.modules.get(getattr(cls, "__module__", "") or "")
        file = getattr(module, "__file__", None)
        if module is None or not file or module.__name__ in ("__main__", "builtins"):
            continue
        if not str(Path(file).resolve()).startswith(installed):
            modules.add(module)
    registered = []
    try:
        for module in modules:
            with contextlib.suppress(ValueError):
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
        yield
    finally:
        for module in registered:
            with contextlib.suppress(ValueError):
                cloudpickle.unregister_pickle_by_value(module)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
