"""`python -m sluicegate.cli`: the `sluice` command."""

from sluicegate.cli import app_main

app_main()
