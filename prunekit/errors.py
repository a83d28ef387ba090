"""The exception types a user of prunekit should ever see for a mistake of theirs or a failed check."""


class PrunekitError(Exception):
    """A user-facing error: bad input, unsupported model, impossible target.

    The CLI prints its message on stderr (one line, or a checklist) and exits with ``exit_code``
    (2: the input cannot be used), without a traceback.
    """

    exit_code = 2


class VerificationError(PrunekitError):
    """A numerical check failed (masked ≠ pruned, ONNX ≠ PyTorch): nothing was written. Exit code 1."""

    exit_code = 1
