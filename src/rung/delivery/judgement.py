"""What a canary's window means for its rollout: the decision alone, with no store, log or clock inside.

The controller gathers the evidence (an early failure, the window's
verdict once the window is due) and carries the decision out. Keeping the
rule pure keeps its one subtle point testable: a window without enough
traffic has said nothing about the candidate, so it neither consumes an
extension nor moves the rollout towards a rollback; the window simply
goes on until the traffic is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rung.config import CanarySettings
from rung.delivery.analysis import Verdict

__all__ = ["Decision", "judge_canary"]

Action = Literal["wait", "hold", "extend", "next", "promote", "rollback"]


@dataclass(frozen=True)
class Decision:
    """``wait``: the window is not over; ``hold``: it is, but without enough traffic to judge (nothing counts);
    ``extend``: inconclusive with traffic (one extension used); ``next``/``promote``/``rollback``: a move."""

    action: Action
    why: str = ""


def judge_canary(rules: CanarySettings, *, step: int, extensions: int, early: dict[str, Any] | None = None,
                 verdict: Verdict | None = None) -> Decision:
    """The decision for a canary at ``steps[step]`` after ``extensions`` extensions.

    ``early``: an error check that failed before the window ended (always a
    rollback); ``verdict``: the window's checks once the window is due
    (None: not yet).
    """
    share = f"{rules.steps[step]:g}%"
    if early is not None:
        return Decision("rollback", f"canary failed {early['name']} at {share}: {early['detail']}")
    if verdict is None:
        return Decision("wait")
    if verdict.result == "fail":
        return Decision("rollback", f"canary failed at {share}: {verdict.explain()}")
    if verdict.wants_traffic:
        return Decision("hold", f"waiting for traffic at {share}: {verdict.explain()}; the window goes on")
    if verdict.result == "inconclusive":
        if extensions >= rules.max_extensions:
            return Decision("rollback", f"canary inconclusive at {share} after {extensions} extensions "
                                        f"(deploy.canary.max_extensions): {verdict.explain()}")
        return Decision("extend", f"inconclusive at {share}: window extended ({verdict.explain()})")
    if step + 1 >= len(rules.steps) - 1:
        return Decision("promote")
    return Decision("next", f"canary passed at {share}: {rules.steps[step + 1]:g}%")
