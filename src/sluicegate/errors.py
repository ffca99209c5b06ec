"""One exception tree for everything Sluicegate refuses, each with a documented exit code."""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluicegate raises on purpose; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(SluiceError):
    """The project YAML is malformed or fails the schema; the message names file and key."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DataSourceError(SluiceError):
    """The data could not be read (missing file, bad query, unknown bundled dataset)."""

    exit_code = 3


class DataValidationError(SluiceError):
    """The data failed an error-severity check; training did not start."""

    exit_code = 4

    def __init__(self, message: str, report_path: str | None = None):
        self.report_path = report_path
        super().__init__(message)


class TrainingError(SluiceError):
    """A trainer failed on valid data."""

    exit_code = 5


class GateRejected(SluiceError):
    """The candidate failed the evaluation gates; the champion was left in place."""

    exit_code = 6


class PromotionConflictError(SluiceError):
    """The champion alias moved while this run was deciding; nothing was promoted."""

    exit_code = 7


class RegistryError(SluiceError):
    """The model registry has no such project, version or alias."""

    exit_code = 8


class DeployError(SluiceError):
    """A deployment failed; the previous model keeps serving."""

    exit_code = 9


class FeedbackError(SluiceError):
    """A feedback body or file is malformed (not a list, an item without a label, an unreadable file)."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ServiceUnreachableError(SluiceError):
    """A configured server or store (Prefect API, MLflow, Optuna storage, Dask) does not answer."""

    exit_code = 10


class ApprovalError(SluiceError):
    """An approval could not be asked for or given: no persistent Prefect API, no run waiting, a bad answer."""

    exit_code = 11
