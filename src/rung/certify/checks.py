"""The rules of the release gate, as plain functions of numbers, columns and scores.

Nothing here reads the registry, MLflow or the disk: :mod:`rung.certify.inputs`
gathers a version's metrics, signature and timings, and these functions say
whether they meet the ``certify:`` settings. That split is what lets the
rules be tested on literals, and a verdict be explained by its inputs alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rung.certify.report import Check, Status
from rung.config import Bound, CertifySettings, ChampionMargin, SliceGate
from rung.errors import CertificationError

if TYPE_CHECKING:
    from rung.models.signature import Column

__all__ = [
    "CHAMPION_LATENCY_FACTOR",
    "DEFAULT_CHAMPION_MARGIN",
    "EPS",
    "Scored",
    "champion_check",
    "direction",
    "finite_number",
    "fmt",
    "latency_check",
    "metric_checks",
    "p99",
    "project_tests_check",
    "schema_check",
    "slice_checks",
    "threshold_check",
]

# Used when certify.versus_champion is not set: the primary metric may be at most this much worse.
DEFAULT_CHAMPION_MARGIN = ChampionMargin(max_drop=0.01)
EPS = 1e-12  # float slack so that a drop of exactly the margin passes
CHAMPION_LATENCY_FACTOR = 1.5  # over budget, a candidate may still be this much slower than the champion timed alongside


class Scored(Protocol):
    """A version as the metric rules see it: its ref and its recorded metrics (``overall``, ``slices``)."""

    @property
    def ref(self) -> str: ...

    @property
    def metrics(self) -> Mapping[str, Any]: ...


# -- the rules ------------------------------------------------------------------------------

def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value: float) -> str:
    """A number as the reports show it: four significant digits."""
    return f"{value:.4g}"


def _bound_text(bound: Bound) -> str:
    if bound.min is not None and bound.max is not None:
        return f"in [{fmt(bound.min)}, {fmt(bound.max)}]"
    if bound.min is not None:
        return f"≥ {fmt(bound.min)}"
    return f"≤ {fmt(bound.max)}" if bound.max is not None else "any"


def _within(value: float, bound: Bound) -> bool:
    return (bound.min is None or value >= bound.min - EPS) and (bound.max is None or value <= bound.max + EPS)


def threshold_check(metric: str, value: Any, bound: Bound) -> Check:
    """``metric`` of the version lies within the absolute ``bound``."""
    name = f"threshold.{metric}"
    number = finite_number(value)
    if number is None:
        return Check(name, "failed", None, _bound_text(bound), f"{metric} is not a finite number ({value!r})")
    status: Status = "passed" if _within(number, bound) else "failed"
    return Check(name, status, number, _bound_text(bound))


def _margin_text(margin: ChampionMargin) -> str:
    parts = []
    if margin.max_drop is not None:
        parts.append(f"worse by ≤ {fmt(margin.max_drop)}")
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
        return f"same as {champion_ref} ({fmt(champion)})"
    return f"{fmt(abs(drop))} {'worse' if drop > 0 else 'better'} than {champion_ref} ({fmt(champion)})"


def champion_check(
    metric: str, candidate: Any, champion: Any, margin: ChampionMargin, *, higher: bool, champion_ref: str = "the champion"
) -> Check:
    """``candidate`` is not worse than ``champion`` on ``metric`` by more than ``margin``.

    "Worse" follows the metric's direction (``higher``: larger is better).
    A margin with neither bound set allows no drop at all.
    """
    name = f"champion.{metric}"
    expected = f"{_margin_text(margin)} vs {champion_ref}"
    ours, theirs = finite_number(candidate), finite_number(champion)
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
        value = finite_number(values.get(metric))
        if value is None:
            checks.append(Check(name, "skipped", None, expected, f"no finite {metric} for this slice"))
            continue
        problems, notes = [], []
        if bounded and not _within(value, bound):
            problems.append(f"outside {_bound_text(bound)}")
        compared = False
        if compare:
            theirs = (champion or {}).get(key, {})
            their_value = finite_number(theirs.get(metric))
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
    undeclared = [c for c, n in zip(changes, changed_names, strict=True) if n not in set(declared)]
    observed = ", ".join(changes) if changes else f"{len(ours)} columns, unchanged"
    if undeclared:
        hint = "; list them in certify.schema.declared_changes if intended"
        return Check("schema", "failed", observed, expected, f"undeclared change(s): {', '.join(undeclared)}{hint}")
    return Check("schema", "passed", observed, expected, "all changes declared" if changes else "")


def p99(samples_ms: Sequence[float]) -> float:
    """The 99th percentile of one round of timings."""
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
        return Check(name, "skipped", None, f"p99 ≤ {fmt(budget_ms)} ms", "no timings")
    p99s = [p99(r) for r in rounds]
    best = min(p99s)
    calls = rounds[p99s.index(best)]
    median = sorted(calls)[len(calls) // 2]
    detail = (f"best of {_rounds(len(rounds))} of {len(calls)} calls "
              f"(p99 per round {', '.join(fmt(p) for p in p99s)} ms; median {median:.2f} ms)")
    limit = budget_ms
    expected = f"p99 ≤ {fmt(budget_ms)} ms"
    if theirs:
        champion_best = min(p99(r) for r in theirs)
        limit = max(budget_ms, factor * champion_best)
        expected += f", or ≤ {fmt(factor)}× {champion_ref}'s p99 timed alongside"
        detail += (f"; {champion_ref} timed alongside: p99 {fmt(champion_best)} ms, best of {_rounds(len(theirs))}, "
                   f"limit {fmt(limit)} ms")
    status: Status = "passed" if best <= limit else "failed"
    return Check(name, status, round(best, 3), expected, detail)


# -- the recorded metrics, together ----------------------------------------------------------


def direction(metric: str, key: str) -> bool:
    """Whether larger is better for ``metric``; an unknown one is a settings error at ``key``."""
    from rung.evaluation import higher_is_better

    try:
        return higher_is_better(metric)
    except KeyError as exc:
        raise CertificationError(f"rung.yaml: {key}: {exc.args[0]}") from None


def metric_checks(settings: CertifySettings, primary: str, record: Scored, champion: Scored | None,
                  no_champion: str) -> list[Check]:
    """Thresholds, the margins against ``champion`` and the slices, on the metrics recorded at registration.

    ``primary`` is the project's primary metric, compared when
    ``certify.versus_champion`` is not set; ``no_champion`` says why there
    is no champion when it is None. A threshold or margin on a metric the
    version lacks is a settings error, raised before anything slow runs.
    """
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
    margins = settings.versus_champion if settings.versus_champion is not None else {primary: DEFAULT_CHAMPION_MARGIN}
    directions = {m: direction(m, f"certify.versus_champion.{m}") for m in margins}
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
    higher = direction(slice_metric, "certify.slices.metric") if compares_slices else True
    their_slices = champion.metrics.get("slices", {}) if champion is not None else None
    checks += slice_checks(record.metrics.get("slices", {}), their_slices, gate, slice_metric, higher=higher,
                           champion_ref=champion.ref if champion else "the champion")
    return checks


def project_tests_check(path: str, returncode: int, output: str) -> Check:
    """The ``tests`` check from a finished pytest run over ``path``: its exit code and last line."""
    expected = "pytest passes"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    last = lines[-1].strip("= ") if lines else ""
    if returncode == 0:
        return Check("tests", "passed", last, expected, f"pytest {path}")
    if returncode == 5:
        return Check("tests", "skipped", last, expected, f"no tests collected in {path}")
    return Check("tests", "failed", last or f"exit {returncode}", expected, f"pytest {path} exited {returncode}")

