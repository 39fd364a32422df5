"""One model version in memory, whatever its flavour: ``predict`` takes a frame, returns named outputs.

Input frames are checked against the model signature: missing columns and
values of the wrong type are :class:`~rung.errors.InputError` s that name the
column; columns the model does not take are left out (a request, a batch
file or a new data set may carry more than the model uses). A version
trained with a prepare hook (``train.prepare``) carries a copy of it in its
``code/`` folder, and :meth:`LoadedModel.predict` runs it between the checked
raw columns and the estimator, as evaluation did at training time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import InputError, RungError
from rung.models.signature import Column

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["LoadedModel"]


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
    # A faster route to the same answers (rung.models.compiled), set by the gateway once verified.
    compiled: Any = None
    prepare: str | None = None  # "file.py:function" under path/code: raw rows in, the estimator's features out
    device: str = "cpu"  # where it predicts: cuda for a PyTorch or ONNX Runtime model on a GPU (serve.device)

    def __post_init__(self) -> None:
        self._prepare_fn: Any = None
        if self.prepare:
            from rung.models.hooks import load_function

            file, _, function = self.prepare.rpartition(":")
            self._prepare_fn = load_function(self.path / "code" / file, function, what=f"{self.ref}: its prepare hook")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_prepare_fn", None)  # imported again from the verified files, never pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

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
            raise InputError(f"missing input column(s): {', '.join(missing)}; the model takes {', '.join(names)}", field=missing[0])
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
        """``{"predict": labels or values}`` and, for classifiers, ``{"proba": P(positive)}``; ``frame`` as :meth:`frame` returns it."""
        if self._prepare_fn is not None:
            prepared = self._prepare_fn(frame.copy())
            if prepared is None:
                raise RungError(f"{self.ref}: its prepare hook {self.prepare} returned None")
            frame = prepared
        return self.outputs(self.estimator, frame)

    @property
    def output_names(self) -> tuple[str, ...]:
        """What :meth:`outputs` gives: ``predict``, and ``proba`` for a classifier with class probabilities."""
        if self.task == "classification" and self.classes and hasattr(self.estimator, "predict_proba"):
            return ("predict", "proba")
        return ("predict",)

    def outputs(self, predictor: Any, inputs: Any) -> dict[str, np.ndarray]:
        """:meth:`predict` through ``predictor``: the estimator on a frame, or its compiled route on columns."""
        import numpy as np

        if len(self.output_names) == 2:
            # One pass: the label is the most probable class, as predict() would say.
            proba = np.asarray(predictor.predict_proba(inputs))
            labels = np.asarray(self.classes)[proba.argmax(axis=1)]
            return {"predict": labels, "proba": proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)}
        return {"predict": np.asarray(predictor.predict(inputs))}

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """One number per row: P(positive) for binary classifiers, else the prediction."""
        outputs = self.predict(frame)
        return outputs.get("proba", outputs["predict"])
