"""Expected failures print one line: Prefect's tracebacks of a SluiceError stay off the console."""

from __future__ import annotations

import logging
import sys

import pytest

from sluicegate import cli
from sluicegate.errors import DataValidationError, GateRejected


def _record(msg: str, exc: BaseException | None = None, name: str = "prefect.task_runs", level: int = logging.ERROR):
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, (), exc_info)


@pytest.fixture()
def no_debug(monkeypatch):
    monkeypatch.setitem(cli._state, "debug", False)


def test_expected_failures_are_not_logged_twice(no_debug):
    f = cli.ExpectedFailureFilter()
    assert not f.filter(_record("Task run failed with exception: ...", DataValidationError("tenure: 12 values above max 120")))
    assert not f.filter(_record("Finished in state Failed('Task run encountered an exception DataValidationError: "
                                "data validation failed')"))
    assert not f.filter(_record("Finished in state Failed('Flow run encountered an exception: GateRejected: x')",
                                name="prefect.flow_runs", level=logging.INFO))
    # unexpected errors keep their traceback; ordinary lines pass
    assert f.filter(_record("Task run failed with exception: ...", ValueError("bug")))
    assert f.filter(_record("Finished in state Failed('Task run encountered an exception ValueError: bug')"))
    assert f.filter(_record("Finished in state Completed()", level=logging.INFO))


def test_debug_shows_everything(monkeypatch):
    monkeypatch.setitem(cli._state, "debug", True)
    assert cli.ExpectedFailureFilter().filter(_record("failed", GateRejected("rejected")))


def test_filter_goes_on_console_handlers_only(no_debug):
    class APILogHandler(logging.Handler):
        def emit(self, record):  # pragma: no cover
            pass

    logger = logging.getLogger("prefect.sluice_test")
    console, api = logging.StreamHandler(), APILogHandler()
    logger.addHandler(console)
    logger.addHandler(api)
    try:
        cli.quiet_expected_failures()
        cli.quiet_expected_failures()
        assert sum(isinstance(f, cli.ExpectedFailureFilter) for f in console.filters) == 1
        assert not api.filters  # the Prefect UI keeps the traceback
    finally:
        logger.removeHandler(console)
        logger.removeHandler(api)


def test_main_prints_one_line_with_the_report_path(no_debug, capsys, monkeypatch):
    def fail(*_a, **_k):
        raise DataValidationError("data validation failed: tenure: 12 values above max 120", "/tmp/r/validation.json")

    monkeypatch.setattr(cli.release, "resolve", fail)  # where `sluice stop` looks it up
    code = cli.main(["stop", "churn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert err == ["error: data validation failed: tenure: 12 values above max 120 (report: /tmp/r/validation.json)"]
