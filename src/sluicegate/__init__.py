"""Sluicegate: gated, tracked ML pipelines on Prefect, from one YAML file per project."""

__version__ = "0.1.0"
