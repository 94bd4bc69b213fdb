"""User-facing errors.

Library code raises `GmenetError` for anything the user can fix (bad path, wrong option, mismatched
checkpoint). The CLI prints its message as one line on stderr and exits with `exit_code`; nothing else
ever reaches the user as a traceback unless `GMENET_DEBUG=1` is set.
"""


class GmenetError(Exception):
    """An error with a message meant for the user. Exit codes, the same in every command:

    2 = the command line is wrong: an option or value that is not valid, a path that does not exist (dataset
        root or its expected files, store, checkpoint, teacher, input image), or a file that is not what the
        option takes (a CSV, ONNX or TorchScript file where a gmenet .pt is wanted, a student as --teacher);
    1 = what was named is the right kind of thing but cannot be used: damaged (corrupt, truncated), or not
        fitting the rest (other classes, face size or architecture settings), a non-finite loss; predict:
        some inputs unreadable or without a face."""

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
