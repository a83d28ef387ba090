"""``prunekit report``: a run folder's report.md and plots."""
from __future__ import annotations

import click

from prunekit.cli.app import main
from prunekit.cli.output import say


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir):
    """Write RUN_DIR/report.md with its plots (rounds.png, channels.png); prune does this after every run.

    \b
    Example:
      prunekit report runs/r20-f50
    """
    from prunekit.runs.report import write_report

    say(write_report(run_dir))
