"""A pipeline: steps wired into a DAG by the names of their inputs and outputs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rung.errors import PipelineError
from rung.pipeline.step import Step

__all__ = ["Pipeline"]


class Pipeline:
    """Steps whose inputs name other steps' outputs. Checked when built.

    >>> from rung.pipeline import step
    >>> @step
    ... def numbers(): return [1, 2, 3]
    >>> @step
    ... def total(numbers): return sum(numbers)
    >>> Pipeline("demo", [total, numbers]).order()
    ['numbers', 'total']
    """

    def __init__(self, name: str, steps: Sequence[Step]) -> None:
        self.name = name
        self.steps: dict[str, Step] = {}
        self.producer: dict[str, str] = {}
        for s in steps:
            if not isinstance(s, Step):
                raise PipelineError(f"pipeline {name}: {s!r} is not a step; decorate it with @step")
            if s.name in self.steps:
                raise PipelineError(f"pipeline {name}: two steps are named '{s.name}'")
            self.steps[s.name] = s
            for out in s.outputs:
                if out in self.producer:
                    raise PipelineError(
                        f"pipeline {name}: output '{out}' is produced by both '{self.producer[out]}' and '{s.name}'"
                    )
                self.producer[out] = s.name
        for s in self.steps.values():
            for needed in s.inputs:
                if needed not in self.producer:
                    known = ", ".join(sorted(self.producer)) or "none"
                    raise PipelineError(
                        f"pipeline {name}: step '{s.name}' takes '{needed}', which no step produces (outputs: {known})"
                    )
        self._order = self._topological_order()

    def upstream(self, step_name: str) -> set[str]:
        """Names of the steps whose outputs ``step_name`` reads directly."""
        return {self.producer[i] for i in self.steps[step_name].inputs}

    def order(self) -> list[str]:
        """Step names in an order where every step follows its inputs (stable)."""
        return list(self._order)

    def ancestors(self, targets: Iterable[str]) -> set[str]:
        """The steps needed to produce ``targets`` (step or output names), themselves included."""
        wanted: set[str] = set()
        stack = []
        for target in targets:
            if target in self.steps:
                stack.append(target)
            elif target in self.producer:
                stack.append(self.producer[target])
            else:
                raise PipelineError(f"pipeline {self.name}: no step or output named '{target}'")
        while stack:
            current = stack.pop()
            if current not in wanted:
                wanted.add(current)
                stack.extend(self.upstream(current))
        return wanted

    def _topological_order(self) -> list[str]:
        remaining = {n: self.upstream(n) for n in self.steps}
        order: list[str] = []
        while remaining:
            ready = [n for n, deps in remaining.items() if not deps]
            if not ready:
                cycle = ", ".join(sorted(remaining))
                raise PipelineError(f"pipeline {self.name}: the steps {cycle} form a cycle")
            for n in ready:
                order.append(n)
                del remaining[n]
            for deps in remaining.values():
                deps.difference_update(ready)
        return order

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={self.order()})"
