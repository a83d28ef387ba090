"""The search's run folder: a checkpoint per round (``search/round-NNNN.pt``, the ``pruned.pt`` format),
``rounds.jsonl`` (a line per round), ``search/state.json`` (config, dense figures, controller) — every file
written atomically by rank 0 — and what a resume or an interrupt reads back from them."""
from __future__ import annotations

import json
import os
import shutil

from prunekit.config import PruneConfig, SearchConfig, config_dict
from prunekit.errors import PrunekitError, user_input
from prunekit.files import atomic_write_bytes, atomic_write_json, read_json
from prunekit.jobs.search.policy import Controller
from prunekit.runs.rebuild import load
from prunekit.runs.storage import read_pruned, save_pruned


class RunStore:
    def __init__(self, out: str, spec, rank: int = 0, trust_pickle: bool = False, trust_code: bool = False):
        self.dir, self.spec, self.rank = out, spec, rank
        self.trust_pickle, self.trust_code = trust_pickle, trust_code
        self.state_path = state_path(out)
        self.rows_path = os.path.join(out, "rounds.jsonl")

    def round_path(self, r: int) -> str:
        return os.path.join(self.dir, "search", f"round-{r:04d}.pt")

    def save_round(self, r: int, model, history: list) -> None:
        if self.rank == 0:
            save_pruned(self.round_path(r), model, self.spec, history)

    def load_round(self, r: int):
        """(model, history) of round r, rebuilt as :func:`prunekit.load` rebuilds a run folder."""
        model = load(self.round_path(r), trust_pickle=self.trust_pickle, trust_code=self.trust_code)
        return model, [list(h) for h in read_pruned(self.round_path(r))["history"]]

    def append_row(self, row: dict) -> None:
        if self.rank == 0:
            old = open(self.rows_path, "rb").read() if os.path.exists(self.rows_path) else b""
            atomic_write_bytes(self.rows_path, old + (json.dumps(row, default=float) + "\n").encode())

    def rows(self) -> list[dict]:
        if not os.path.exists(self.rows_path):
            return []
        with open(self.rows_path) as f, user_input(f"{self.rows_path} is damaged"):
            return [json.loads(ln) for ln in f if ln.strip()]

    def keep_rows_before(self, done: int) -> None:
        """Drop rows written after the last saved state (a crash between the two writes)."""
        if self.rank == 0 and os.path.exists(self.rows_path):
            kept = [json.dumps(r, default=float) + "\n" for r in self.rows() if r["round"] < done]
            atomic_write_bytes(self.rows_path, "".join(kept).encode())

    def save_state(self, cfg: SearchConfig, info: dict, ctrl: Controller) -> None:
        if self.rank == 0:
            atomic_write_json(self.state_path, {"config": config_dict(cfg), "dense": info, "controller": ctrl.state(),
                                                "spec": self.spec.to_dict()})

    def round_timing(self) -> dict:
        """Per-round wall time split into training and the rest (scoring, planning, surgery, verification,
        evaluation, checkpoint): the search's overhead beyond the training it buys."""
        timed = [r for r in self.rows() if r.get("timing")]
        wall = sum(r["wall_s"] for r in timed)
        train_s = sum(r["timing"]["train_s"] for r in timed)
        bn_s = sum(r["timing"].get("bn_s", 0.0) for r in timed)
        return {"rounds": len(timed), "wall_s": wall, "train_s": train_s, "bn_s": bn_s,
                "overhead_share": (wall - train_s) / wall if wall else None,
                "bn_share": bn_s / wall if wall else None}


def state_path(out: str) -> str:
    return os.path.join(out, "search", "state.json")


def read_resume_state(out: str) -> dict:
    """The saved search of ``out``, checked for shape; its config as a :class:`~prunekit.config.SearchConfig`."""
    path = state_path(out)
    if not os.path.isfile(path):
        raise PrunekitError(f"{out} has no search to resume (no search/state.json)")
    state = read_json(path, "search state")
    with user_input(f"{path} is damaged (delete the run folder and start again)"):
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        Controller.from_state(state["controller"])
        saved = dict(state["config"])
        saved.pop("extra", None)  # a field runs written before the typed configs carried
        try:  # flat (older runs) or nested, checked like a new config
            state["config"] = PruneConfig(**saved)
        except PrunekitError as e:
            raise ValueError(str(e)) from None
        if not isinstance(state["config"], SearchConfig):
            raise TypeError("not a search configuration")
        missing = {"params", "macs", "val_accuracy", "scales"} - set(state["dense"])
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    return state


def interrupted_message(out: str, rank: int = 0) -> str:
    """What a Ctrl-C left behind: finished rounds can be resumed; a folder without one is removed."""
    path = state_path(out)
    if os.path.isfile(path):
        try:
            done = len(read_json(path)["controller"]["rounds"]) - 1
        except (PrunekitError, KeyError, TypeError):
            done = None
        rounds = f"{done} finished pruning round(s)" if done is not None else "its finished rounds"
        return (f"interrupted; {out} keeps {rounds} and their checkpoints. "
                f"Continue with: prunekit prune --resume {out}")
    if rank == 0 and os.path.isdir(out):
        shutil.rmtree(out, ignore_errors=True)
    return f"interrupted before the first round was saved; nothing was kept ({out} removed)"
