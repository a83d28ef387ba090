"""``prunekit report`` (a run folder's report.md and plots) and ``prunekit models`` (the built-ins)."""
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
    from prunekit.deploy.report import write_report

    say(write_report(run_dir))


@main.command("models")
def list_models_cmd():
    """List the built-in architectures.

    \b
    Example:
      prunekit models
    """
    from prunekit.models import list_models
    from prunekit.models.registry import get_entry

    for name in list_models():
        e = get_entry(name)
        say(f"{name:<14} input {','.join(map(str, e.input_size))}  classes {e.num_classes}  "
                   f"{(e.factory.__doc__ or '').strip().splitlines()[0]}")
    say("torchvision:NAME  any torchvision classification model, e.g. torchvision:resnet50")
