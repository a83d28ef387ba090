"""``prunekit runtimes``: every registered runtime, what it runs, and whether this machine has it."""
from __future__ import annotations

import click

from prunekit.cli.app import main
from prunekit.cli.output import log_format_option, say, say_json


@main.command("runtimes")
@log_format_option
@click.option("--json", "as_json", is_flag=True)
def runtimes(as_json):
    """List the runtimes a model can ship to (--runtime, bench --runtimes), and which this machine can run.

    \b
    Example:
      prunekit runtimes
    """
    from prunekit.runtimes import RUNTIMES, cpu_info

    rows = [{"name": r.name, "family": r.family, "precision": r.precision, "runs": r.artifact,
             "available": r.missing() is None, "missing": r.missing(), "help": r.help} for r in RUNTIMES.values()]
    if as_json:
        say_json({"cpu": cpu_info().to_dict(), "runtimes": rows})
        return
    cpu = cpu_info()
    say(f"this machine: {cpu.model}, {cpu.cores} cores, {cpu.isa}, native bf16: {'yes' if cpu.native_bf16 else 'no'}")
    for r in rows:
        say(f"  {r['name']:<22} {'yes' if r['available'] else 'no ':<4} {r['help']}"
            + (f" — {r['missing']}" if r["missing"] else ""))
