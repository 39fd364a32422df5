"""rung.pipeline.dag.Pipeline: ordering, ancestors and every definition error."""

from __future__ import annotations

import pytest

from rung.errors import PipelineError
from rung.pipeline import Pipeline, step


@step
def raw():
    return [3, 1, 2]


@step
def cleaned(raw):
    return sorted(raw)


@step(outputs=("train_set", "test_set"))
def split(cleaned):
    return cleaned[:2], cleaned[2:]


@step
def model(train_set, params):
    return sum(train_set)


@step
def metrics(model, test_set):
    return {"score": model - sum(test_set)}


@step
def unrelated():
    return "x"


ALL = [raw, cleaned, split, model, metrics, unrelated]


def test_order_puts_every_step_after_its_inputs() -> None:
    pipeline = Pipeline("p", list(reversed(ALL)))
    order = pipeline.order()
    assert sorted(order) == sorted(s.name for s in ALL)
    position = {name: i for i, name in enumerate(order)}
    for s in ALL:
        for needed in s.inputs:
            assert position[pipeline.producer[needed]] < position[s.name]


def test_order_is_stable_and_returns_a_copy() -> None:
    pipeline = Pipeline("p", [unrelated, raw, cleaned])
    first = pipeline.order()
    first.append("tampered")
    assert pipeline.order() == ["unrelated", "raw", "cleaned"]


def test_producer_maps_each_output() -> None:
    pipeline = Pipeline("p", ALL)
    assert pipeline.producer["train_set"] == "split"
    assert pipeline.producer["test_set"] == "split"
    assert pipeline.producer["raw"] == "raw"


def test_upstream_ignores_injected_params() -> None:
    pipeline = Pipeline("p", ALL)
    assert pipeline.upstream("model") == {"split"}
    assert pipeline.upstream("metrics") == {"model", "split"}
    assert pipeline.upstream("raw") == set()


def test_ancestors_of_a_step() -> None:
    pipeline = Pipeline("p", ALL)
    assert pipeline.ancestors(["model"]) == {"raw", "cleaned", "split", "model"}
    assert pipeline.ancestors(["cleaned"]) == {"raw", "cleaned"}
    assert pipeline.ancestors(["unrelated"]) == {"unrelated"}


def test_ancestors_of_an_output_name() -> None:
    pipeline = Pipeline("p", ALL)
    assert pipeline.ancestors(["test_set"]) == {"raw", "cleaned", "split"}


def test_ancestors_of_several_targets() -> None:
    pipeline = Pipeline("p", ALL)
    assert pipeline.ancestors(["metrics", "unrelated"]) == set(pipeline.steps)


def test_ancestors_of_unknown_target() -> None:
    pipeline = Pipeline("p", ALL)
    with pytest.raises(PipelineError, match="no step or output named 'nope'"):
        pipeline.ancestors(["nope"])


def test_missing_input() -> None:
    with pytest.raises(PipelineError) as info:
        Pipeline("p", [cleaned, model])
    message = str(info.value)
    assert "'cleaned' takes 'raw'" in message
    assert "which no step produces" in message
    assert "outputs: cleaned, model" in message


def test_duplicate_output() -> None:
    other = step(name="other_raw", outputs="raw")(lambda: [0])
    with pytest.raises(PipelineError, match="output 'raw' is produced by both 'raw' and 'other_raw'"):
        Pipeline("p", [raw, other])


def test_duplicate_step_name() -> None:
    twin = step(name="raw", outputs="raw_again")(lambda: [0])
    with pytest.raises(PipelineError, match="two steps are named 'raw'"):
        Pipeline("p", [raw, twin])


def test_cycle_is_detected() -> None:
    @step(outputs="a")
    def make_a(b):
        return b

    @step(outputs="b")
    def make_b(a):
        return a

    with pytest.raises(PipelineError) as info:
        Pipeline("loop", [raw, make_a, make_b])
    message = str(info.value)
    assert "cycle" in message
    assert "make_a, make_b" in message
    assert "raw" not in message.split("steps", 1)[1]


def test_self_cycle_is_detected() -> None:
    @step(outputs="x")
    def grow(x):
        return x

    with pytest.raises(PipelineError, match="cycle"):
        Pipeline("p", [grow])


@pytest.mark.parametrize("thing", [lambda: 1, "raw", None, 3])
def test_non_step_object(thing: object) -> None:
    with pytest.raises(PipelineError, match="is not a step; decorate it with @step"):
        Pipeline("p", [raw, thing])  # type: ignore[list-item]


def test_empty_pipeline() -> None:
    pipeline = Pipeline("empty", [])
    assert pipeline.order() == []
    assert pipeline.ancestors([]) == set()


def test_repr_shows_order() -> None:
    assert repr(Pipeline("p", [cleaned, raw])) == "Pipeline('p', steps=['raw', 'cleaned'])"
