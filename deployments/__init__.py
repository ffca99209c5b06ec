"""Prefect deployments generated from each project's config."""
