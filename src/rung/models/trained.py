"""A model fresh from a team's training code, as rung's steps see it: raw rows in, answers out.

A training function returns whatever its framework fits: a scikit-learn
pipeline, a LightGBM booster, a ``torch.nn.Module``, an ONNX graph, an MLflow
``PythonModel``. :func:`as_trained` wraps it once, after training, into a
:class:`TrainedModel` that the evaluate and register steps use alike:

- it takes **raw rows** and keeps only the model's input columns (what
  :func:`rung.data.features.model_inputs` chose: declared ``features:``, or
  every known column but the target, ids and ``drop:``), so a frame with more
  columns than the model uses is fine;
- it applies the project's **prepare hook** (``train.prepare:
  FILE.py:FUNCTION``) before the model, the same function that registration
  packages with the model, so evaluation, certification, serving, batch
  scoring and monitoring all see the model through the same preparation;
- it answers through the flavour's **predictor** (:func:`rung.models.flavours.adapt`),
  which gives every flavour scikit-learn's ``predict`` / ``predict_proba`` /
  ``classes_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import ConfigError
from rung.models.hooks import PrepareHook

if TYPE_CHECKING:
    import pandas as pd

    from rung.config import Settings

__all__ = ["TrainedModel", "as_trained", "trained_model"]


@dataclass
class TrainedModel:
    """What the train step returned, with what rung needs to evaluate, register and serve it."""

    native: Any  # the object the training code returned
    flavor: str  # sklearn, xgboost, lightgbm, pytorch, onnx, pyfunc
    task: str
    inputs: list[str]  # the model's raw input columns, in order
    classes: list[Any] = field(default_factory=list)  # classification: the labels, in the model's output order
    prepare: PrepareHook | None = None
    predictor: Any = None  # rung.models.flavours.adapt(native, ...): predict / predict_proba over features

    def __post_init__(self) -> None:
        self._prepare_fn = self.prepare.load() if self.prepare else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_prepare_fn", None)  # a function imported by path is found again, not pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def features(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The model's inputs from ``rows`` (extra columns ignored), through the prepare hook when there is one."""
        missing = [c for c in self.inputs if c not in rows.columns]
        if missing:
            raise ConfigError(f"the model's input column(s) {', '.join(missing)} are not in the data")
        frame = rows[self.inputs]
        if self._prepare_fn is None:
            return frame
        prepared = self._prepare_fn(frame.copy())
        if prepared is None:
            raise ConfigError(f"train.prepare: {self.prepare.spec if self.prepare else ''} returned None; return the prepared frame")
        return prepared

    def predict(self, rows: pd.DataFrame) -> Any:
        return self.predictor.predict(self.features(rows))

    def __getattr__(self, name: str) -> Any:
        # ``predict_proba`` and ``classes_`` exist exactly when the predictor has them (hasattr() is how
        # evaluation asks whether a classifier gives probabilities).
        predictor = self.__dict__.get("predictor")
        if name == "predict_proba" and predictor is not None and hasattr(predictor, "predict_proba"):
            return lambda rows: predictor.predict_proba(self.features(rows))
        if name == "classes_":
            if self.__dict__.get("classes"):
                return self.__dict__["classes"]
            if predictor is not None and hasattr(predictor, "classes_"):
                return predictor.classes_
        raise AttributeError(name)

    @property
    def gives_probabilities(self) -> bool:
        return self.task == "classification" and hasattr(self.predictor, "predict_proba")


def as_trained(
    model: Any,
    *,
    task: str,
    inputs: list[str],
    target: pd.Series | None = None,
    prepare: PrepareHook | None = None,
) -> TrainedModel:
    """Wrap what a train step returned; ``target`` (the training labels) gives a classifier's classes when the model does not.

    A :class:`TrainedModel` is returned as it is, so a step may wrap its model itself.
    """
    from rung.models.flavours import adapt, detect_flavor

    if isinstance(model, TrainedModel):
        return model
    flavor = detect_flavor(model)
    classes: list[Any] = [_plain(c) for c in getattr(model, "classes_", [])]
    if task == "classification" and not classes and target is not None:
        classes = sorted(_plain(c) for c in target.dropna().unique())
    predictor = adapt(model, flavor, task=task, classes=classes)
    return TrainedModel(native=model, flavor=flavor, task=task, inputs=list(inputs), classes=classes, prepare=prepare,
                        predictor=predictor)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def trained_model(settings: Settings, root: Path, model: Any, train_set: pd.DataFrame) -> TrainedModel:
    """What a project's train step returned, wrapped with the project's inputs, classes and prepare hook."""
    from rung.data.features import project_inputs

    target = settings.data.target
    return as_trained(
        model,
        task=settings.task,
        inputs=project_inputs(list(train_set.columns), settings.data, root),
        target=train_set[target] if target in train_set.columns else None,
        prepare=PrepareHook.from_spec(settings.prepare, root) if settings.prepare else None,
    )
