"""``rung certify``: the gate a model version passes before it may be released.

A version is *certified* when none of its checks failed. The checks, in
order: the model files match the sha256 recorded at registration; its
metrics meet the absolute thresholds; it is not worse than the current
champion by more than a margin, overall and per slice; in-process
prediction fits the latency budget (or, on a host too busy for it, is not
much slower than the champion timed in the same run); its inputs are the
champion's (bar declared changes); the project's own tests pass; declared
behaviour expectations (directional, invariance) hold. A check that cannot
apply (no champion yet, a slice too small, pytest missing) is ``skipped``,
with the reason.

The rules are plain functions of numbers, columns and scores
(:func:`threshold_check`, :func:`champion_check`, :func:`slice_checks`,
:func:`schema_check`, :func:`latency_check`, :func:`behaviour_check`);
:func:`certify` gathers their inputs from the registry and records the
outcome: an event in the metadata store and tags on the MLflow version, so
CI and a deployment controller read the same verdict.

Two kinds of "no": a version that fails a check gives a report with
``certified`` false; a gate that cannot run (bad ``certify:`` settings, no
data snapshot, a model that cannot be loaded for a reason other than
tampering) raises :class:`~rung.errors.CertificationError`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from rung.config import BehaviourCheck, Bound, ChampionMargin, LatencyBudget, SliceGate, TestsGate
from rung.errors import CertificationError, IntegrityError, RungError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from rung.delivery.clock import Clock
    from rung.project import Project
    from rung.serving.loader import Column, LoadedModel
    from rung.store.records import ModelVersionRecord

__all__ = [
    "Check",
    "CertificationReport",
    "certify",
    "threshold_check",
    "champion_check",
    "slice_checks",
    "schema_check",
    "latency_check",
    "behaviour_check",
    "validate_behaviour",
    "DEFAULT_CHAMPION_MARGIN",
]

Status = Literal["passed", "failed", "skipped"]

# Used when certify.versus_champion is not set: the primary metric may be at most this much worse.
DEFAULT_CHAMPION_MARGIN = ChampionMargin(max_drop=0.01)
TAG_LIMIT = 5000  # MLflow's limit on a tag value
EPS = 1e-12  # float slack so that a drop of exactly the margin passes
LATENCY_ROUNDS = 3  # a latency check that misses is timed again, up to this many rounds: a busy host's stalls pass
CHAMPION_LATENCY_FACTOR = 1.5  # over budget, a candidate may still be this much slower than the champion timed alongside


@dataclass(frozen=True)
class Check:
    """One row of a certification: what was measured against what was required."""

    name: str
    status: Status
    observed: float | str | None = None
    expected: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        observed = self.observed
        if isinstance(observed, float) and not math.isfinite(observed):
            observed = None  # JSON (and PostgreSQL) have no NaN
        return {"name": self.name, "status": self.status, "observed": observed, "expected": self.expected, "detail": self.detail}


@dataclass(frozen=True)
class CertificationReport:
    """Every check run on one version; ``certified`` when none failed."""

    name: str
    version: int
    checks: tuple[Check, ...]
    champion: int | None
    started_at: datetime
    duration_s: float

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def certified(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("passed", "failed", "skipped")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "certified": self.certified,
            "champion": f"{self.name}:{self.champion}" if self.champion is not None else None,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def summary(self) -> str:
        """The verdict as compact JSON under MLflow's tag limit (the full report is in the event)."""
        failed = [c.name for c in self.failed]
        while True:
            text = json.dumps(
                {"certified": self.certified, "at": self.started_at.isoformat(), "champion": self.champion,
                 "counts": self.counts(), "failed": failed},
                separators=(",", ":"),
            )
            if len(text) < TAG_LIMIT or not failed:
                return text
            failed = failed[: len(failed) // 2] + ["..."] if len(failed) > 1 else []


# -- the rules ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _bound_text(bound: Bound) -> str:
    if bound.min is not None and bound.max is not None:
        return f"in [{_fmt(bound.min)}, {_fmt(bound.max)}]"
    if bound.min is not None:
        return f"≥ {_fmt(bound.min)}"
    return f"≤ {_fmt(bound.max)}" if bound.max is not None else "any"


def _within(value: float, bound: Bound) -> bool:
    return (bound.min is None or value >= bound.min - EPS) and (bound.max is None or value <= bound.max + EPS)


def threshold_check(metric: str, value: Any, bound: Bound) -> Check:
    """``metric`` of the version lies within the absolute ``bound``."""
    name = f"threshold.{metric}"
    number = _number(value)
    if number is None:
        return Check(name, "failed", None, _bound_text(bound), f"{metric} is not a finite number ({value!r})")
    status: Status = "passed" if _within(number, bound) else "failed"
    return Check(name, status, number, _bound_text(bound))


def _margin_text(margin: ChampionMargin) -> str:
    parts = []
    if margin.max_drop is not None:
        parts.append(f"worse by ≤ {_fmt(margin.max_drop)}")
    if margin.max_relative_drop is not None:
        parts.append(f"worse by ≤ {margin.max_relative_drop:.1%}")
    return " and ".join(parts) or "not worse"


def _drop_allowed(candidate: float, champion: float, margin: ChampionMargin, higher: bool) -> tuple[bool, float]:
    """Whether the candidate is within ``margin`` of the champion, and how much worse it is (negative: better)."""
    drop = champion - candidate if higher else candidate - champion
    ok = True
    if margin.max_drop is None and margin.max_relative_drop is None:
        ok = drop <= EPS
    if margin.max_drop is not None:
        ok = ok and drop <= margin.max_drop + EPS
    if margin.max_relative_drop is not None:
        relative = drop / abs(champion) if champion else (math.inf if drop > EPS else 0.0)
        ok = ok and relative <= margin.max_relative_drop + EPS
    return ok, drop


def _versus(drop: float, champion: float, champion_ref: str) -> str:
    if abs(drop) <= EPS:
        return f"same as {champion_ref} ({_fmt(champion)})"
    return f"{_fmt(abs(drop))} {'worse' if drop > 0 else 'better'} than {champion_ref} ({_fmt(champion)})"


def champion_check(
    metric: str, candidate: Any, champion: Any, margin: ChampionMargin, *, higher: bool, champion_ref: str = "the champion"
) -> Check:
    """``candidate`` is not worse than ``champion`` on ``metric`` by more than ``margin``.

    "Worse" follows the metric's direction (``higher``: larger is better).
    A margin with neither bound set allows no drop at all.
    """
    name = f"champion.{metric}"
    expected = f"{_margin_text(margin)} vs {champion_ref}"
    ours, theirs = _number(candidate), _number(champion)
    if theirs is None:
        return Check(name, "skipped", ours, expected, f"{champion_ref} has no finite {metric} to compare with")
    if ours is None:
        return Check(name, "failed", None, expected, f"{metric} is not a finite number ({candidate!r})")
    ok, drop = _drop_allowed(ours, theirs, margin, higher)
    return Check(name, "passed" if ok else "failed", ours, expected, _versus(drop, theirs, champion_ref))


def slice_checks(
    candidate: dict[str, dict[str, Any]],
    champion: dict[str, dict[str, Any]] | None,
    gate: SliceGate,
    metric: str,
    *,
    higher: bool,
    champion_ref: str = "the champion",
) -> list[Check]:
    """One check per slice of the candidate (``{"col=value": {metric: v, "rows": n}}``).

    A slice is held to ``gate.min``/``gate.max`` and, when ``champion`` is
    given, to at most ``gate.max_drop_vs_champion`` worse than the
    champion's same slice. Slices with fewer than ``gate.min_rows`` rows
    (in either version) are skipped: their metrics are mostly noise.
    """
    bound = Bound(min=gate.min, max=gate.max)
    bounded = gate.min is not None or gate.max is not None
    compare = champion is not None and gate.max_drop_vs_champion is not None
    if not candidate:
        return [Check("slices", "skipped", detail="no slice metrics recorded (set evaluate.slices)")]
    if not bounded and not compare:
        reason = "no certify.slices.min/max set" + ("" if champion is not None else ", and no champion to compare with")
        return [Check("slices", "skipped", detail=reason)]
    margin = ChampionMargin(max_drop=gate.max_drop_vs_champion)
    expectations = ([_bound_text(bound)] if bounded else []) + ([f"{_margin_text(margin)} vs {champion_ref}"] if compare else [])
    checks = []
    for key in sorted(candidate):
        values = candidate[key]
        name = f"slice.{key}.{metric}"
        expected = "; ".join(expectations)
        rows = int(values.get("rows", 0))
        if rows < gate.min_rows:
            checks.append(Check(name, "skipped", None, expected, f"{rows} rows < certify.slices.min_rows {gate.min_rows}"))
            continue
        value = _number(values.get(metric))
        if value is None:
            checks.append(Check(name, "skipped", None, expected, f"no finite {metric} for this slice"))
            continue
        problems, notes = [], []
        if bounded and not _within(value, bound):
            problems.append(f"outside {_bound_text(bound)}")
        compared = False
        if compare:
            theirs = (champion or {}).get(key, {})
            their_value = _number(theirs.get(metric))
            if their_value is None or int(theirs.get("rows", 0)) < gate.min_rows:
                notes.append(f"not compared: {champion_ref} has no {key} slice of {gate.min_rows}+ rows")
            else:
                compared = True
                ok, drop = _drop_allowed(value, their_value, margin, higher)
                (notes if ok else problems).append(_versus(drop, their_value, champion_ref))
        if not bounded and not compared:
            checks.append(Check(name, "skipped", value, expected, notes[0]))
            continue
        status: Status = "failed" if problems else "passed"
        checks.append(Check(name, status, value, expected, "; ".join([*problems, *notes, f"{rows} rows"])))
    return checks


def schema_check(
    candidate: Sequence[Column], champion: Sequence[Column], declared: Sequence[str], *, champion_ref: str = "the champion"
) -> Check:
    """The candidate takes the champion's inputs (name and type), except columns in ``declared``."""
    expected = f"same inputs as {champion_ref}" + (f", changes declared for {', '.join(declared)}" if declared else "")
    if not candidate or not champion:
        which = "the candidate" if not candidate else champion_ref
        return Check("schema", "skipped", None, expected, f"{which} has no input signature to compare")
    ours = {c.name: c.type for c in candidate}
    theirs = {c.name: c.type for c in champion}
    changes = [f"+{n}" for n in ours if n not in theirs] + [f"-{n}" for n in theirs if n not in ours]
    changes += [f"{n}: {theirs[n]} → {ours[n]}" for n in ours if n in theirs and ours[n] != theirs[n]]
    changed_names = [c.lstrip("+-").split(":")[0] for c in changes]
    undeclared = [c for c, n in zip(changes, changed_names) if n not in set(declared)]
    observed = ", ".join(changes) if changes else f"{len(ours)} columns, unchanged"
    if undeclared:
        hint = "; list them in certify.schema.declared_changes if intended"
        return Check("schema", "failed", observed, expected, f"undeclared change(s): {', '.join(undeclared)}{hint}")
    return Check("schema", "passed", observed, expected, "all changes declared" if changes else "")


def _p99(samples_ms: Sequence[float]) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(samples_ms, dtype=float), 99))


def _rounds(count: int) -> str:
    return f"{count} round{'s' if count != 1 else ''}"


def latency_check(
    name: str,
    rounds_ms: Sequence[Sequence[float]],
    budget_ms: float,
    champion_rounds_ms: Sequence[Sequence[float]] = (),
    *,
    champion_ref: str = "the champion",
    factor: float = CHAMPION_LATENCY_FACTOR,
) -> Check:
    """The candidate's p99 is within ``budget_ms``, or not much slower than the champion timed alongside.

    Each round is one series of timed calls; a version's figure is the p99
    of its best round, because a loaded host adds stalls that come and go
    but cannot make a model faster than it is. A candidate over the
    absolute budget still passes when it is within ``factor`` × the
    champion's figure from the same run (``champion_rounds_ms``): the
    machine was slow, not the model. The detail says how it was measured.
    """
    rounds = [list(r) for r in rounds_ms if len(r)]
    theirs = [list(r) for r in champion_rounds_ms if len(r)]
    if not rounds:
        return Check(name, "skipped", None, f"p99 ≤ {_fmt(budget_ms)} ms", "no timings")
    p99s = [_p99(r) for r in rounds]
    best = min(p99s)
    calls = rounds[p99s.index(best)]
    median = sorted(calls)[len(calls) // 2]
    detail = (f"best of {_rounds(len(rounds))} of {len(calls)} calls "
              f"(p99 per round {', '.join(_fmt(p) for p in p99s)} ms; median {median:.2f} ms)")
    limit = budget_ms
    expected = f"p99 ≤ {_fmt(budget_ms)} ms"
    if theirs:
        champion_best = min(_p99(r) for r in theirs)
        limit = max(budget_ms, factor * champion_best)
        expected += f", or ≤ {_fmt(factor)}× {champion_ref}'s p99 timed alongside"
        detail += (f"; {champion_ref} timed alongside: p99 {_fmt(champion_best)} ms, best of {_rounds(len(theirs))}, "
                   f"limit {_fmt(limit)} ms")
    status: Status = "passed" if best <= limit else "failed"
    return Check(name, status, round(best, 3), expected, detail)


# -- behaviour ------------------------------------------------------------------------------


EXPECTATION = {"increase": "rise", "decrease": "fall", "non_decreasing": "not fall", "non_increasing": "not rise", "same": "not move"}


def _check_key(index: int) -> str:
    return f"rung.yaml: certify.behaviour[{index}]"


def validate_behaviour(checks: Sequence[BehaviourCheck], inputs: dict[str, bool]) -> None:
    """Raise :class:`CertificationError` for a check that cannot run; ``inputs`` maps column → numeric."""
    for index, check in enumerate(checks):
        key = _check_key(index)
        if check.feature not in inputs:
            raise CertificationError(
                f"{key}.feature: '{check.feature}' is not an input of the model (inputs: {', '.join(inputs)})"
            )
        numeric = inputs[check.feature]
        if check.kind == "directional":
            if check.change is None:
                raise CertificationError(f"{key}.change: a directional check needs the amount to add to '{check.feature}'")
            if not numeric:
                raise CertificationError(f"{key}.feature: '{check.feature}' is not numeric; a directional check adds `change` to it")
        else:
            if not check.values:
                raise CertificationError(f"{key}.values: an invariance check needs the values to set '{check.feature}' to")
            if check.expect != "same":
                raise CertificationError(f"{key}.expect: an invariance check expects 'same', not '{check.expect}'")
            if numeric and any(_number(v) is None for v in check.values):
                raise CertificationError(f"{key}.values: '{check.feature}' is numeric; give numbers")


def _violations(before: np.ndarray, after: np.ndarray, expect: str, tolerance: float) -> np.ndarray:
    """Rows whose score moved against ``expect``; ``tolerance`` is the band that counts as "no change"."""
    diff = after.astype(float) - before.astype(float)
    if expect == "increase":
        return ~(diff > tolerance)
    if expect == "decrease":
        return ~(diff < -tolerance)
    if expect == "non_decreasing":
        return ~(diff >= -tolerance)
    if expect == "non_increasing":
        return ~(diff <= tolerance)
    return ~(abs(diff) <= tolerance)


def behaviour_check(model: LoadedModel, rows: pd.DataFrame, check: BehaviourCheck, index: int = 0) -> Check:
    """Run one declared expectation on the model's scores over ``rows`` (model inputs only).

    ``directional``: ``change`` is added to ``feature`` (rows where it is
    missing are left out) and each row's score must move as ``expect``
    says. ``invariance``: ``feature`` is set to each of ``values`` in turn
    and no row's score may move by more than ``tolerance``. The check
    fails when the share of violating rows exceeds ``max_violation_rate``.
    """
    import numpy as np

    from rung.serving.loader import InputError

    label = check.name or f"{check.kind} {check.feature}"
    name = f"behaviour.{label}"
    expected = f"≤ {check.max_violation_rate:.1%} violations"
    try:
        if check.kind == "directional":
            subset = rows[rows[check.feature].notna()]
            if subset.empty:
                return Check(name, "skipped", None, expected, f"no rows with a value for {check.feature}")
            before = model.score(model.frame(subset))
            after = model.score(model.frame(subset.assign(**{check.feature: subset[check.feature] + check.change})))
            bad = _violations(before, after, check.expect, check.tolerance)
            what = f"{check.feature} {check.change:+g}: the score should {EXPECTATION[check.expect]}"
        else:
            subset = rows
            before = model.score(model.frame(subset))
            bad = np.zeros(len(subset), dtype=bool)
            for value in check.values or []:
                after = model.score(model.frame(subset.assign(**{check.feature: value})))
                bad |= _violations(before, after, "same", check.tolerance)
            what = f"{check.feature} set to {', '.join(map(str, check.values or []))}: the score should move ≤ {check.tolerance:g}"
    except InputError as exc:
        raise CertificationError(f"{_check_key(index)}: {exc}") from exc
    rate = float(bad.mean()) if len(bad) else 0.0
    status: Status = "passed" if rate <= check.max_violation_rate + EPS else "failed"
    return Check(name, status, round(rate, 6), expected, f"{what}; {int(bad.sum())} of {len(bad)} rows did not")


# -- gathering the inputs ---------------------------------------------------------------------


def _direction(metric: str, key: str) -> bool:
    from rung.evaluation import higher_is_better

    try:
        return higher_is_better(metric)
    except KeyError as exc:
        raise CertificationError(f"rung.yaml: {key}: {exc.args[0]}") from None


def _snapshot_inputs(project: Project, record: ModelVersionRecord) -> pd.DataFrame:
    from rung.serving.loader import training_inputs

    try:
        return training_inputs(project, record)
    except RungError as exc:
        raise CertificationError(str(exc)) from exc


def _load(project: Project, record: ModelVersionRecord) -> tuple[LoadedModel | None, Check]:
    from rung.serving.loader import load_version

    expected = "sha256 as registered"
    try:
        model = load_version(project, record)
    except IntegrityError as exc:
        return None, Check("integrity", "failed", None, expected, str(exc))
    except RungError as exc:
        raise CertificationError(f"{record.ref}: the model cannot be loaded: {exc}") from exc
    digest = str(record.lineage.get("model_sha256") or "")[:16]
    return model, Check("integrity", "passed", f"{len(record.sha256)} files", expected, f"sha256 {digest}…" if digest else "")


def _time_ms(call: Any, batches: Sequence[Any], repeats: int, warmup: int = 5) -> list[float]:
    for batch in batches[:warmup]:
        call(batch)
    samples = []
    for i in range(repeats):
        batch = batches[i % len(batches)]
        started = time.perf_counter()
        call(batch)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _own_columns(model: LoadedModel, frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """``frames`` cut to the model's signature, so that timing measures prediction and not column picking."""
    names = [c.name for c in model.columns]
    return [frame[names] for frame in frames] if names else list(frames)


def _timed_rounds(name: str, budget_ms: float, repeats: int, candidate: LoadedModel, champion: LoadedModel | None,
                  frames: Sequence[pd.DataFrame], champion_ref: str) -> Check:
    """Time rounds of ``predict`` until :func:`latency_check` passes or :data:`LATENCY_ROUNDS` are spent.

    The champion is timed right after each round in which the candidate
    missed ``budget_ms``, so both see the same load on the host.
    """
    def one_round(model: LoadedModel, own: list[pd.DataFrame]) -> list[float]:
        return _time_ms(lambda frame: model.predict(model.frame(frame)), own, repeats)

    ours = _own_columns(candidate, frames)
    theirs = _own_columns(champion, frames) if champion is not None else []
    rounds: list[list[float]] = []
    champion_rounds: list[list[float]] = []
    for _ in range(LATENCY_ROUNDS):
        rounds.append(one_round(candidate, ours))
        if champion is not None and _p99(rounds[-1]) > budget_ms:
            champion_rounds.append(one_round(champion, theirs))
        check = latency_check(name, rounds, budget_ms, champion_rounds, champion_ref=champion_ref)
        if check.status != "failed":
            break
    return check


def _latency(model: LoadedModel, champion: LoadedModel | None, inputs: pd.DataFrame, budget: LatencyBudget,
             champion_note: str) -> list[Check]:
    """Time ``predict`` (with the input check the gateway does) on single rows and on 1,000-row batches.

    ``inputs`` are the candidate's snapshot rows with every column, so that
    a champion with other inputs can be timed on the same rows; without
    one, ``champion_note`` says why in a failing check's detail.
    """
    from dataclasses import replace

    from threadpoolctl import threadpool_limits

    if inputs.empty:
        return [Check("latency", "skipped", detail="the data snapshot has no rows")]
    singles = [inputs.iloc[[i]] for i in range(min(len(inputs), budget.repeats))]
    batch_count = min(budget.repeats, 5)
    batches = [inputs.sample(1000, replace=len(inputs) < 1000, random_state=seed) for seed in range(batch_count)]
    ref = f"{champion.name}:{champion.version}" if champion is not None else "the champion"
    lacking = [c.name for c in champion.columns if c.name not in inputs.columns] if champion is not None else []
    if lacking:
        champion, champion_note = None, f"{ref} takes {', '.join(lacking)}, which the data snapshot lacks"
    checks = []
    # Measured as the gateway serves: one OpenMP/BLAS thread (serve.model_threads' default).
    with threadpool_limits(1):
        for name, frames, limit, what in (("latency.single_row_p99_ms", singles, budget.single_row_p99_ms, "single rows"),
                                          ("latency.batch_1000_p99_ms", batches, budget.batch_1000_p99_ms, "1,000-row batches")):
            check = _timed_rounds(name, limit, budget.repeats, model, champion, frames, ref)
            note = f"; no champion timed alongside: {champion_note}" if check.status == "failed" and champion_note else ""
            checks.append(replace(check, detail=f"{what}, one thread; {check.detail}{note}"))
    return checks


def _project_tests(project: Project, gate: TestsGate, skip: bool) -> Check:
    """The project's pytest suite, in a child process in the project root."""
    path = gate.path
    if skip:
        return Check("tests", "skipped", detail="--skip-tests")
    if not gate.enabled:
        return Check("tests", "skipped", detail="certify.tests.enabled is false")
    if not (project.root / path).exists():
        return Check("tests", "skipped", detail=f"no {path} in the project")
    if importlib.util.find_spec("pytest") is None:
        # rung depends on pytest; an environment that lost it still certifies the rest, and says what was not run
        detail = f"pytest is not installed in {sys.prefix}, so {path} was not run: pip install pytest"
        return Check("tests", "skipped", detail=detail)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path]
    expected = "pytest passes"
    try:
        done = subprocess.run(command, cwd=project.root, capture_output=True, text=True, timeout=gate.timeout_s)
    except subprocess.TimeoutExpired:
        detail = f"pytest {path} ran past certify.tests.timeout_s {_fmt(gate.timeout_s)} s"
        return Check("tests", "failed", "timed out", expected, detail)
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    last = lines[-1].strip("= ") if lines else ""
    if done.returncode == 0:
        return Check("tests", "passed", last, expected, f"pytest {path}")
    if done.returncode == 5:
        return Check("tests", "skipped", last, expected, f"no tests collected in {path}")
    return Check("tests", "failed", last or f"exit {done.returncode}", expected, f"pytest {path} exited {done.returncode}")


def _champion(project: Project, record: ModelVersionRecord) -> tuple[ModelVersionRecord | None, str]:
    """The version with the ``champion`` alias, or why there is none to compare with."""
    from rung.tracking import CHAMPION

    version = project.tracking.aliases().get(record.name, {}).get(CHAMPION)
    if version is None:
        return None, f"{record.name} has no @{CHAMPION} yet"
    if version == record.version:
        return None, f"{record.ref} is the @{CHAMPION}"
    champion = project.store.get_model_version(record.name, version)
    if champion is None:
        return None, f"@{CHAMPION} {record.name}:{version} is not in rung's metadata store"
    return champion, ""


def _metric_checks(
    project: Project, record: ModelVersionRecord, champion: ModelVersionRecord | None, no_champion: str
) -> list[Check]:
    settings = project.settings.certify
    overall = record.metrics.get("overall", {})
    recorded = ", ".join(sorted(overall)) or "none"
    checks = []
    for metric, bound in settings.thresholds.items():
        key = f"rung.yaml: certify.thresholds.{metric}"
        if bound.min is None and bound.max is None:
            raise CertificationError(f"{key}: set min, max or both")
        if metric not in overall:
            raise CertificationError(f"{key}: {record.ref} has no metric '{metric}' (it has: {recorded})")
        checks.append(threshold_check(metric, overall[metric], bound))
    primary = project.primary_metric
    margins = settings.versus_champion if settings.versus_champion is not None else {primary: DEFAULT_CHAMPION_MARGIN}
    directions = {m: _direction(m, f"certify.versus_champion.{m}") for m in margins}
    for metric in margins:
        if metric not in overall:
            key = f"rung.yaml: certify.versus_champion.{metric}"
            raise CertificationError(f"{key}: {record.ref} has no metric '{metric}' (it has: {recorded})")
    if champion is None:
        checks.append(Check("champion", "skipped", detail=no_champion))
    else:
        theirs = champion.metrics.get("overall", {})
        for metric, margin in margins.items():
            checks.append(
                champion_check(metric, overall[metric], theirs.get(metric), margin, higher=directions[metric], champion_ref=champion.ref)
            )
    gate = settings.slices
    slice_metric = gate.metric or primary
    compares_slices = champion is not None and gate.max_drop_vs_champion is not None
    higher = _direction(slice_metric, "certify.slices.metric") if compares_slices else True
    their_slices = champion.metrics.get("slices", {}) if champion is not None else None
    checks += slice_checks(record.metrics.get("slices", {}), their_slices, gate, slice_metric, higher=higher,
                           champion_ref=champion.ref if champion else "the champion")
    return checks


def _input_types(model: LoadedModel | None, inputs: pd.DataFrame) -> dict[str, bool]:
    if model is not None and model.columns:
        return {c.name: c.numeric for c in model.columns}
    return {str(c): inputs[c].dtype.kind in "biuf" for c in inputs.columns}


def certify(project: Project, ref: str, *, actor: str = "cli", skip_tests: bool = False, clock: Clock | None = None,
            chain: str | None = None) -> CertificationReport:
    """Run every check on ``ref`` (``NAME:VERSION``), record the verdict, return the report.

    Raises :class:`~rung.errors.ModelVersionNotFound`,
    :class:`~rung.errors.TrackingError` or :class:`~rung.errors.CertificationError`
    when the gate cannot run; a version that fails a check is a report
    with ``certified`` false, never an exception. ``clock`` stamps the verdict
    (the demo's simulated time); ``chain`` ties it to the retraining that asked.
    """
    started_at = clock.now() if clock is not None else datetime.now(timezone.utc)
    clock = time.perf_counter()
    settings = project.settings.certify
    record = project.model_version(ref)
    snapshot = inputs = _snapshot_inputs(project, record)
    project.tracking.check_reachable()
    champion, no_champion = _champion(project, record)
    metric_checks = _metric_checks(project, record, champion, no_champion)  # settings errors surface before the slow part
    validate_behaviour(settings.behaviour, _input_types(None, inputs))
    model, integrity = _load(project, record)
    if model is not None and model.columns:
        inputs = inputs[[c.name for c in model.columns if c.name in inputs.columns]]
        validate_behaviour(settings.behaviour, _input_types(model, inputs))

    checks = [integrity, *metric_checks]
    if model is None:
        why = "the model was not loaded: its integrity check failed"
        checks += [Check(name, "skipped", detail=why) for name in ("latency", "schema", "behaviour")]
    else:
        rival, no_rival = _load_champion(project, champion, no_champion)
        checks += _latency(model, rival, snapshot, settings.latency, no_rival)
        checks.append(_schema_against(project, model, rival, no_rival))
        if not settings.behaviour:
            checks.append(Check("behaviour", "skipped", detail="no certify.behaviour checks declared"))
        for index, check in enumerate(settings.behaviour):
            sample = inputs.sample(min(check.rows, len(inputs)), random_state=0) if len(inputs) else inputs
            checks.append(behaviour_check(model, sample, check, index))
    checks.append(_project_tests(project, settings.tests, skip_tests))

    report = CertificationReport(
        name=record.name,
        version=record.version,
        checks=tuple(checks),
        champion=champion.version if champion else None,
        started_at=started_at,
        duration_s=time.perf_counter() - clock,
    )
    _record(project, report, actor, chain)
    return report


def _load_champion(project: Project, champion: ModelVersionRecord | None, no_champion: str) -> tuple[LoadedModel | None, str]:
    """The champion in memory, to compare inputs and latency with; else why there is none."""
    from rung.serving.loader import load_version

    if champion is None:
        return None, no_champion
    try:
        return load_version(project, champion), ""
    except RungError as exc:
        return None, f"{champion.ref} cannot be loaded to compare: {exc}"


def _schema_against(project: Project, model: LoadedModel, champion: LoadedModel | None, no_champion: str) -> Check:
    if champion is None:
        return Check("schema", "skipped", detail=no_champion)
    return schema_check(model.columns, champion.columns, project.settings.certify.schema_check.declared_changes,
                        champion_ref=f"{champion.name}:{champion.version}")


def _record(project: Project, report: CertificationReport, actor: str, chain: str | None) -> None:
    """The audit event first (it holds the whole report), then the tags a controller reads from MLflow."""
    project.store.append_event("certification", actor=actor, subject=report.ref, data=report.to_dict(), time=report.started_at,
                               chain=chain)
    project.tracking.set_version_tags(
        report.name,
        report.version,
        {
            "rung.certified": "true" if report.certified else "false",
            "rung.certification": report.summary(),
            "rung.certified_at": report.started_at.isoformat(),
        },
    )
