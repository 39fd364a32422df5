"""A registered model version, verified and loaded for prediction.

The model files are copied out of the MLflow registry into
``.rung/models/NAME/VERSION`` and their sha256 digests are checked against
the ones recorded at registration *before* anything is deserialised: a
tampered file is refused, never loaded. The native flavour is loaded
(scikit-learn via skops, XGBoost, LightGBM) because calling the estimator
directly is several times faster than going through ``pyfunc``; other
flavours fall back to ``pyfunc``.

Input frames are checked against the model signature: missing columns,
unknown columns and values of the wrong type are :class:`InputError` s
that name the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import IntegrityError, RungError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from rung.project import Project
    from rung.store.records import ModelVersionRecord

__all__ = ["InputError", "Column", "LoadedModel", "fetch_verified", "load_version", "training_inputs", "verify_files"]

NUMERIC = {"double", "float", "long", "integer", "boolean"}


class InputError(RungError):
    """A request's input does not fit the model signature; ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow signature type: double, long, string, boolean, ...

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC


@dataclass
class LoadedModel:
    """One version in memory: ``predict`` takes a frame and returns named outputs."""

    name: str
    version: int
    flavor: str
    task: str
    columns: list[Column]
    estimator: Any
    path: Path
    classes: list[Any] = field(default_factory=list)
    # A faster route to the same answers (rung.serving.compiled), set by the gateway once verified.
    compiled: Any = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def frame(self, rows: list[dict[str, Any]] | dict[str, list[Any]] | pd.DataFrame) -> pd.DataFrame:
        """A frame with the signature's columns, in order, with their types; else :class:`InputError`."""
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if frame.empty:
            raise InputError("the input has no rows", field="inputs")
        if not self.columns:
            return frame
        names = [c.name for c in self.columns]
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise InputError(f"missing input column(s): {', '.join(missing)}", field=missing[0])
        extra = [str(c) for c in frame.columns if c not in set(names)]
        if extra:
            raise InputError(f"unknown input column(s): {', '.join(extra)}; the model takes {', '.join(names)}", field=extra[0])
        frame = frame[names]
        for column in self.columns:
            values = frame[column.name]
            if column.numeric:
                if values.dtype.kind not in "biuf":
                    converted = pd.to_numeric(values, errors="coerce")
                    bad = converted.isna() & values.notna()
                    if bad.any():
                        example = values[bad].iloc[0]
                        raise InputError(f"column {column.name}: expected a number, got {example!r}", field=column.name)
                    frame = frame.assign(**{column.name: converted})
            elif values.dtype.kind in "biuf":
                raise InputError(f"column {column.name}: expected text, got a number", field=column.name)
        return frame

    def predict(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """``{"predict": labels or values}`` and, for classifiers, ``{"proba": P(positive)}``."""
        return self.outputs(self.estimator, frame)

    def outputs(self, predictor: Any, inputs: Any) -> dict[str, np.ndarray]:
        """:meth:`predict` through ``predictor``: the estimator on a frame, or its compiled route on columns."""
        import numpy as np

        if self.flavor != "pyfunc" and self.task == "classification" and self.classes and hasattr(self.estimator, "predict_proba"):
            # One pass: the label is the most probable class, as predict() would say.
            proba = np.asarray(predictor.predict_proba(inputs))
            labels = np.asarray(self.classes)[proba.argmax(axis=1)]
            return {"predict": labels, "proba": proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)}
        return {"predict": np.asarray(predictor.predict(inputs))}

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """One number per row: P(positive) for binary classifiers, else the prediction."""
        outputs = self.predict(frame)
        return outputs.get("proba", outputs["predict"])


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


def fetch_verified(project: Project, record: ModelVersionRecord) -> Path:
    """The folder of ``record``'s files, copied out of the registry if needed and checked against their sha256.

    What a gateway asks before it accepts a routing table naming the version,
    and before it loads one: :class:`IntegrityError` if the files were changed.
    """
    target = project.state_dir / "models" / record.name / str(record.version)
    if not target.is_dir():
        _download(project, record, target)
    verify_files(target, record.sha256, record.ref)
    return target


def load_version(project: Project, record: ModelVersionRecord) -> LoadedModel:
    """Copy ``record``'s files out of the registry, verify them, load the native flavour."""
    ref = record.ref
    target = fetch_verified(project, record)
    meta = _mlmodel(target)
    flavors = meta.get("flavors", {})
    estimator, flavor = _load_native(target, flavors, ref)
    columns = _signature(meta)
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
    return LoadedModel(
        name=record.name,
        version=record.version,
        flavor=flavor,
        task=project.settings.task,
        columns=columns,
        estimator=estimator,
        path=target,
        classes=classes,
    )


def training_inputs(project: Project, record: ModelVersionRecord) -> pd.DataFrame:
    """The version's training data snapshot without the target: the rows the model was built for."""
    snapshot = (record.lineage.get("data") or {}).get("snapshot")
    if not snapshot:
        raise RungError(f"{record.ref}: no data snapshot is recorded in its lineage; re-register it with `rung run`")
    try:
        frame = project.artifacts.get(snapshot)
    except RungError as exc:
        raise RungError(f"{record.ref}: its data snapshot cannot be read: {exc}") from exc
    return frame.drop(columns=[project.settings.data.target], errors="ignore")


def _download(project: Project, record: ModelVersionRecord, target: Path) -> None:
    import tempfile

    from rung.errors import TrackingError

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        # A folder inside the temporary one is what moves into place: MLflow may
        # return ``tmp`` itself, which is private (0700) and owned by the cleanup.
        staging = Path(tmp) / "files"
        staging.mkdir()
        try:
            with project.tracking.fluent() as mlflow:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=record.model_uri, dst_path=str(staging)))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TrackingError(f"{record.ref}: cannot fetch the model from MLflow at {project.tracking_uri}: {first}") from exc
        (local / "registered_model_meta").unlink(missing_ok=True)
        try:
            local.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            # another process put it there first: the same files, verified next


def _mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load((path / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RungError(f"{path}: no readable MLmodel file ({exc})") from exc


def _load_native(path: Path, flavors: dict[str, Any], ref: str) -> tuple[Any, str]:
    from rung.optional import require

    try:
        if "sklearn" in flavors:
            conf = flavors["sklearn"]
            if conf.get("serialization_format") == "skops":
                import skops.io

                file = path / conf["pickled_model"]
                trusted = skops.io.get_untrusted_types(file=file)
                allowed = set(conf.get("skops_trusted_types") or [])
                unexpected = [t for t in trusted if t not in allowed]
                if unexpected:
                    raise IntegrityError(f"{ref}: the model file holds types not trusted at registration: {unexpected[:3]}")
                return skops.io.load(file, trusted=trusted), "sklearn"
        if "xgboost" in flavors:
            import mlflow.xgboost

            require("xgboost", purpose=f"{ref} (an XGBoost model)")

            return mlflow.xgboost.load_model(str(path)), "xgboost"
        if "lightgbm" in flavors:
            import mlflow.lightgbm

            require("lightgbm", purpose=f"{ref} (a LightGBM model)")

            return mlflow.lightgbm.load_model(str(path)), "lightgbm"
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(path)), "pyfunc"
    except RungError:
        raise
    except Exception as exc:
        raise RungError(f"{ref}: the model could not be loaded: {type(exc).__name__}: {exc}") from exc


def _signature(meta: dict[str, Any]) -> list[Column]:
    import json

    raw = (meta.get("signature") or {}).get("inputs")
    if not raw:
        return []
    spec = json.loads(raw) if isinstance(raw, str) else raw
    return [Column(str(item.get("name")), str(item.get("type", "string"))) for item in spec if item.get("name") is not None]
