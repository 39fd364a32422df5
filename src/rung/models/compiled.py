"""A direct route through a fitted scikit-learn pipeline, for the gateway's hot path.

A ``ColumnTransformer`` on a pandas frame costs about 1.8 ms a call on a
small machine, whatever the number of rows: building and indexing the
frame, joblib's dispatch, validation. The fitted transformers inside it
cost about 0.3 ms together on plain arrays. A :class:`CompiledPipeline`
calls those same fitted objects, in the same order, on numpy arrays built
straight from the request's columns, and stacks their outputs as the
``ColumnTransformer`` would; the rest of the pipeline then runs unchanged.
The arithmetic is scikit-learn's own, so the answers are the same to the
last bit. Where a fitted step's arithmetic is simple (one-hot encoding,
imputing, scaling, a logistic regression) the route goes further and runs
it as the few numpy operations it is (:mod:`rung.models.lowered`), without
scikit-learn's input validation around each call, which is most of what a
small request costs.

That claim is checked, never assumed: :func:`compile_model` runs both routes
on the version's own training rows (all of them up to a sample, one at a
time for a few, with each column missing in turn, each numeric column
infinite and each text column set to a category never seen) and keeps the
compiled route only when every output is identical and every input the
estimator refuses is refused too; the lowered route first, else the
route through the fitted steps.
Anything it does not recognise (sparse output, pandas output, a custom
step that needs a frame) stays on the estimator, with the reason logged.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rung.models.lowered import lower, lower_final, lowered_names
from rung.models.signature import Columns, to_frame

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from rung.models.loaded import LoadedModel

__all__ = ["CompiledPipeline", "compile_model"]

log = logging.getLogger(__name__)

SAMPLE_ROWS = 256
UNSEEN = "\x00rung-unseen-category"
# Fitted on a frame, called on an array: scikit-learn warns once per call. The compiled route does
# this on purpose, column by column as the frame would be indexed, and checks the result at load time.
warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)


@dataclass(frozen=True)
class _Block:
    """One part of the ``ColumnTransformer``: a fitted transformer (``None``: passthrough) and its columns."""

    transformer: Any
    names: tuple[str, ...]
    one_d: bool  # given a single column name: the transformer takes a 1-D array, as from frame[name]
    numeric: bool


@dataclass(frozen=True)
class CompiledPipeline:
    """``predict`` / ``predict_proba`` over plain columns (``{name: [values]}``), like the estimator's over a frame."""

    blocks: tuple[_Block, ...]
    final: Any  # the rest of the pipeline: a fitted estimator or a shorter Pipeline

    def features(self, columns: Columns) -> np.ndarray:
        import numpy as np

        parts = []
        for block in self.blocks:
            data = _array(block, columns)
            parts.append(data if block.transformer is None else block.transformer.transform(data))
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def predict(self, columns: Columns) -> Any:
        return self.final.predict(self.features(columns))

    def predict_proba(self, columns: Columns) -> Any:
        return self.final.predict_proba(self.features(columns))

    @property
    def lowered(self) -> tuple[str, ...]:
        """The steps that run as numpy operations (:mod:`rung.models.lowered`), by class name; empty: none."""
        return tuple(name for step in (*(b.transformer for b in self.blocks), self.final) for name in lowered_names(step))


def _array(block: _Block, columns: Columns) -> np.ndarray:
    import numpy as np

    if block.one_d:
        values = columns[block.names[0]]
        return np.asarray(values, dtype=float) if block.numeric else np.asarray(values, dtype=object)
    if block.numeric:  # a numeric column is an int64 or float64 array already (check_columns), or a list
        return np.array([columns[name] for name in block.names], dtype=float).T
    out = np.empty((len(columns[block.names[0]]), len(block.names)), dtype=object)
    for j, name in enumerate(block.names):
        out[:, j] = columns[name]
    return out


def compile_model(model: LoadedModel, sample: pd.DataFrame | None) -> tuple[CompiledPipeline | None, str]:
    """The compiled route for ``model`` if it answers exactly as the estimator on ``sample``; else ``None`` and why."""
    if model.flavor != "sklearn":
        return None, f"{model.flavor} flavour"
    if model.prepare:
        return None, "a prepare hook runs before the estimator"
    if not model.columns:
        return None, "no input signature"
    if sample is None or sample.empty:
        return None, "no training rows to check it against"
    numeric = {c.name for c in model.columns if c.numeric}
    try:
        plain = _compile(model.estimator, numeric)
    except _Unsupported as exc:
        return None, str(exc)
    missing = [c.name for c in model.columns if c.name not in sample.columns]
    if missing:
        return None, f"the training rows lack {missing[0]!r}"
    checks = _checks(model, sample)
    lowered = _lower(plain)
    if lowered.lowered:
        problem = _problem(model, lowered, checks)
        if not problem:
            return lowered, ""
        log.info("%s: the lowered route is not used: %s", model.ref, problem)
    problem = _problem(model, plain, checks)
    return (None, problem) if problem else (plain, "")


def _problem(model: LoadedModel, compiled: CompiledPipeline, checks: list[tuple[str, Columns]]) -> str:
    try:
        return _differs(model, compiled, checks)
    except Exception as exc:  # whatever the compiled route trips on, the estimator keeps the job
        return f"the compiled route fails: {type(exc).__name__}: {exc}"


def _lower(compiled: CompiledPipeline) -> CompiledPipeline:
    """``compiled`` with the steps :mod:`rung.models.lowered` knows as numpy operations."""
    blocks = tuple(_Block(lower(b.transformer), b.names, b.one_d, b.numeric) for b in compiled.blocks)
    return CompiledPipeline(blocks, lower_final(compiled.final))


class _Unsupported(Exception):
    pass


def _compile(estimator: Any, numeric: set[str]) -> CompiledPipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if _pandas_output(estimator):
        raise _Unsupported("the estimator is set to output frames")
    if isinstance(estimator, Pipeline) and isinstance(estimator.steps[0][1], ColumnTransformer):
        head = estimator.steps[0][1]
        rest = estimator.steps[1:]
        if not rest or any(step in (None, "passthrough") for _, step in rest):
            raise _Unsupported("the pipeline has no estimator after its ColumnTransformer, or a passthrough step")
        final = rest[0][1] if len(rest) == 1 else estimator[1:]
        return CompiledPipeline(_blocks(head, numeric), final)
    names = getattr(estimator, "feature_names_in_", None)
    if names is None or not hasattr(estimator, "predict"):
        raise _Unsupported("neither a pipeline that starts with a ColumnTransformer nor an estimator fitted on named columns")
    names = tuple(str(n) for n in names)
    return CompiledPipeline((_Block(None, names, False, all(n in numeric for n in names)),), estimator)


def _blocks(head: Any, numeric: set[str]) -> tuple[_Block, ...]:
    from sklearn.preprocessing import FunctionTransformer

    if getattr(head, "sparse_output_", False):
        raise _Unsupported("the ColumnTransformer's output is sparse")
    names_in = getattr(head, "feature_names_in_", None)
    indices = getattr(head, "_transformer_to_input_indices", None)
    if names_in is None or not isinstance(indices, dict):
        raise _Unsupported("the ColumnTransformer was not fitted on named columns")
    blocks = []
    for name, transformer, spec in head.transformers_:
        chosen = tuple(str(names_in[i]) for i in indices.get(name, []))
        if isinstance(transformer, str) and transformer == "drop" or not chosen:
            continue
        if _pandas_output(transformer):
            raise _Unsupported(f"{name} is set to output frames")
        if transformer == "passthrough" or isinstance(transformer, FunctionTransformer) and transformer.func is None:
            transformer = None
        blocks.append(_Block(transformer, chosen, isinstance(spec, str), all(n in numeric for n in chosen)))
    if not blocks:
        raise _Unsupported("the ColumnTransformer selects no columns")
    return tuple(blocks)


def _pandas_output(estimator: Any) -> bool:
    config = getattr(estimator, "_sklearn_output_config", None) or {}
    return config.get("transform") not in (None, "default")


def _checks(model: LoadedModel, sample: pd.DataFrame) -> list[tuple[str, Columns]]:
    """What both routes must agree on: the sample, single rows, each column missing, each text column unseen."""
    import pandas as pd

    rows = sample.sample(min(SAMPLE_ROWS, len(sample)), random_state=0) if len(sample) > SAMPLE_ROWS else sample
    columns: Columns = {}
    for column in model.columns:  # as a JSON request brings them: Python values, None for missing
        columns[column.name] = [None if pd.isna(v) else v for v in rows[column.name].tolist()]
    first = {name: values[:1] for name, values in columns.items()}
    checks = [(f"{len(rows)} training rows", columns), ("a training row alone", first),
              ("another training row alone", {name: values[-1:] for name, values in columns.items()})]
    for column in model.columns:
        checks.append((f"a row without {column.name!r}", {**first, column.name: [None]}))
        if column.numeric:
            checks.append((f"a row with an infinite {column.name!r}", {**first, column.name: [float("inf")]}))
        else:
            checks.append((f"a row with an unseen {column.name!r}", {**first, column.name: [UNSEEN]}))
    return checks


def _differs(model: LoadedModel, compiled: CompiledPipeline, checks: list[tuple[str, Columns]]) -> str:
    """The first disagreement between the two routes, or ``""``."""
    for label, columns in checks:
        try:
            expected = model.predict(to_frame(model.columns, columns))
        except Exception:  # the user's estimator may raise anything; the compiled route must refuse it too
            try:
                model.outputs(compiled, columns)
            except Exception:
                continue
            return f"on {label}, the estimator refuses what the compiled route accepts"
        got = model.outputs(compiled, columns)
        for key, values in expected.items():
            if key not in got or not _same(values, got[key]):
                return f"on {label}, {key} differs from the estimator's"
    return ""


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
