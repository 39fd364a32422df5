"""Timing a model's ``predict`` for the latency checks, the way the gateway calls it.

The measuring lives here and the judging in :func:`rung.certify.checks.latency_check`:
rounds of timed calls on single rows and on 1,000-row batches, one thread,
with the champion timed right after any round the candidate missed, so
that both see the same load on the host. ``timer`` is the seconds counter
(``time.perf_counter``; a fake one in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rung.certify.checks import latency_check, p99
from rung.certify.report import Check

if TYPE_CHECKING:
    import pandas as pd

    from rung.config import LatencyBudget
    from rung.models.loaded import LoadedModel

__all__ = ["LATENCY_ROUNDS", "Timer", "latency_checks"]

Timer = Callable[[], float]  # seconds, monotonic: time.perf_counter

LATENCY_ROUNDS = 3  # a latency check that misses is timed again, up to this many rounds: a busy host's stalls pass


def _time_ms(call: Any, batches: Sequence[Any], repeats: int, timer: Timer, warmup: int = 5) -> list[float]:
    for batch in batches[:warmup]:
        call(batch)
    samples = []
    for i in range(repeats):
        batch = batches[i % len(batches)]
        started = timer()
        call(batch)
        samples.append((timer() - started) * 1000)
    return samples


def _own_columns(model: LoadedModel, frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """``frames`` cut to the model's signature, so that timing measures prediction and not column picking."""
    names = [c.name for c in model.columns]
    return [frame[names] for frame in frames] if names else list(frames)


def _timed_rounds(name: str, budget_ms: float, repeats: int, candidate: LoadedModel, champion: LoadedModel | None,
                  frames: Sequence[pd.DataFrame], champion_ref: str, timer: Timer) -> Check:
    """Time rounds of ``predict`` until :func:`latency_check` passes or :data:`LATENCY_ROUNDS` are spent.

    The champion is timed right after each round in which the candidate
    missed ``budget_ms``, so both see the same load on the host.
    """
    def one_round(model: LoadedModel, own: list[pd.DataFrame]) -> list[float]:
        return _time_ms(lambda frame: model.predict(model.frame(frame)), own, repeats, timer)

    ours = _own_columns(candidate, frames)
    theirs = _own_columns(champion, frames) if champion is not None else []
    rounds: list[list[float]] = []
    champion_rounds: list[list[float]] = []
    for _ in range(LATENCY_ROUNDS):
        rounds.append(one_round(candidate, ours))
        if champion is not None and p99(rounds[-1]) > budget_ms:
            champion_rounds.append(one_round(champion, theirs))
        check = latency_check(name, rounds, budget_ms, champion_rounds, champion_ref=champion_ref)
        if check.status != "failed":
            break
    return check


def latency_checks(model: LoadedModel, champion: LoadedModel | None, inputs: pd.DataFrame, budget: LatencyBudget,
                   champion_note: str, *, timer: Timer = time.perf_counter) -> list[Check]:
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
            check = _timed_rounds(name, limit, budget.repeats, model, champion, frames, ref, timer)
            note = f"; no champion timed alongside: {champion_note}" if check.status == "failed" and champion_note else ""
            checks.append(replace(check, detail=f"{what}, one thread; {check.detail}{note}"))
    return checks
