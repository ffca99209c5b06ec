"""Thin Prefect tasks around the `sluicegate` steps: retries, caching, artifacts, failed states."""
