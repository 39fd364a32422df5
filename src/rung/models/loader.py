"""A registered model version, fetched from the registry, verified and loaded.

The model files are copied out of the MLflow registry into a local cache
(``.rung/models/NAME/VERSION``) and their sha256 digests are checked against
the ones recorded at registration *before* anything is deserialised: a
tampered file is refused, never loaded. Certification, serving, monitoring
and reproduction all load versions through :class:`ModelLoader`.

A process that has not imported MLflow fetches the files in a child
process: importing MLflow costs some 60 MiB that would stay for the
process's life, and a gateway on a host that did not train the version
(or a ``rung predict`` there) needs MLflow for that copy only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rung.errors import ArtifactCorrupted, ArtifactUnavailable, IntegrityError, RungError, TrackingError
from rung.models.flavours import load_native, read_mlmodel, read_signature
from rung.models.loaded import LoadedModel

if TYPE_CHECKING:
    import pandas as pd

    from rung.pipeline.artifacts import ArtifactStore
    from rung.store.records import ModelVersionRecord
    from rung.tracking import Tracking

__all__ = ["ModelLoader", "training_inputs", "verify_files"]


def verify_files(path: Path, expected: dict[str, str], ref: str) -> None:
    """Raise :class:`IntegrityError` unless the files under ``path`` hash to ``expected``."""
    from rung.tracking import hash_tree

    actual = hash_tree(path)
    if not expected:
        raise IntegrityError(f"{ref}: no sha256 digests were recorded at registration; re-register it with `rung run`")
    changed = sorted(k for k in expected if actual.get(k) != expected[k])
    added = sorted(set(actual) - set(expected))
    if changed or added:
        names = ", ".join((changed + added)[:3])
        raise IntegrityError(f"{ref}: model files do not match the sha256 recorded at registration ({names}); refusing to load it")


@dataclass(frozen=True)
class ModelLoader:
    """Loads versions from ``tracking``'s registry through the verified cache at ``cache_dir``."""

    cache_dir: Path
    tracking: Tracking
    task: str
    device: str = "cpu"  # serve.device: where PyTorch and ONNX Runtime models predict (auto, cpu, cuda)

    def fetch_verified(self, record: ModelVersionRecord) -> Path:
        """The folder of ``record``'s files, copied out of the registry if needed and checked against their sha256.

        What a gateway asks before it accepts a routing table naming the version,
        and before it loads one: :class:`IntegrityError` if the files were changed.
        """
        target = self.cache_dir / record.name / str(record.version)
        if not target.is_dir():
            self._download(record, target)
        verify_files(target, record.sha256, record.ref)
        return target

    def load(self, record: ModelVersionRecord) -> LoadedModel:
        """Copy ``record``'s files out of the registry, verify them, load the native flavour."""
        target = self.fetch_verified(record)
        meta = read_mlmodel(target)
        estimator, flavor = load_native(target, meta, record.ref, task=self.task, device=self.device)
        classes = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
        return LoadedModel(
            name=record.name,
            version=record.version,
            flavor=flavor,
            task=self.task,
            columns=read_signature(meta) or read_signature(record.lineage),  # adopted: inferred from its example
            estimator=estimator,
            path=target,
            classes=classes,
            device=str(getattr(estimator, "device", "cpu")),
            prepare=((meta.get("metadata") or {}).get("rung") or {}).get("prepare"),
        )

    def _download(self, record: ModelVersionRecord, target: Path) -> None:
        import tempfile

        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            # A folder inside the temporary one is what moves into place: MLflow may
            # return ``tmp`` itself, which is private (0700) and owned by the cleanup.
            staging = Path(tmp) / "files"
            staging.mkdir()
            if "mlflow" in sys.modules:
                local, failure = _download_artifacts(self.tracking, record.model_uri, staging)
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor
                from concurrent.futures.process import BrokenProcessPool

                try:
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                        local, failure = child.submit(_download_artifacts, self.tracking, record.model_uri, staging).result()
                except BrokenProcessPool as exc:
                    raise TrackingError(f"{record.ref}: the process fetching the model from MLflow at {self.tracking.uri} "
                                        "died; try again") from exc
            if local is None:
                raise TrackingError(f"{record.ref}: cannot fetch the model from MLflow at {self.tracking.uri}: {failure}")
            (local / "registered_model_meta").unlink(missing_ok=True)
            try:
                local.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                # another process put it there first: the same files, verified next


def _download_artifacts(tracking: Tracking, model_uri: str, staging: Path) -> tuple[Path | None, str]:
    """The folder MLflow copied ``model_uri`` to under ``staging``, or ``None`` and the first line of why not.

    The reason travels as text: a child process returns it, and a library's
    exception may not unpickle in the parent.
    """
    try:
        with tracking.fluent() as mlflow:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(staging))), ""
    except Exception as exc:
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def training_inputs(record: ModelVersionRecord, artifacts: ArtifactStore, target: str) -> pd.DataFrame:
    """The version's training data snapshot without the target: the rows the model was built for.

    The compiled route and the monitoring reference are checked against
    these rows, so a host that serves a version it did not train (a second
    gateway replica) needs them too: the artifact store fetches them from
    ``artifacts.uri``. Without one, :class:`~rung.errors.ArtifactCorrupted`
    says so and names the setting; :class:`~rung.errors.ArtifactUnavailable`
    when the remote cannot be reached.
    """
    snapshot = (record.lineage.get("data") or {}).get("snapshot")
    if not snapshot:
        raise RungError(f"{record.ref}: no data snapshot is recorded in its lineage; re-register it with `rung run`")
    try:
        frame = artifacts.get(snapshot)
    except ArtifactCorrupted as exc:
        if artifacts.uri is None and not artifacts.exists(snapshot):
            raise ArtifactCorrupted(
                f"{record.ref}: its training data snapshot {snapshot} is not on this host ({artifacts.root}); set "
                "artifacts.uri (or RUNG_ARTIFACTS_URI) to the artifact store the training host writes to, "
                "and this host fetches it") from exc
        raise ArtifactCorrupted(f"{record.ref}: its data snapshot cannot be read: {exc}") from exc
    except ArtifactUnavailable as exc:
        raise ArtifactUnavailable(f"{record.ref}: its data snapshot cannot be fetched: {exc}") from exc
    return frame.drop(columns=[target], errors="ignore")
