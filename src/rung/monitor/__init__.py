"""Production monitoring: the request log, drift, live performance, ops time series and alerts."""
