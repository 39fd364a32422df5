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

The package by concept: :mod:`~rung.certify.report` (a check and the
report), :mod:`~rung.certify.checks` (the rules on numbers and columns),
:mod:`~rung.certify.behaviour` (expectations on the score),
:mod:`~rung.certify.timing` (measuring ``predict``),
:mod:`~rung.certify.inputs` (reading versions, data, models, running the
project's tests) and :mod:`~rung.certify.gate` (:func:`certify`, which
puts them together).

Two kinds of "no": a version that fails a check gives a report with
``certified`` false; a gate that cannot run (bad ``certify:`` settings, no
data snapshot, a model that cannot be loaded for a reason other than
tampering) raises :class:`~rung.errors.CertificationError`.
"""

from __future__ import annotations

from rung.certify.behaviour import behaviour_check, validate_behaviour
from rung.certify.checks import (
    DEFAULT_CHAMPION_MARGIN,
    champion_check,
    latency_check,
    schema_check,
    slice_checks,
    threshold_check,
)
from rung.certify.gate import certify
from rung.certify.report import CertificationReport, Check

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
