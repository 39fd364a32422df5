"""The demo's world: customers of a subscription business, day by day, with a drift that starts on a given day.

Generated in code and seeded (nothing is downloaded). The columns are those
of the ``tabular-classification`` template's churn data, so the template's
schema, pipeline and tests apply unchanged. Two things make it realistic:

* **seasonality**: support calls and churn rise at the start of each week;
* **a drift** from ``drift_day``: a competitor's cheaper offer arrives. New
  customers come on month-to-month contracts and higher charges (data
  drift), and price now drives churn far more than before (concept drift),
  so a model trained before that day loses accuracy after it.

The true label of a request is known ``label_delay_days`` later: feedback
arrives late, as it does in a real churn problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Scenario", "TARGET", "FEATURES"]

TARGET = "churned"
FEATURES = ["tenure_months", "monthly_charges", "contract", "region", "support_calls", "age", "paperless_billing"]


@dataclass(frozen=True)
class Scenario:
    """Days of customers: ``days(first, count)`` gives their features, the true label and the day."""

    drift_day: int = 12
    per_day: int = 300
    history_days: int = 20  # labelled days before day 0: the first model's training data
    label_delay_days: int = 1
    seed: int = 2026

    def day(self, day: int, rows: int | None = None) -> pd.DataFrame:
        """One day's customers (a pure function of the day and the seed)."""
        import numpy as np
        import pandas as pd

        rows = rows or self.per_day
        rng = np.random.default_rng([self.seed, day + 10_000])
        drifted = day >= self.drift_day
        weekday = day % 7
        monday = weekday == 0
        contract = rng.choice(["month-to-month", "one-year", "two-year"], size=rows,
                              p=[0.78, 0.14, 0.08] if drifted else [0.55, 0.25, 0.2])
        region = rng.choice(["north", "south", "east", "west"], size=rows, p=[0.3, 0.25, 0.25, 0.2])
        tenure = rng.integers(1, 73, size=rows)
        charges = np.round(rng.normal(88 if drifted else 70, 22, size=rows).clip(18, 130), 2)
        calls = rng.poisson(2.2 if monday else 1.4, size=rows)
        age = rng.integers(18, 81, size=rows)
        paperless = rng.choice(["yes", "no"], size=rows, p=[0.6, 0.4])
        price_effect = 0.16 if drifted else 0.022  # after the competitor's offer, price is what makes people leave
        logit = (
            -1.2
            - 0.045 * tenure
            + price_effect * (charges - 70)
            + 0.45 * calls
            + np.select([contract == "month-to-month", contract == "one-year"], [1.3, 0.1], -0.9)
            + np.where(region == "south", 0.35, 0.0)
            + np.where(paperless == "yes", 0.25, 0.0)
            - 0.01 * (age - 45)
            + (0.2 if monday else 0.0)
            - (2.8 if drifted else 0.0)
        )
        churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        frame = pd.DataFrame({
            "tenure_months": tenure, "monthly_charges": charges, "contract": contract, "region": region,
            "support_calls": calls, "age": age, "paperless_billing": paperless, TARGET: churned,
        })
        frame.loc[rng.random(rows) < 0.01, "monthly_charges"] = np.nan
        frame.insert(0, "day", day)
        return frame

    def days(self, first: int, count: int) -> pd.DataFrame:
        import pandas as pd

        return pd.concat([self.day(d) for d in range(first, first + count)], ignore_index=True)

    def history(self) -> pd.DataFrame:
        """The labelled days before the demo starts (``-history_days .. -1``)."""
        return self.days(-self.history_days, self.history_days)
