"""rung.pipeline.step.step: wiring by parameter names, injection, outputs, code identity, resources."""

from __future__ import annotations

import gc
import importlib
import pickle
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from rung.errors import PipelineError
from rung.pipeline.step import INJECTED, Step, StepContext, StepResources, parse_memory, step


@step
def plain(features, labels):
    return len(features) + len(labels)


@step(outputs=("train_set", "test_set"), retries=2, retry_delay=0.5, cache=False, name="splitter")
def split_data(data, params, ctx):
    return data[:1], data[1:]


def test_inputs_come_from_parameter_names() -> None:
    assert isinstance(plain, Step)
    assert plain.name == "plain"
    assert plain.inputs == ("features", "labels")
    assert plain.outputs == ("plain",)
    assert plain.uses == frozenset()
    assert plain.retries == 0
    assert plain.cache is True
    assert plain.fingerprint is None


def test_injected_names_are_not_inputs() -> None:
    assert {"ctx", "params"} == INJECTED
    assert split_data.inputs == ("data",)
    assert split_data.uses == {"params", "ctx"}


def test_options_are_kept() -> None:
    assert split_data.name == "splitter"
    assert split_data.outputs == ("train_set", "test_set")
    assert split_data.retries == 2
    assert split_data.retry_delay == 0.5
    assert split_data.cache is False


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [(None, ("fn",)), ("model", ("model",)), (["a", "b"], ("a", "b")), (("x", "y", "z"), ("x", "y", "z"))],
)
def test_outputs_forms(outputs, expected) -> None:
    def fn(data):
        return data

    assert step(outputs=outputs)(fn).outputs == expected


def test_empty_outputs_rejected() -> None:
    with pytest.raises(ValueError, match="at least one output"):
        step(outputs=[])(lambda: 1)


def test_negative_retries_rejected() -> None:
    with pytest.raises(ValueError, match="retries"):
        step(retries=-1)(lambda: 1)


def test_var_positional_rejected() -> None:
    def collect(*frames):
        return frames

    with pytest.raises(TypeError, match=r"\*frames is not allowed"):
        step(collect)


def test_var_keyword_rejected() -> None:
    def collect(data, **extra):
        return data

    with pytest.raises(TypeError, match=r"\*extra is not allowed"):
        step(collect)


def test_decorated_step_is_still_callable() -> None:
    assert plain([1, 2], [3]) == 3
    assert plain(features=[1], labels=[]) == 1
    assert split_data([1, 2, 3], params={}, ctx=None) == ([1], [2, 3])


def test_module_level_step_pickles_by_reference() -> None:
    clone = pickle.loads(pickle.dumps(plain))
    assert clone.func is plain.func
    assert clone.name == "plain"


def test_step_context_paths(tmp_path: Path) -> None:
    ctx = StepContext(run_id="r1", step="s", project_root=tmp_path, params={"a": 1})
    assert ctx.state_dir == tmp_path / ".rung"
    assert ctx.run_dir == tmp_path / ".rung" / "runs" / "r1"
    assert ctx.run_dir.is_dir()
    assert pickle.loads(pickle.dumps(ctx)) == ctx


# -- code_hash -------------------------------------------------------------------------------

MODULE = """
def helper():
    return {helper_value!r}


from rung.pipeline import step


@step
def compute(data):
    return helper() + data
"""


# Imported step modules stay referenced for the whole session: Step.code_hash memoises by
# id(func), so a freed function's id reused by a later one would return a stale hash (see
# test_code_hash_survives_function_id_reuse below) and make these tests order-dependent.
_KEEP_ALIVE: list[object] = []


def _load(directory: Path, name: str, helper_value: int):
    (directory / f"{name}.py").write_text(textwrap.dedent(MODULE.format(helper_value=helper_value)))
    importlib.invalidate_caches()
    return importlib.import_module(name)


@pytest.fixture
def import_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.syspath_prepend(str(tmp_path))
    imported: list[str] = []

    def load(name: str, helper_value: int):
        module = _load(tmp_path, name, helper_value)
        imported.append(name)
        _KEEP_ALIVE.append(module)
        return module

    yield load
    for name in imported:
        sys.modules.pop(name, None)


def test_code_hash_changes_when_the_defining_file_changes(import_module) -> None:
    first = import_module("rung_unit_steps_v1", helper_value=1)
    second = import_module("rung_unit_steps_v2", helper_value=2)
    # The step's own source is identical: only the helper next to it differs.
    assert first.compute.func.__code__.co_code == second.compute.func.__code__.co_code
    assert first.compute.code_hash() != second.compute.code_hash()


def test_code_hash_is_stable_for_identical_files(import_module) -> None:
    first = import_module("rung_unit_steps_same_a", helper_value=7)
    second = import_module("rung_unit_steps_same_b", helper_value=7)
    assert first.compute.code_hash() == first.compute.code_hash()
    assert first.compute.code_hash() == second.compute.code_hash()
    assert len(first.compute.code_hash()) == 64


def test_code_hash_survives_function_id_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    for attempt in range(100):
        old = _load(tmp_path, f"rung_unit_reuse_old_{attempt}", helper_value=attempt)
        old_id, old_hash = id(old.compute.func), old.compute.code_hash()
        sys.modules.pop(old.__name__)
        del old
        gc.collect()
        new = _load(tmp_path, f"rung_unit_reuse_new_{attempt}", helper_value=-attempt - 1)
        sys.modules.pop(new.__name__)
        if id(new.compute.func) == old_id:
            # a different file (another helper value): its hash must differ
            assert new.compute.code_hash() != old_hash
            return
        _KEEP_ALIVE.append(new)  # keep it, so that the next attempt frees only `old`
    pytest.skip("CPython did not reuse a function id in 100 attempts; nothing to check")


def test_code_hash_differs_between_steps_in_one_file() -> None:
    assert plain.code_hash() != split_data.code_hash()


def stamp(ctx):
    return ctx.step


def test_code_hash_depends_on_step_name() -> None:
    first = step(name="stamp_a", outputs="a")(stamp)
    second = step(name="stamp_b", outputs="b")(stamp)
    assert first.code_hash() != second.code_hash()


# -- resources ---------------------------------------------------------------------------------


def test_resources_default_to_none_and_ask_ray_for_nothing() -> None:
    assert plain.resources == StepResources()
    assert plain.resources.ray_options() == {}


@step(num_cpus=2, num_gpus=0.5, memory="2GB")
def heavy(data):
    return data


def test_resources_are_kept_and_become_ray_options() -> None:
    assert heavy.resources == StepResources(num_cpus=2.0, num_gpus=0.5, memory=2 * 10**9)
    assert heavy.resources.ray_options() == {"num_cpus": 2.0, "num_gpus": 0.5, "memory": 2 * 10**9}
    assert heavy.resources.describe() == "2 CPUs, 0.5 GPUs, 2.0 GB"
    assert pickle.loads(pickle.dumps(heavy)).resources == heavy.resources


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1024, 1024), (0, 0), ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 GiB", int(1.5 * 2**30)), ("300kb", 300_000),
     ("7", 7), ("4G", 4 * 10**9), ("1TiB", 2**40)],
)
def test_memory_in_bytes_or_with_a_unit(value, expected) -> None:
    assert parse_memory(value) == expected
    assert step(memory=value)(lambda data: data).resources.memory == expected


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"num_cpus": -1}, "num_cpus"), ({"num_gpus": -0.5}, "num_gpus"), ({"num_cpus": "four"}, "num_cpus"),
     ({"num_gpus": True}, "num_gpus"), ({"num_cpus": float("inf")}, "num_cpus"), ({"memory": -1}, "memory"),
     ({"memory": "2 parsecs"}, "memory"), ({"memory": "-2GB"}, "memory"), ({"memory": "GB"}, "memory"),
     ({"memory": [2]}, "memory"), ({"memory": float("nan")}, "memory")],
)
def test_bad_resources_are_one_error_naming_the_argument(kwargs, argument) -> None:
    def fit(data):
        return data

    with pytest.raises(PipelineError) as caught:
        step(**kwargs)(fit)
    message = str(caught.value)
    assert message.startswith(f"step fit: {argument}: "), message
    assert "\n" not in message


def test_the_local_executor_refuses_a_step_this_machine_cannot_run(tmp_path: Path) -> None:
    """More GPUs or CPUs than the machine has: the step fails at once with one line, and its log says so."""
    from rung.pipeline.executors import LocalExecutor, StepTask, local_shortfall

    greedy = step(num_gpus=64, num_cpus=4096, name="greedy")(lambda data: data)
    assert local_shortfall(greedy.resources) is not None
    assert local_shortfall(StepResources(num_cpus=1)) is None
    ctx = StepContext(run_id="r1", step="greedy", project_root=tmp_path, params={})
    log = tmp_path / "greedy.log"
    executor = LocalExecutor(workers=2)
    try:
        outcome = executor.submit(StepTask(greedy, ctx, {}, tmp_path / "artifacts", log)).result(timeout=30)
    finally:
        executor.close()
    assert not outcome.ok and outcome.attempts == 0
    assert outcome.error is not None and "\n" not in outcome.error
    assert "asks for 4096 CPUs (this machine has" in outcome.error and "64 GPUs (this machine has" in outcome.error
    assert outcome.error in log.read_text()


def test_gpus_are_counted_from_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from rung.pipeline.executors import local_shortfall

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert local_shortfall(StepResources(num_gpus=2)) is None
    assert local_shortfall(StepResources(num_gpus=3)) == "3 GPUs (this machine has 2)"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_shortfall(StepResources(num_gpus=1)) == "1 GPU (this machine has 0)"
