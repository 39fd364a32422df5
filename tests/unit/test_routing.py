"""rung.delivery.routing: choosing a variant is a pure, sticky, weighted function of (key, table)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rung.delivery.routing import RoutingTable, Variant, key_point
from rung.errors import ConfigError


def table(*weights: float, model: str = "churn") -> RoutingTable:
    return RoutingTable.build(model, [Variant(f"v{i + 1}", i + 1, w) for i, w in enumerate(weights)])


def test_weights_split_keys_in_proportion() -> None:
    t = table(1, 3)
    counts = Counter(t.choose(f"user-{i}").name for i in range(20_000))
    assert counts["v1"] / 20_000 == pytest.approx(0.25, abs=0.015)


def test_a_zero_weight_variant_never_answers() -> None:
    t = table(0, 1)
    assert {t.choose(f"k{i}").name for i in range(2_000)} == {"v2"}


@given(st.text(min_size=1, max_size=40))
def test_the_same_key_always_gets_the_same_variant(key: str) -> None:
    t = table(1, 1, 2)
    assert len({t.choose(key).name for _ in range(5)}) == 1
    assert 0 <= key_point("churn", key) < 1


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=50), st.floats(0.01, 0.5), st.floats(0.5, 0.99))
def test_raising_the_first_variant_only_adds_keys_to_it(keys: list[str], low: float, high: float) -> None:
    """A canary ramp (candidate listed first) never moves a key away from the candidate."""
    before = table(low, 1 - low)
    after = table(high, 1 - high)
    for key in keys:
        if before.choose(key).name == "v1":
            assert after.choose(key).name == "v1"


def test_two_models_split_the_same_key_independently() -> None:
    a, b = table(1, 1, model="a"), table(1, 1, model="b")
    differ = sum(a.choose(f"k{i}").name != b.choose(f"k{i}").name for i in range(2_000))
    assert 800 < differ < 1200


def test_no_key_spreads_at_random() -> None:
    t = table(1, 1)
    counts = Counter(t.choose(None).name for _ in range(4_000))
    assert counts["v1"] == pytest.approx(2_000, abs=200)


@pytest.mark.parametrize(
    ("variants", "field"),
    [
        ([], "variants"),
        ([{"version": 0}], "variants[0].version"),
        ([{"version": "1"}], "variants[0].version"),
        ([{"version": 1, "weight": -1}], "variants[0].weight"),
        ([{"version": 1, "weight": True}], "variants[0].weight"),
        ([{"version": 1, "name": "bad name"}], "variants[0].name"),
        ([{"version": 1, "colour": "red"}], "variants[0].colour"),
        ([{"version": 1, "weight": 0}], "variants"),
        ([{"version": 1, "name": "a"}, {"version": 2, "name": "a"}], "variants"),
        (["v1"], "variants[0]"),
    ],
)
def test_bad_tables_name_the_field(variants: list, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RoutingTable.build("churn", variants)
    assert str(info.value).startswith(f"{field}:")


def test_shares_and_versions() -> None:
    t = RoutingTable.build("churn", [{"name": "canary", "version": 3, "weight": 1}, {"name": "champion", "version": 2, "weight": 3}],
                           [{"name": "shadow", "version": 4}])
    assert t.share("canary") == 0.25 and t.versions == {2, 3, 4}
    assert t.to_dict()["variants"][1]["share"] == 0.75
