"""Data: reading sources, validating batches, profiling reference data."""
