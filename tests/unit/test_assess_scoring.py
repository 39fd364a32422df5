"""The maturity scoring rule, the catalogue's consistency, and the answers file: pure, no I/O."""

from __future__ import annotations

import pytest

from rung.assess.answers import findings_from_answers, parse_answers
from rung.assess.catalogue import CRITERIA, MODELS, model
from rung.assess.files import FILE_CHECKS
from rung.assess.findings import Evidence, Finding, merge
from rung.assess.records import RECORD_CHECKS
from rung.assess.scoring import next_steps, score_model, score_models
from rung.errors import AssessError


def _all(status: str, *, answers: str | None = None) -> dict[str, Finding]:
    found = {}
    for c in CRITERIA:
        s = answers if (c.answer_only and answers is not None) else status
        found[c.id] = Finding(c.id, s, "proven" if s != "unknown" else "none", "test")
    return found


def _with(found: dict[str, Finding], cid: str, status: str) -> dict[str, Finding]:
    return found | {cid: Finding(cid, status, "observed" if status != "unknown" else "none", "test")}


def _scores(found: dict[str, Finding]) -> dict[str, int | None]:
    return {s.model: s.level for s in score_models(found)}


def test_everything_met_is_the_top_of_every_model() -> None:
    assert _scores(_all("met")) == {m.key: m.top for m in MODELS}


def test_nothing_met_is_the_bottom_of_every_model() -> None:
    assert _scores(_all("not_met")) == {m.key: 0 for m in MODELS}


def test_a_missing_criterion_caps_the_level_just_below_where_it_counts() -> None:
    found = _with(_all("met", answers="met"), "tracking.experiments", "not_met")  # Azure creation L2, Google L1
    scores = _scores(found)
    assert scores["azure"] == 1 and scores["google"] == 0 and scores["aws"] == 3
    assert scores["gigaom"] == 1  # modeling L2


def test_partly_met_does_not_count_for_a_level() -> None:
    found = _with(_all("met", answers="met"), "infra.scalable", "partial")  # AWS L2, GigaOm architecture L4
    scores = _scores(found)
    assert scores["aws"] == 1 and scores["gigaom"] == 3 and scores["azure"] == 4


def test_unknown_criteria_are_set_aside_and_listed() -> None:
    found = _all("met", answers="unknown")
    azure = score_model(model("azure"), found)
    people = next(d for d in azure.dimensions if d.name == "people")
    assert people.level is None  # every People criterion unknown: not assessed, not guessed
    assert azure.level == 4
    assert set(azure.unknown) == {"team.ds-de", "team.se-integration", "team.production-metrics"}
    gigaom = score_model(model("gigaom"), found)
    assert next(d for d in gigaom.dimensions if d.name == "strategy").level is None and gigaom.level == 4


def test_answered_people_criteria_count_like_any_other() -> None:
    found = _with(_all("met", answers="met"), "team.se-integration", "not_met")
    scores = _scores(found)
    assert scores["azure"] == 2  # People L3
    assert scores["google"] == 0  # Google L1


def test_optional_criteria_never_block() -> None:
    found = _with(_all("met", answers="met"), "features.store", "not_met")
    assert _scores(found)["google"] == 2


def test_gaps_name_what_stops_the_next_level_with_its_fix() -> None:
    found = _with(_with(_all("met", answers="met"), "monitoring.production", "not_met"), "alerts.configured", "partial")
    aws = score_model(model("aws"), found)
    assert aws.level == 2
    assert {g.criterion for g in aws.gaps} == {"monitoring.production", "alerts.configured"}
    assert all(g.level == 3 and g.next_step for g in aws.gaps)
    steps = next_steps(score_models(found))
    monitoring = next(s for s in steps if s["criterion"] == "monitoring.production")
    assert len(monitoring["unblocks"]) == 4  # Azure, Google, AWS, GigaOm
    assert steps[0]["criterion"] == "monitoring.production"  # the fix that unblocks the most comes first


def test_a_dimension_that_holds_no_level_does_not_show_its_gaps() -> None:
    found = _with(_with(_all("met", answers="met"), "tracking.experiments", "not_met"), "release.automated", "not_met")
    azure = score_model(model("azure"), found)
    assert azure.level == 1
    assert {g.criterion for g in azure.gaps} == {"tracking.experiments"}  # release is at 2; creation holds it at 1


def test_every_model_level_has_criteria_and_every_criterion_is_checked_somewhere() -> None:
    for m in MODELS:
        for dimension in m.dimensions:
            levels = {p.level for c in CRITERIA for p in c.placements if p.model == m.key and p.dimension == dimension}
            assert levels and max(levels) <= m.top and min(levels) >= 1, (m.key, dimension)
    for c in CRITERIA:
        assert c.placements and all(p.dimension in model(p.model).dimensions for p in c.placements), c.id
        if not c.answer_only:
            assert c.id in FILE_CHECKS, c.id
        else:
            assert c.id not in FILE_CHECKS and c.id not in RECORD_CHECKS, c.id
    assert len({c.id for c in CRITERIA}) == len(CRITERIA)


def test_merge_prefers_met_then_the_strongest_source() -> None:
    proven_no = Finding("x", "not_met", "none", "records")
    observed_partly = Finding("x", "partial", "observed", "files")
    stated_yes = Finding("x", "met", "stated", "answers")
    assert merge(proven_no, observed_partly, stated_yes) is stated_yes
    assert merge(proven_no, observed_partly) is observed_partly
    proven_partly = Finding("x", "partial", "proven", "records")
    assert merge(proven_partly, observed_partly) is proven_partly
    assert merge(None, None) is None


def test_answers_accept_yes_partly_no_and_notes() -> None:
    parsed = parse_answers({"team.ds-de": True, "strategy.roadmap": "partly",
                            "strategy.kpis": {"answer": "no", "note": "only AUC is reviewed"}, "team.se-integration": "unknown"})
    assert parsed == {"team.ds-de": ("yes", ""), "strategy.roadmap": ("partly", ""),
                      "strategy.kpis": ("no", "only AUC is reviewed"), "team.se-integration": ("unknown", "")}
    found = findings_from_answers(parsed, "answers.yaml")
    assert found["team.ds-de"].status == "met" and found["team.ds-de"].confidence == "stated"
    assert found["strategy.kpis"].evidence == (Evidence("answer", "answers.yaml", "only AUC is reviewed"),)
    assert found["team.se-integration"].status == "unknown"


@pytest.mark.parametrize(("raw", "message"), [
    ({"team.ds-dee": "yes"}, "did you mean 'team.ds-de'"),
    ({"nonsense": "yes"}, "unknown criterion 'nonsense'"),
    ({"team.ds-de": "maybe"}, "'maybe' is not an answer"),
    ({"team.ds-de": {"answer": "yes", "because": "x"}}, "unknown field 'because'"),
    (["team.ds-de"], "expected a mapping"),
])
def test_answers_refuse_unknown_keys_and_values(raw: object, message: str) -> None:
    with pytest.raises(AssessError, match=message):
        parse_answers(raw)


def test_prompted_answers_stop_on_request_and_are_checked() -> None:
    from rung.assess.answers import ask_answers

    people = [c for c in CRITERIA if c.answer_only]
    replies = iter(["y", "partial", None])
    assert ask_answers(people, lambda c: next(replies)) == {people[0].id: ("yes", ""), people[1].id: ("partly", "")}
    with pytest.raises(AssessError, match="not an answer"):
        ask_answers(people, lambda c: "perhaps")
