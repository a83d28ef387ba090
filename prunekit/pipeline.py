"""``prune(config)``: the entry point of both prune jobs, which picks the job by the config's schedule
(one-shot: :mod:`prunekit.oneshot`; adaptive and fixed-rate searches: :mod:`prunekit.search`)."""
from __future__ import annotations

from .config import PruneConfig
from .errors import Interrupted
from .oneshot import prune_oneshot
from .search import run_search


def prune(cfg: PruneConfig) -> dict:
    """Run the prune job (one-shot, or the search for other schedules) and write ``cfg.out``; returns run.json.
    Progress goes to ``logging.getLogger("prunekit")`` (see :mod:`prunekit.progress`)."""
    if cfg.schedule != "oneshot":
        return run_search(cfg)
    try:
        return prune_oneshot(cfg)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; nothing was written ({cfg.out} is as it was)") from None
