"""Drift comparison time, rung alone, for before/after runs of one change: PYTHONPATH=<tree>/src python bench/drift_ab.py LABEL."""
import os
import sys
import time

import numpy as np
import pandas as pd

from rung.monitor.drift import compare

try:
    from rung.config.drift import DriftSettings
except ImportError:
    from rung.monitor.drift import DriftSettings
rng = np.random.default_rng(0)
n, k = 1_000_000, 20
ref = pd.DataFrame({f"f{i}": rng.normal(size=n) for i in range(k)})
cur = pd.DataFrame({f"f{i}": rng.normal(0.1 if i < 10 else 0, size=n) for i in range(k)})
s = DriftSettings(multivariate=False) if "multivariate" in DriftSettings.model_fields else DriftSettings()
times = []
for _ in range(3):
    t = time.perf_counter()
    r = compare(ref, cur, settings=s)
    times.append(time.perf_counter() - t)
print(sys.argv[1], f"best {min(times):.2f} s", "drifted", sum(f.drifted for f in r.features), "load", os.getloadavg()[0])
