"""The MLflow adapter: runs, datasets, the model registry and its aliases.

rung writes to MLflow what an MLflow user expects to find there (params,
metrics, a ``log_input`` dataset with its digest, the model with signature
and input example, tags for the code version) and adds what MLflow lacks:
the sha256 of every model file, recorded at registration so a tampered
model can be refused before it is loaded. scikit-learn models are saved in
the skops format, not pickle. XGBoost and LightGBM use their native flavours.

On a local SQLite tracking store, registrations from concurrent processes
are serialised with a file lock: MLflow's SQLite store does not guard
version numbers or its own migrations against concurrent writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import RungError, TrackingError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Tracking", "Registered", "detect_flavor", "hash_tree", "CHAMPION", "CHALLENGER"]

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


def detect_flavor(model: Any) -> str:
    module = type(model).__module__
    if module.startswith("xgboost"):
        return "xgboost"
    if module.startswith("lightgbm"):
        return "lightgbm"
    if hasattr(model, "predict") and hasattr(model, "fit"):
        return "sklearn"
    raise TrackingError(
        f"cannot register a {type(model).__name__}: rung registers scikit-learn, XGBoost and LightGBM models; "
        "return one of those from the train step"
    )


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

        return mlflow.MlflowClient(self.uri, self.uri)

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
        fence: Callable[[], None] | None = None,
    ) -> Registered:
        """Log a run with the model and register it as a new version of ``name``.

        The new version gets the ``challenger`` alias; the first version of a
        model also gets ``champion``. If anything fails after the version
        was created, the version is deleted: no half-registered model.
        ``fence`` is called just before the version is created and again
        before any alias moves; whatever it raises stops the registration
        (the register step passes one that checks its run is still alive).
        """
        flavor = detect_flavor(model)
        try:
            with self._lock(), self.fluent() as mlflow:
                return self._register(
                    mlflow,
                    model, flavor, name, experiment, train, target, params, metrics, tags, data_digest, data_source,
                    data_path, artifacts, fence or (lambda: None),
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
        fence: Callable[[], None],
    ) -> Registered:
        from mlflow.models import infer_signature

        client = self._client()
        experiment_id = self._experiment_id(client, experiment)
        X = train.drop(columns=[target])
        example = X.head(5)
        signature = infer_signature(example, model.predict(example))
        created_version: int | None = None
        with mlflow.start_run(experiment_id=experiment_id, run_name=tags.get("rung.run_id", "")[:8]) as run:
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
                info = self._log_model(mlflow, model, flavor, signature, example)
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

    @staticmethod
    def _log_model(mlflow: Any, model: Any, flavor: str, signature: Any, example: Any) -> Any:
        from importlib.metadata import version as installed

        common = {"name": "model", "signature": signature, "input_example": example}
        if flavor == "xgboost":
            return mlflow.xgboost.log_model(model, pip_requirements=[f"xgboost=={installed('xgboost')}"], **common)
        if flavor == "lightgbm":
            return mlflow.lightgbm.log_model(model, pip_requirements=[f"lightgbm=={installed('lightgbm')}"], **common)
        import skops.io

        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
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
