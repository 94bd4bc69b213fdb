"""User-facing errors.

Library code raises `GmenetError` for anything the user can fix (bad path, wrong option, mismatched
checkpoint). The CLI prints its message as one line on stderr and exits with `exit_code`; nothing else
ever reaches the user as a traceback unless `GMENET_DEBUG=1` is set.
"""


class GmenetError(Exception):
    """An error with a message meant for the user. Exit codes, the same in every command: 2 = usage (wrong
    options, and input paths that do not exist: dataset root, store, checkpoint, teacher); 1 = the inputs
    exist but cannot be used (corrupt or mismatched data, a non-finite loss; predict: no face found)."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(GmenetError):
    """Wrong option values or config keys (exit code 2, like Click's own usage errors)."""

    exit_code = 2


class DataError(GmenetError):
    """Missing, malformed or incompatible dataset / prepared store."""


class CheckpointError(GmenetError):
    """Missing, corrupt, foreign or incompatible checkpoint."""
