"""``python -m prunekit.cli`` (as ``python -m prunekit``): the command line."""
from prunekit.cli import main

main()
