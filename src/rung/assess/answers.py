"""The team's answers: what code cannot show (people, process, strategy).

An answers file is YAML, one criterion id per key::

    team.ds-de: yes
    strategy.objectives: {answer: partly, note: "the churn model has an owner; the others do not"}

Answers are ``yes``, ``partly``, ``no`` or ``unknown``. Any criterion can be
answered; an answer counts as ``stated``, the weakest confidence, and never
hides what rung's records proved. Unknown keys and values are refused with
the valid ones named: a typo must not silently leave a criterion unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from rung.assess.catalogue import CRITERIA, Criterion
from rung.assess.findings import Evidence, Finding
from rung.errors import AssessError

__all__ = ["ANSWERS", "load_answers", "parse_answers", "findings_from_answers", "ask_answers", "save_answers"]

ANSWERS = {"yes": "met", "partly": "partial", "no": "not_met", "unknown": "unknown"}
_ALIASES = {True: "yes", False: "no", "true": "yes", "false": "no", "partial": "partly", "y": "yes", "n": "no"}
_IDS = {c.id for c in CRITERIA}


def _normalise(key: str, value: Any) -> tuple[str, str]:
    note = ""
    if isinstance(value, dict):
        extra = sorted(set(value) - {"answer", "note"})
        if extra:
            raise AssessError(f"answers: {key}: unknown field {extra[0]!r}; use {{answer: yes|partly|no, note: ...}}")
        note = str(value.get("note") or "")
        value = value.get("answer")
    answer = _ALIASES.get(value.lower() if isinstance(value, str) else value, value)
    if answer not in ANSWERS:
        raise AssessError(f"answers: {key}: {value!r} is not an answer; use one of {', '.join(ANSWERS)}")
    return str(answer), note


def parse_answers(raw: Any, *, source: str = "answers") -> dict[str, tuple[str, str]]:
    """``{criterion id: (answer, note)}`` from a loaded YAML mapping; refuses unknown ids and values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise AssessError(f"{source}: expected a mapping of criterion id to yes|partly|no, got {type(raw).__name__}")
    parsed: dict[str, tuple[str, str]] = {}
    for key, value in raw.items():
        if key not in _IDS:
            close = get_close_matches(str(key), sorted(_IDS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "`rung assess --list` prints every criterion id"
            raise AssessError(f"{source}: unknown criterion {key!r}: {hint}")
        parsed[str(key)] = _normalise(str(key), value)
    return parsed


def load_answers(path: str | Path) -> dict[str, tuple[str, str]]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AssessError(f"answers file {path} does not exist: create it, or use --ask to answer prompts") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AssessError(f"answers file {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise AssessError(f"answers file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_answers(raw, source=str(path))


def findings_from_answers(answers: dict[str, tuple[str, str]], source: str = "answers") -> dict[str, Finding]:
    found = {}
    for cid, (answer, note) in answers.items():
        status = ANSWERS[answer]
        found[cid] = Finding(cid, status, "stated" if status != "unknown" else "none",
                             f"the team answered {answer}" + (f": {note}" if note else ""),
                             (Evidence("answer", source, note or answer),))
    return found


def ask_answers(criteria: list[Criterion], ask: Callable[[Criterion], str | None]) -> dict[str, tuple[str, str]]:
    """Ask about each criterion in turn; ``ask`` returns an answer, or None to stop asking."""
    answers: dict[str, tuple[str, str]] = {}
    for c in criteria:
        reply = ask(c)
        if reply is None:
            break
        answers[c.id] = _normalise(c.id, reply)
    return answers


def save_answers(path: str | Path, answers: dict[str, tuple[str, str]]) -> None:
    data = {cid: ({"answer": a, "note": n} if n else a) for cid, (a, n) in sorted(answers.items())}
    Path(path).write_text("# rung assess answers: yes | partly | no | unknown (criterion ids: rung assess --list)\n"
                          + yaml.safe_dump(data, sort_keys=True, allow_unicode=True), encoding="utf-8")
