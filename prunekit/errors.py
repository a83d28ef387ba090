"""The one exception type a user of prunekit should ever see for a mistake of theirs."""


class PrunekitError(Exception):
    """A user-facing error: bad input, unsupported model, failed verification.

    The CLI prints its message as one line on stderr and exits non-zero, without a traceback.
    """
