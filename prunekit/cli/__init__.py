"""``prunekit`` command line: one module per verb, each parsing options, calling one API function and rendering
its result (``prune``, ``export``, ``quantize``, ``bench``, ``check``, ``inspect``, ``report`` + ``models``,
``latency-table``, ``runtimes``);
the group, error handling and shared options in ``app``, output (text or JSON lines) in ``output``.

Every user mistake ends as one ``error:`` line on stderr and a non-zero exit code, never a traceback.
"""
from prunekit.cli import (  # noqa: F401 (registers the verbs)
    bench,
    check,
    export,
    inspect,
    latency_table,
    models,
    prune,
    quantize,
    report,
    runtimes,
)
from prunekit.cli.app import main

__all__ = ["main"]

if __name__ == "__main__":
    import sys

    sys.exit(main())
