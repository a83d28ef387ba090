"""Everything a search's rounds share, prepared once before anything is written: the dense model and its
spec, the data, calibration batches and check images, the device, the alignment, the latency table, the
dense model's figures (``info``), and the measurements every round takes (params / MACs, latency: predicted
each round, measured for the delivered model)."""
from __future__ import annotations

from dataclasses import dataclass

from prunekit.deploy.speed import model_latency_ms
from prunekit.config import SearchConfig, Target, cost_basis, TargetKind
from prunekit.config.choices import parse_distill_loss
from prunekit.compute.distill import loss_kinds
from prunekit.data import DataBundle
from prunekit.compute.ddp import broadcast_value, distributed
from prunekit.compute.device import Compute
from prunekit.errors import PrunekitError
from prunekit.jobs.setup import prepare_job, prunable_groups
from prunekit.data.inputs import sample_images, spread
from prunekit.core.metrics import layer_shapes
from prunekit.deploy.latency_table import LatencyTable, predict_ms, table_for
from prunekit.core.metrics import count_model
from prunekit.models import build_model, load_folded, read_state_dict
from prunekit.progress import info
from prunekit.deploy.runtime import Alignment, resolve_round_to
from prunekit.core.scoring import score_scales
from prunekit.compute.fidelity import fidelity_score
from prunekit.compute.train import evaluate


@dataclass
class SearchContext:
    cfg: SearchConfig
    target: Target
    trust_code: bool
    compute: Compute
    dense: object  # nn.Module
    spec: object  # ModelSpec
    bundle: DataBundle
    calib_batches: list
    check_images: object  # uint8 images, the run folder's check inputs
    verify_inputs: object  # their normalised tensor
    rewind_weights: dict | None
    measure: str  # the size the controller follows: "params" or "macs"
    basis: str  # what Algorithm 3 scales thresholds by
    table: LatencyTable | None
    alignment: Alignment
    info: dict  # dense figures: params, macs, val_accuracy, scales, alignment, latency_ms, latency_table_ms
    rank: int = 0
    latency_batch: int = 1  # the batch latency is measured and tabled at (a speedup= target's speed batch)
    speedup: float | None = None  # a speedup= target: the latency target is the dense latency / this
    evaluator: object = None  # what judges a round, in percent: accuracy, or fidelity to the dense model

    @property
    def val(self):
        """The validation images every round (and the dense model) is measured on: ``--val-images`` of them
        spread over the split, else all of it."""
        val = self.bundle.val
        return val if self.cfg.val_images is None else val.subset(spread(len(val), self.cfg.val_images))

    @property
    def round_to(self) -> int:
        return self.alignment.round_to

    def build_dense(self):
        """A fresh dense model of the run's architecture (random init; weights are loaded by the caller)."""
        return build_model(self.spec, trust_pickle=self.cfg.trust_pickle, trust_code=self.trust_code).eval()

    # ------------------------------------------------------------------------------------------- measures
    def latency(self, model) -> float:
        """Measured p50 latency (ms) at :attr:`latency_batch` on the run's runtime (rank 0 measures, every rank
        agrees)."""
        ms = 0.0
        if self.rank == 0:
            ms = model_latency_ms(model, self.spec.input_size, self.cfg.runtime, self.cfg.latency_threads,
                                  batch=self.latency_batch, runs=self.cfg.latency_runs)
        return broadcast_value(ms)

    def predicted_latency(self, model) -> float:
        """Latency (ms) of ``model`` predicted from the latency table: no export, no timing."""
        table_ms = self.table.total(layer_shapes(model, self.spec.input_size, self.latency_batch).values())
        self.table.save()
        return predict_ms(self.info["latency_ms"], self.info["latency_table_ms"], table_ms)

    def size_of(self, model) -> tuple[float, float, float | None, object]:
        """(size the controller follows, reduction of the targeted measure, predicted latency or None, counts)."""
        c = count_model(model, self.spec.input_size)
        size = c.params if self.measure == "params" else c.macs
        if self.target.kind == TargetKind.latency:
            lat = broadcast_value(self.predicted_latency(model))  # one figure for every rank's controller
            return size, 1 - lat / self.info["latency_ms"], lat, c
        kind = self.measure if self.target.bounds_quality else self.target.kind
        return size, 1 - (c.params if kind == "params" else c.macs) / self.info[kind], None, c


def output_kinds(dense, bundle, cfg: SearchConfig, spec) -> dict[str, str]:
    """What each of the dense model's outputs is (class scores / maps, or other maps), from one batch."""
    import torch

    x, _ = next(bundle.batches(bundle.val.subset(spread(len(bundle.val), 2)), 2))
    with torch.no_grad():
        return loss_kinds(dense.eval()(x), spec.num_classes or bundle.num_classes,
                          parse_distill_loss(cfg.training.distill_loss))


def prepare(cfg: SearchConfig, target: Target, trust_code: bool, resume: dict | None,
            evaluator=evaluate) -> SearchContext:
    """Load and check everything the search needs; raises PrunekitError on bad input, writes nothing."""
    job = prepare_job(cfg, trust_code)
    compute, dense, spec, bundle = job.compute, job.model, job.spec, job.bundle
    if bundle.val is None or not len(bundle.val):
        raise PrunekitError("the search retrains and evaluates every round: it needs real images with a validation "
                            "split (" + ("random pixels have none" if bundle.synthetic else
                                         "labelled, or unlabelled with --target fidelity=POINTS") + ")")
    if target.kind == TargetKind.fidelity:  # rounds judged on agreement with the dense model: labels are not needed
        evaluator = fidelity_score(dense, output_kinds(dense, bundle, cfg, spec))
    elif not bundle.has_labels:
        raise PrunekitError(f"{target.text} is judged on accuracy and these images have no labels: bound the loss "
                            "of agreement with the dense model instead (--target fidelity=POINTS), or prune to a "
                            "size or speed target")
    size = spec.input_size
    check_images = sample_images(bundle, max(min(cfg.verify_images, 32), cfg.check_images))
    rewind = None
    if cfg.rewind_checkpoint and cfg.rewind in ("auto", "weights"):
        rewind = load_folded(spec, read_state_dict(cfg.rewind_checkpoint), cfg.rewind_checkpoint,
                             trust_pickle=cfg.trust_pickle, trust_code=trust_code)
    measure = ("macs" if cfg.minimize == "flops" else "params") if target.bounds_quality else (
        "params" if target.kind == TargetKind.params else "macs")
    basis = cost_basis(cfg.cost, target, cfg.minimize)
    timed = target.kind.timed
    table = table_for(cfg.runtime, cfg.latency_threads, cfg.latency_table) if timed or basis == "latency" else None
    if resume is not None:  # the dense figures and the alignment are the saved run's, whatever the machine
        figures = resume["dense"]
        alignment = Alignment(**figures["alignment"]) if "alignment" in figures else resolve_round_to(
            cfg.round_to, cfg.runtime, getattr(table, "grid", None), cfg.latency_threads)
    else:
        alignment = resolve_round_to(cfg.round_to, cfg.runtime, getattr(table, "grid", None), cfg.latency_threads)
        figures = {}
    ctx = SearchContext(cfg, target, trust_code, compute, dense, spec, bundle,
                        job.calibration_batches(cfg), check_images,
                        bundle.to_tensor(check_images), rewind, measure, basis, table, alignment, figures,
                        distributed()[0], cfg.speed_batch if target.kind == TargetKind.speedup else 1,
                        target.amount if target.kind == TargetKind.speedup else None)
    if resume is None:
        groups = prunable_groups(dense, spec, cfg.model)
        count = count_model(dense, size)
        info("measuring the dense model on the validation split", "setup")
        figures.update({"params": count.params, "macs": count.macs,
                     "val_accuracy": evaluator(dense, bundle, ctx.val, compute=compute),
                     "scales": score_scales(dense, groups, cfg.criterion, cfg.p, ctx.calib_batches, compute),
                     "alignment": alignment.to_dict()})
        figures["latency_ms"] = ctx.latency(dense) if timed else None
        if table is not None:
            figures["latency_table_ms"] = broadcast_value(  # rank 0's: every rank predicts from the same sums
                table.total(layer_shapes(dense, size, ctx.latency_batch).values()))
            table.save()
    ctx.evaluator = evaluator
    if ctx.speedup is not None:  # X times faster = the dense latency at the speed batch / X
        ctx.target = Target("latency", figures["latency_ms"] / ctx.speedup, target.text)
        info(f"{target.text}: dense {figures['latency_ms']:.2f} ms at batch {ctx.latency_batch} on {cfg.runtime}, "
             f"so the search aims at {ctx.target.amount:.2f} ms", "setup")
    return ctx
