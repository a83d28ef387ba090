"""Every list of choices is defined once (prunekit.config.choices): the registries that implement them, the
CLI's options and the configs' checks all agree with it."""
from __future__ import annotations

import click
import pytest

from prunekit.cli import main
from prunekit.config import JOBS, PruneConfig
from prunekit.config.choices import CHOICES, check_choice, option_name
from prunekit.errors import PrunekitError


def cli_options() -> dict[str, click.Option]:
    """Every option of every verb, keyed by (verb, option name)."""
    return {(verb, p.name): p for verb, cmd in main.commands.items() for p in cmd.params
            if isinstance(p, click.Option)}


def test_registries_match_the_choices():
    from prunekit.compute.device import AMP
    from prunekit.core.scoring import CRITERIA
    from prunekit.data import MODES
    from prunekit.runtimes import RUNTIMES

    assert set(CRITERIA) == set(CHOICES["criterion"])
    assert tuple(RUNTIMES) == CHOICES["runtime"]  # the one list that is its registry's
    assert tuple(AMP) == CHOICES["amp"]
    assert tuple(MODES) == CHOICES["data_mode"]
    assert set(JOBS) == set(CHOICES["schedule"])


@pytest.mark.parametrize("verb,option,choice", [
    ("prune", "criterion", "criterion"), ("prune", "runtime", "runtime"), ("latency-table", "runtime", "runtime"),
    ("check", "runtime", "runtime"), ("bench", "runtimes", "runtime"), ("prune", "depth", "depth"),
    ("prune", "branch_criterion", "branch_criterion"),
    ("prune", "amp", "amp"),
    ("prune", "data_mode", "data_mode"), ("prune", "schedule", "schedule"), ("prune", "allocate", "allocate"),
    ("prune", "distill", "distill"), ("prune", "cost", "cost"), ("prune", "rewind", "rewind"),
    ("prune", "minimize", "minimize"), ("prune", "step_mode", "step_mode"),
    ("prune", "threshold_scale", "threshold_scale"), ("prune", "knapsack_value", "knapsack_value"),
    ("prune", "log_format", "log_format"), ("export", "exporter", "exporter"),
    ("quantize", "method", "quantize_method"), ("bench", "provider", "bench_provider"),
    ("bench", "device", "bench_provider"), ("check", "log_format", "log_format"),
])
def test_cli_choices_are_the_defined_lists(verb, option, choice):
    param = cli_options()[(verb, option)]
    assert hasattr(param.type, "choices"), f"{verb} --{option} takes any text"  # a click.Choice or a ChoiceList
    assert tuple(param.type.choices) == CHOICES[choice]


def test_every_choice_of_the_configs_is_checked_against_the_list():
    """A value outside the list is refused by the config itself (the Python API), naming the option."""
    base = dict(model="resnet20", data="random", target="params=0.5", out="unused")
    for name in ("criterion", "runtime", "amp", "data_mode", "allocate", "distill", "cost", "knapsack_value",
                 "threshold_scale", "log_format", "rewind", "minimize", "step_mode", "lr_schedule"):
        with pytest.raises(PrunekitError, match=f"{option_name(name)} must be one of"):
            PruneConfig(**base, **{name: "no-such-choice"})


def test_check_choice_names_every_choice():
    with pytest.raises(PrunekitError, match="--amp must be one of auto, bf16, fp16, off, got 'int4'"):
        check_choice("amp", "int4")
    assert check_choice("runtime", "cuda") == "cuda"
