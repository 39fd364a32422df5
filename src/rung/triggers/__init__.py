"""Retraining triggers: schedule, new data, drift, performance, manual; and the guards against retrain storms."""
