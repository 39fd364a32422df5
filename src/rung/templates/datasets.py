"""Sample data for the templates, generated in code (no download).

Both generators are seeded, so a new project's first run is reproducible,
and have a real signal with noise and some missing values, so validation,
training and per-slice metrics all have something to show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["churn", "demand", "DATASETS"]


def churn(rows: int = 4000, seed: int = 7) -> pd.DataFrame:
    """Customers of a subscription business; ``churned`` is 1 for those who left."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], size=rows, p=[0.55, 0.25, 0.2])
    region = rng.choice(["north", "south", "east", "west"], size=rows, p=[0.3, 0.25, 0.25, 0.2])
    tenure = rng.integers(1, 73, size=rows)
    charges = np.round(rng.normal(70, 25, size=rows).clip(18, 130), 2)
    calls = rng.poisson(1.5, size=rows)
    age = rng.integers(18, 81, size=rows)
    paperless = rng.choice(["yes", "no"], size=rows, p=[0.6, 0.4])
    logit = (
        -1.2
        - 0.045 * tenure
        + 0.022 * (charges - 70)
        + 0.45 * calls
        + np.select([contract == "month-to-month", contract == "one-year"], [1.3, 0.1], -0.9)
        + np.where(region == "south", 0.35, 0.0)
        + np.where(paperless == "yes", 0.25, 0.0)
        - 0.01 * (age - 45)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "contract": contract,
            "region": region,
            "support_calls": calls,
            "age": age,
            "paperless_billing": paperless,
            "churned": churned,
        }
    )
    frame.loc[rng.random(rows) < 0.01, "monthly_charges"] = np.nan
    return frame


def demand(rows: int = 4000, seed: int = 11) -> pd.DataFrame:
    """Daily units sold per store; ``units_sold`` is the target."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    day = rng.choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], size=rows)
    size = rng.choice(["small", "medium", "large"], size=rows, p=[0.4, 0.4, 0.2])
    region = rng.choice(["north", "south", "east", "west"], size=rows)
    temperature = np.round(rng.normal(18, 8, size=rows), 1)
    price = np.round(rng.uniform(2.0, 6.0, size=rows), 2)
    promotion = rng.choice([0, 1], size=rows, p=[0.8, 0.2])
    base = np.select([size == "small", size == "medium"], [40.0, 80.0], 150.0)
    weekend = np.isin(day, ["sat", "sun"])
    units = base * (1 + 0.25 * weekend) * (1 + 0.4 * promotion) * np.exp(-0.15 * (price - 4)) + 1.2 * (temperature - 18)
    units = np.round(np.clip(units + rng.normal(0, 8, size=rows), 0, None), 1)
    frame = pd.DataFrame(
        {
            "day_of_week": day,
            "store_size": size,
            "region": region,
            "temperature": temperature,
            "price": price,
            "promotion": promotion,
            "units_sold": units,
        }
    )
    frame.loc[rng.random(rows) < 0.01, "temperature"] = np.nan
    return frame


DATASETS = {"churn": churn, "demand": demand}
