"""Pipelines: steps, the DAG, the content-addressed cache, executors and the runner."""

from __future__ import annotations

from rung.pipeline.dag import Pipeline
from rung.pipeline.step import Step, StepContext, step

__all__ = ["Pipeline", "Step", "StepContext", "step"]
