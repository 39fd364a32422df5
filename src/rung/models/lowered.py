"""Fitted scikit-learn steps as a few numpy operations, for the compiled route's hot path.

On a small request almost all of a fitted step's time is scikit-learn's
input validation, not its arithmetic: the encoding of one row is a few
dict lookups, the validation around it hundreds of microseconds (in
``bench/predict_path.py`` the linear template's compiled predict took
about 2.5 ms a request, 0.1 ms lowered). :func:`lower` gives, for the steps whose arithmetic is simple and
whose fitted state is public (a one-hot encoder without dropped or
infrequent categories, a ``SimpleImputer`` filling NaN, a
``StandardScaler``, a ``LogisticRegression``, a ``HistGradientBoosting``
classifier or regressor on numbers), an object with the same
``transform`` / ``predict`` / ``predict_proba`` doing that arithmetic
with the same numpy operations in the same order, so the answers are the
same to the bit; anything else is left as it is.

A lowered step also refuses what the fitted one refuses on the arrays the
compiled route gives it (infinity everywhere, NaN where the step takes
none) with the same :class:`ValueError`, and hands any other input (another
dtype, a frame) to the fitted step itself. Whether the lowered route really
answers as the estimator does is not assumed here:
:func:`rung.models.compiled.compile_model` checks it on the version's
training rows and keeps the unlowered route when it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

__all__ = ["LoweredChain", "lower", "lower_final", "lowered_names"]


def lower(step: Any) -> Any:
    """``step`` as numpy operations when it is one of the transformers this module knows (or a ``Pipeline`` of
    transformers, some of them known), else ``step`` itself."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    kind = type(step)
    if isinstance(step, Pipeline):
        steps = _flatten(step)
        if steps is None:
            return step
        lowered = [lower(s) for s in steps]
        if all(a is b for a, b in zip(lowered, steps, strict=True)):
            return step
        return LoweredChain(tuple(lowered[:-1]), lowered[-1])
    if kind is OneHotEncoder:
        return _OneHot.of(step) or step
    if kind is SimpleImputer:
        return _Impute.of(step) or step
    if kind is StandardScaler:
        return _Scale.of(step) or step
    return step


def lower_final(final: Any) -> Any:
    """The estimator after the ``ColumnTransformer`` (a nested ``Pipeline`` flattened) with its steps lowered where they can be.

    ``final`` itself when none could be.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    steps = _flatten(final)
    if steps is None:
        return final
    *transforms, estimator = steps
    lowered = [lower(step) for step in transforms]
    kind = type(estimator)
    last: Any = estimator
    if kind is LogisticRegression:
        last = _Logistic.of(estimator) or estimator
    elif kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        last = _Boosted.of(estimator) or estimator
    if all(a is b for a, b in zip([*lowered, last], steps, strict=True)):
        return final
    if not lowered and not isinstance(final, Pipeline):
        return last
    return LoweredChain(tuple(lowered), last)


def lowered_names(step: Any) -> tuple[str, ...]:
    """The class names of the lowered steps in ``step`` (a chain's, in order); empty when none is."""
    if isinstance(step, LoweredChain):
        return tuple(name for s in (*step.transforms, step.estimator) for name in lowered_names(s))
    return (type(step).__name__,) if isinstance(step, _Lowered) else ()


def _flatten(final: Any) -> list[Any] | None:
    """The steps of ``final``, nested pipelines opened; ``None`` when one is a passthrough or not a plain step."""
    from sklearn.pipeline import Pipeline

    if not isinstance(final, Pipeline):
        return [final]
    out: list[Any] = []
    for _, step in final.steps:
        if step is None or isinstance(step, str):
            return None
        inner = _flatten(step)
        if inner is None:
            return None
        out.extend(inner)
    return out


@dataclass(frozen=True)
class LoweredChain:
    """Transforms then an estimator (or a last transformer), as a fitted ``Pipeline`` runs them, some of them lowered."""

    transforms: tuple[Any, ...]
    estimator: Any

    def _features(self, X: Any) -> Any:
        for step in self.transforms:
            X = step.transform(X)
        return X

    def predict(self, X: Any) -> Any:
        return self.estimator.predict(self._features(X))

    def predict_proba(self, X: Any) -> Any:
        return self.estimator.predict_proba(self._features(X))

    def transform(self, X: Any) -> Any:
        return self.estimator.transform(self._features(X))


class _Lowered:
    """A lowered step: ``fitted`` is the scikit-learn object it stands for, given what it does not take."""

    fitted: Any

    def _takes(self, X: Any) -> bool:
        return isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype == np.float64


def _refuse_infinity(X: np.ndarray) -> None:
    if np.isinf(X).any():
        raise ValueError("Input X contains infinity or a value too large for dtype('float64').")


@dataclass(frozen=True)
class _OneHot(_Lowered):
    """``OneHotEncoder(sparse_output=False)``, unknown categories ignored, nothing dropped or grouped: a dict lookup per value.

    A category that is NaN matches NaN (as scikit-learn's encoder does);
    ``None`` matches only ``None``.
    """

    fitted: Any
    tables: tuple[dict[Any, int], ...]  # per input column: category -> its output column
    nans: tuple[int, ...]  # per input column: the output column of a NaN category, or -1
    width: int
    dtype: Any
    numeric: bool  # fitted on numbers: infinity is refused, as the encoder's validation does

    @classmethod
    def of(cls, encoder: Any) -> _OneHot | None:
        if (encoder.sparse_output or encoder.drop is not None or encoder.max_categories is not None
                or encoder.min_frequency is not None or encoder.handle_unknown not in ("ignore", "infrequent_if_exist")
                or getattr(encoder, "_infrequent_enabled", True)):
            return None
        tables, nans, offset = [], [], 0
        kinds = {np.asarray(c).dtype.kind for c in encoder.categories_}
        if not (kinds <= {"O"} or kinds <= set("iuf")):
            return None
        for categories in encoder.categories_:
            table: dict[Any, int] = {}
            nan = -1
            for i, category in enumerate(np.asarray(categories).tolist()):
                if isinstance(category, float) and math.isnan(category):
                    nan = offset + i
                elif category is None or isinstance(category, (str, int, float)) and not isinstance(category, bool):
                    table[category] = offset + i
                else:
                    return None
            if len(table) + (nan >= 0) != len(categories):  # two categories that a dict would take for one
                return None
            tables.append(table)
            nans.append(nan)
            offset += len(categories)
        return cls(encoder, tuple(tables), tuple(nans), offset, encoder.dtype, kinds <= set("iuf"))

    def transform(self, X: Any) -> Any:
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == len(self.tables)
                and (X.dtype == np.float64 if self.numeric else X.dtype == object)):
            return self.fitted.transform(X)
        if self.numeric:
            _refuse_infinity(X)
        rows = len(X)
        out = np.zeros((rows, self.width), dtype=self.dtype)
        every = np.arange(rows)
        for j, (table, nan) in enumerate(zip(self.tables, self.nans, strict=True)):
            values = X[:, j].tolist()
            codes = np.fromiter(map(table.get, values, repeat(-1)), dtype=np.intp, count=rows)
            if nan >= 0:
                codes[[v != v for v in values]] = nan
            known = codes >= 0
            out[every[known], codes[known]] = 1
        return out


@dataclass(frozen=True)
class _Impute(_Lowered):
    """``SimpleImputer`` filling NaN in float64 columns with its fitted statistics, every one of them a number."""

    fitted: Any
    statistics: np.ndarray

    @classmethod
    def of(cls, imputer: Any) -> _Impute | None:
        statistics = imputer.statistics_
        missing = imputer.missing_values
        if (imputer.add_indicator or not (isinstance(missing, float) and math.isnan(missing))
                or statistics.dtype != np.float64 or np.isnan(statistics).any()
                or getattr(imputer, "_fit_dtype", None) != np.float64):
            return None
        return cls(imputer, statistics)

    def transform(self, X: Any) -> Any:
        if not self._takes(X) or X.shape[1] != len(self.statistics):
            return self.fitted.transform(X)
        _refuse_infinity(X)
        out = X.copy(order="K")
        np.copyto(out, self.statistics, where=np.isnan(out))
        return out


@dataclass(frozen=True)
class _Scale(_Lowered):
    """``StandardScaler`` (copying): subtract the mean, divide by the scale, in place on a copy as it does."""

    fitted: Any

    @classmethod
    def of(cls, scaler: Any) -> _Scale | None:
        return cls(scaler) if scaler.copy else None

    def transform(self, X: Any) -> Any:
        scaler = self.fitted
        if not self._takes(X) or X.shape[1] != scaler.n_features_in_:
            return scaler.transform(X)
        _refuse_infinity(X)
        out = X.copy(order="K")
        if scaler.with_mean:
            out -= scaler.mean_.astype(out.dtype)
        if scaler.with_std:
            out /= scaler.scale_.astype(out.dtype)
        return out


@dataclass(frozen=True)
class _Logistic(_Lowered):
    """``LogisticRegression`` with dense float64 coefficients: ``X @ coef.T + intercept``, then expit or softmax."""

    fitted: Any

    @classmethod
    def of(cls, model: Any) -> _Logistic | None:
        coef = model.coef_
        if not isinstance(coef, np.ndarray) or coef.dtype != np.float64 or len(model.classes_) < 2:
            return None
        return cls(model)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        if not np.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity.")
        model = self.fitted
        scores = X @ model.coef_.T + model.intercept_
        return scores.reshape(-1) if scores.ndim > 1 and scores.shape[1] == 1 else scores

    def _takes(self, X: Any) -> bool:
        return super()._takes(X) and X.shape[1] == self.fitted.n_features_in_

    def predict(self, X: Any) -> Any:
        if not self._takes(X):
            return self.fitted.predict(X)
        scores = self._scores(X)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.fitted.classes_.take(indices, axis=0)

    def predict_proba(self, X: Any) -> Any:
        from scipy.special import expit
        from sklearn.utils.extmath import softmax

        if not self._takes(X):
            return self.fitted.predict_proba(X)
        scores = self._scores(X)
        if len(self.fitted.classes_) <= 2:
            expit(scores, out=scores)
            return np.stack([1 - scores, scores], axis=1)
        return softmax(scores, copy=False)


@dataclass(frozen=True, eq=False)
class _Boosted(_Lowered):
    """``HistGradientBoosting*`` on numeric inputs: every tree walked at once, one level at a time, in numpy.

    scikit-learn calls each tree's predictor in turn, about 12 µs a tree and
    call whatever the rows: 2.5 ms for one row through 200 trees, nearly all
    of a small request's time. Here the rows go down all the trees together,
    a few array operations a level, with scikit-learn's rule at each node:
    NaN goes the side the node learnt, otherwise ``x <= threshold`` goes left.
    The leaf values are added tree by tree onto the baseline (a cumulative
    sum, the order of scikit-learn's ``+=``), so the raw scores, and the
    probabilities scikit-learn's own loss makes of them, are the same to the
    bit. Models with native categorical splits are left to scikit-learn, and
    so are batches over :data:`MAX_ROWS` rows, where its per-tree loop over
    the rows costs little.
    """

    MAX_ROWS = 32

    fitted: Any
    feature: np.ndarray  # per node of all the trees: the feature it splits on (0 at a leaf)
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray  # the node's children as indices into these arrays; a leaf is its own child
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray  # each tree's root, iteration by iteration, the trees of one iteration in class order
    levels: int  # the deepest leaf's depth: steps down that every row takes

    @classmethod
    def of(cls, model: Any) -> _Boosted | None:
        if getattr(model, "_preprocessor", None) is not None or not model._predictors:
            return None
        trees = [tree.nodes for iteration in model._predictors for tree in iteration]
        if any(nodes["is_categorical"].any() for nodes in trees) or model._baseline_prediction.dtype != np.float64:
            return None
        sizes = [len(nodes) for nodes in trees]
        starts = np.cumsum([0, *sizes[:-1]])
        nodes = np.concatenate(trees)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(len(nodes))
        offset = np.repeat(starts, sizes)  # each node's tree start: the trees' child indices are their own
        left = np.where(leaf, own, nodes["left"].astype(np.intp) + offset)
        right = np.where(leaf, own, nodes["right"].astype(np.intp) + offset)
        return cls(model, np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp),
                   nodes["num_threshold"].astype(np.float64), nodes["missing_go_to_left"].astype(bool), left, right,
                   nodes["value"].astype(np.float64), starts.astype(np.intp), int(nodes["depth"].max()))

    def _takes(self, X: Any) -> bool:
        return super()._takes(X) and X.shape[1] == self.fitted.n_features_in_ and 0 < X.shape[0] <= self.MAX_ROWS

    def _raw(self, X: np.ndarray) -> np.ndarray:
        """What scikit-learn's ``_raw_predict`` gives: (rows, trees per iteration)."""
        rows = np.arange(X.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (X.shape[0], len(self.roots)))
        for _ in range(self.levels):
            x = X[rows, self.feature[node]]
            goes_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(goes_left, self.left[node], self.right[node])
        per_class = self.fitted.n_trees_per_iteration_
        leaves = self.value[node].reshape(X.shape[0], -1, per_class)
        baseline = np.broadcast_to(self.fitted._baseline_prediction.reshape(1, 1, per_class), (X.shape[0], 1, per_class))
        return np.concatenate([baseline, leaves], axis=1).cumsum(axis=1)[:, -1, :]

    def predict(self, X: Any) -> Any:
        if not self._takes(X):
            return self.fitted.predict(X)
        raw = self._raw(X)
        if not hasattr(self.fitted, "classes_"):
            return self.fitted._loss.link.inverse(raw.ravel())
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return self.fitted.classes_[encoded]

    def predict_proba(self, X: Any) -> Any:
        if not self._takes(X):
            return self.fitted.predict_proba(X)
        return self.fitted._loss.predict_proba(self._raw(X))

