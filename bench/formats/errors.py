"""Errors the harness reports as one clear paragraph and exit code 2, without a traceback."""

from bench.formats.contract import FAILED


class ConfigError(ValueError):
    """An invalid configuration: unknown name, incompatible task/estimator, out-of-range value, missing data.

    ``status`` is what a sweep records for the run: ``skipped`` when the combination cannot run by design
    (an estimator that does not fit the task), ``failed`` otherwise.
    """

    def __init__(self, message: str, status: str = FAILED) -> None:
        super().__init__(message)
        self.status = status
