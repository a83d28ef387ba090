"""``run.json``: the one record type both prune jobs write and ``report``, ``export``, ``quantize`` read.

:class:`RunRecord` names every section; the one-shot job and the search fill the same type (a section
that does not apply to a job is ``null``), :meth:`RunRecord.read` checks what readers rely on and turns a
damaged or foreign file into one clear error. No torch here: reading a record is cheap.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from prunekit.errors import PrunekitError
from prunekit.files import atomic_write_json, read_json

SCHEMA = 1

# what every reader may rely on: (dotted key, type)
REQUIRED = (("model.name", str), ("target.text", str), ("config.schedule", str), ("config.criterion", str),
            ("data.spec", str), ("dense.params", int), ("dense.macs", int), ("pruned.params", int),
            ("pruned.macs", int), ("layers", list))


@dataclass
class RunRecord:
    config: dict  # the job's configuration (prunekit.config.config_dict), schedule included
    model: dict  # the model spec (name, source, input size, classifier…): enough to rebuild it
    data: dict  # spec, name and split sizes
    target: dict  # kind, amount, text, met
    dense: dict  # params, macs (and latency_ms when measured)
    pruned: dict  # the same for the delivered model
    reduction: dict  # params, macs: fractions removed
    layers: list  # per layer: channels, params and MACs before and after
    compute: dict | None = None  # where scores and training ran (device, precision)
    accuracy: dict | None = None  # test split: dense, pruned, pruned_finetuned…
    fidelity: dict | None = None  # agreement with the dense model per output, held-out images: pruned, pruned_bn…
    speed: dict | None = None  # dense vs pruned timed on the deployment runtime
    alignment: dict | None = None  # --round-to: the multiple used and why
    verification: list | None = None  # masked == pruned, reload proof…
    export: dict | None = None  # the ONNX checklist (a search exports its delivered model)
    search: dict | None = None  # a search: rounds, delivered round, stop reason, epochs, round timing
    final_finetune: dict | None = None  # a search: the delivered model's fine-tune
    finetune: dict | None = None  # one-shot: the fine-tune after pruning
    threshold: float | None = None  # one-shot: the global threshold T the target needed
    cost: str | None = None  # one-shot: what Algorithm 3 scaled thresholds by
    latency: dict | None = None  # one-shot latency target: predicted and measured tries
    groups: list | None = None  # one-shot: each coupled group's channels and removals
    depth: dict | None = None  # one-shot: residual branches the plan could drop, how they were valued, dropped
    timings_s: dict | None = None  # one-shot: seconds per step
    recovery: dict | None = None  # BatchNorm re-estimation, distillation, width allocation used
    int8: dict | None = None  # prunekit quantize on the run folder: the int8 model's checks and accuracy
    prunekit_run: int = SCHEMA

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, run, where: str = "run record") -> RunRecord:
        """Check ``run`` (parsed JSON) has what readers rely on; unknown keys of newer versions are ignored."""
        if not isinstance(run, dict):
            raise PrunekitError(f"{where} is not a prunekit run record (not a JSON object)")
        for key, kind in REQUIRED:
            value = run
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise PrunekitError(f"{where} is not a complete prunekit run record: {key} is missing or not a "
                                    f"{kind.__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in run.items() if k in names})

    @classmethod
    def read(cls, run_dir: str) -> RunRecord:
        path = os.path.join(run_dir, "run.json")
        if not os.path.isfile(path):
            raise PrunekitError(f"{run_dir} is not a run folder (no run.json)")
        return cls.from_dict(read_json(path, "run record"), path)

    @staticmethod
    def data_spec(source: str) -> str | None:
        """The data spec the run folder ``source`` was pruned with, or None (not a run folder, no run.json).
        Reads only that key, so a record of another schema still gives it."""
        path = os.path.join(source, "run.json") if os.path.isdir(source) else ""
        if not os.path.isfile(path):
            return None
        data = read_json(path, "run record").get("data")
        return data.get("spec") if isinstance(data, dict) else None

    def write(self, run_dir: str) -> None:
        atomic_write_json(os.path.join(run_dir, "run.json"), self.to_dict())
