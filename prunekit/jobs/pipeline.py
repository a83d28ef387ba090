"""``prune(config)``: the entry point of both prune jobs, which picks the job by the config's type
(:class:`~prunekit.config.OneShotConfig`: :mod:`prunekit.jobs.oneshot`; :class:`~prunekit.config.SearchConfig`,
the adaptive and fixed-rate searches: :mod:`prunekit.jobs.search.loop`)."""
from __future__ import annotations

from prunekit.config import JobConfig, OneShotConfig, SearchConfig
from prunekit.errors import Interrupted, PrunekitError
from prunekit.jobs.oneshot import prune_oneshot
from prunekit.jobs.search.loop import run_search


def _oneshot(cfg: OneShotConfig) -> dict:
    from prunekit.compute.ddp import distributed

    if distributed()[1] > 1:  # every rank would plan, time and write the same run folder
        raise PrunekitError("--schedule oneshot runs in one process: launch it without torchrun (the search "
                            "uses torchrun's ranks for its rounds)")
    try:
        return prune_oneshot(cfg)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; nothing was written ({cfg.out} is as it was)") from None


RUNNERS = {OneShotConfig: _oneshot, SearchConfig: run_search}  # what runs each config type (config.JOBS: its name)


def prune(cfg: JobConfig) -> dict:
    """Run the job ``cfg``'s type names and write ``cfg.out``; returns run.json. Progress goes to
    ``logging.getLogger("prunekit")`` (see :mod:`prunekit.progress`)."""
    job = RUNNERS.get(type(cfg))
    if job is None:
        raise PrunekitError(f"prune needs a OneShotConfig or SearchConfig (see prunekit.PruneConfig), "
                            f"got {type(cfg).__name__}")
    return job(cfg)
