"""``rung assess``: where a team stands on the published MLOps maturity models, with evidence.

::

    from rung.assess import assess_repo
    result = assess_repo("path/to/repo").to_dict()
    result["levels"]        # {"azure": 1, "google": 0, "aws": 1, "gigaom": 0}
    result["next_steps"]    # what closes the gaps, most useful first

The models and criteria are in :mod:`rung.assess.catalogue`, the scoring
rule in :mod:`rung.assess.scoring`, the reports in :mod:`rung.assess.report`.
"""

from __future__ import annotations

from rung.assess.answers import load_answers
from rung.assess.assessment import SCHEMA, Assessment, assess_project, assess_repo

__all__ = ["SCHEMA", "Assessment", "assess_project", "assess_repo", "load_answers"]
