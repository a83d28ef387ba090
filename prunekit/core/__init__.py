"""The pruning core, torch-side and job-agnostic: coupled channel groups (``graph``), filter scores
(``scoring``), parameter/MAC counts (``metrics``), the cost model and plans (``costmodel``, ``planning``,
``allocate``), forward-hook masking (``masking``) and physical surgery with its proof (``surgery``).

Modules are imported by their own names (``from prunekit.core.trace import build_graph``); this file
re-exports nothing so that importing one stage never loads another.
"""
