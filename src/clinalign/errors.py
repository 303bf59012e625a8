"""Errors a user can act on. The CLI prints ``error: <message>`` on one line and exits 2."""

from __future__ import annotations


class ClinalignError(Exception):
    """Base of every error caused by the user's input or configuration (exit code 2)."""

    exit_code = 2


class DataError(ClinalignError):
    """Bad records. ``problems`` holds every ``FILE:LINE: field: what is wrong`` line found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        head = problems[0] if problems else "invalid data"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(head + more)


class ConfigError(ClinalignError):
    """A config key that does not exist, a bad value, or incompatible options."""


class TaskError(ClinalignError):
    """Unknown task id, or an invalid task declaration file."""


class InputError(ClinalignError):
    """Input that is not physiologically or logically possible (e.g. a hyponatremia panel with
    serum sodium >= 135)."""


class WriteError(ClinalignError):
    """An output could not be written (disk full, no permission); the message names the file."""


RESUMABLE = 75  # EX_TEMPFAIL: stopped on purpose with a checkpoint written; rerun with --resume
DIVERGED = 3  # training diverged (train/divergence.py): rerun with a lower lr; --resume would diverge again


class TrainingStopped(ClinalignError):
    """Training stopped before the end for a reason outside the config: non-finite loss or gradients,
    divergence, SIGTERM (preemption), a checkpoint that could not be written. The message says what was
    kept; ``exit_code`` is ``RESUMABLE`` when ``--resume`` continues the run as if it had not stopped,
    ``DIVERGED`` when the run must start again with a lower learning rate."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
