"""Errors that genbench reports to the user as one clear message, without a traceback."""

from __future__ import annotations


class GenbenchError(Exception):
    """A problem with the user's input (config, files, environment), not a bug."""


class ConfigError(GenbenchError):
    """One or more invalid config values; each message names the key, value and what is allowed."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class DatasetNotFoundError(GenbenchError):
    """A dataset's files are missing and could not be downloaded."""


class DatasetCorruptError(GenbenchError):
    """A dataset's files are present but do not parse (truncated or garbled)."""


class TrainingDivergedError(GenbenchError):
    """A loss or the weights became non-finite; training stopped before saving them."""
