"""What a prune job is asked to do: the job configs (``jobs``), their targets (``targets``) and the one list
of every choice (``choices``). No torch at import; this file only re-exports."""
from prunekit.config.choices import CHOICES, check_choice, check_device_spec, choices, parse_round_to
from prunekit.config.jobs import (
    JOBS,
    JobConfig,
    OneShotConfig,
    PruneConfig,
    SearchConfig,
    TrainingConfig,
    check_paths,
    config_dict,
    option_default,
)
from prunekit.config.targets import (
    TARGET_KINDS,
    CostBasis,
    Target,
    TargetKind,
    cost_basis,
    parse_duration,
    parse_target,
)

__all__ = ["CHOICES", "CostBasis", "JOBS", "TARGET_KINDS", "JobConfig", "OneShotConfig", "PruneConfig", "SearchConfig",
           "Target", "TargetKind", "TrainingConfig", "check_choice", "check_device_spec", "check_paths", "choices",
           "config_dict",
           "cost_basis", "option_default", "parse_duration", "parse_round_to", "parse_target"]
