"""``prunekit`` command line: a thin click layer that builds configs and calls the Python API.

Heavy libraries (torch, onnx) are imported inside the commands so that ``--help`` is instant.
Every user mistake ends as one ``error:`` line on stderr and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .config import ALLOCATIONS, DISTILL, KNAPSACK_VALUES
from .errors import PrunekitError


_OUTPUT = {"format": "text"}  # --log-format of the verb being run: text, or one JSON object per line


def _say(message="", err: bool = False, event: str | None = None, **fields) -> None:
    """One line (or block) of output. Under ``--log-format json`` every line prunekit writes, on stdout and
    stderr, is one JSON object: ``{"event": …, "message": …, **fields}``."""
    if _OUTPUT["format"] != "json":
        click.echo(message, err=err)
        return
    text = str(message)
    if event is None:
        event = "error" if text.startswith("error: ") else "warning" if text.startswith("warning: ") else (
            "log" if err else "output")
    click.echo(json.dumps({"event": event, "message": text, **fields}, default=float), err=err)


def _say_json(obj: dict, event: str = "result") -> None:
    """A --json result: indented for a person, one line (an ``event`` object) under --log-format json."""
    if _OUTPUT["format"] == "json":
        click.echo(json.dumps({"event": event, **obj}, default=float))
    else:
        click.echo(json.dumps(obj, indent=2, default=float))


def _set_format(ctx, param, value):
    """Callback of every verb's --log-format: route prunekit's log and the verb's own output alike."""
    _OUTPUT["format"] = value or "text"
    if value == "json":
        from .progress import configure

        configure("json")
        _capture_warnings()
    return value


def _capture_warnings() -> None:
    """Python warnings (torch, onnx) as JSON lines on stderr instead of free text."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        _say(f"{category.__name__}: {message}", err=True, event="warning", file=filename, line=lineno)
    warnings.showwarning = show


def _format_from_args(args) -> None:
    """``--log-format json`` seen before click parses (so its own usage errors come out as JSON too)."""
    args = list(args or [])
    for i, a in enumerate(args):
        if a == "--log-format=json" or (a == "--log-format" and i + 1 < len(args) and args[i + 1] == "json"):
            _OUTPUT["format"] = "json"


def log_format_option(f):
    return click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                        callback=_set_format, is_eager=True, expose_value=False,
                        help="json: every line on stdout and stderr is one JSON object")(f)


def _usage_error(e: click.UsageError) -> None:
    verb = e.ctx.command_path if e.ctx is not None else "prunekit"
    _say(f"error: {e.format_message()} (see: {verb} --help)", err=True)


class _Group(click.Group):
    """Turns every user-facing failure into one ``error:`` line and an exit code: PrunekitError (its own code),
    click's usage errors (2, without the Usage block), Ctrl-C (130, saying what was kept)."""

    def make_context(self, info_name, args, parent=None, **extra):
        _OUTPUT["format"] = "text"
        _format_from_args(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            _usage_error(e)
            raise click.exceptions.Exit(2) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            _usage_error(e)
            ctx.exit(2)
        except PrunekitError as e:
            _say(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            _say("interrupted", err=True)
            ctx.exit(130)


def _logger(quiet: bool, fmt: str | None = None):
    """Route prunekit's log (``logging.getLogger("prunekit")``) to stderr; returns the message function."""
    from .progress import configure, info

    configure(fmt or _OUTPUT["format"], quiet)
    return info


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prunekit")
def main():
    """Prune a trained CNN into a physically smaller one, export it to ONNX and prove nothing broke.

    \b
    Example:
      prunekit prune resnet56 --weights resnet56-cifar10jpeg.pt --data cifar10 \\
          --target flops=0.5 --schedule oneshot --out runs/r56
      prunekit export runs/r56 --out r56.onnx
    """


MODEL_HELP = ("built-in name (resnet20…resnet110, vgg16_bn, mobilenet_v2), torchvision:NAME, "
              "path/file.py:factory, or a saved module path.pt (needs --trust-pickle)")


def _d(name: str):
    """A prune option's default: its config field's (:func:`prunekit.config.option_default`, one place for each)."""
    from .config import option_default

    return option_default(name)


TRUST_CODE_HELP = "allow a run folder whose model is a file.py:factory to import and run that file"


def _model_options(f):
    f = click.option("--trust-pickle", is_flag=True,
                     help="allow unpickling a saved module (runs code from the file)")(f)
    f = click.option("--num-classes", type=int, default=None, help="classifier outputs (default: the model's own)")(f)
    f = click.option("--input-size", default=None, help="C,H,W (default: the model's own, 3,224,224 otherwise)")(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="state-dict file (loaded with weights_only=True)")(f)
    return f


@main.command()
@log_format_option
@click.argument("model")
@_model_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def inspect(model, weights, input_size, num_classes, trust_pickle, as_json):
    """Layers, channels, params, MACs and prunable channel groups of MODEL.

    \b
    MODEL: built-in name, torchvision:NAME, path/file.py:factory or path.pt.
    Example:
      prunekit inspect resnet20 --weights ../shared/weights/resnet20-cifar10jpeg.pt
      prunekit inspect torchvision:mobilenet_v2 --json
    """
    from .graph import build_graph, find_groups
    from .metrics import count_model
    from .models import resolve_model
    from .inputs import check_input_size

    m, spec = resolve_model(model, weights=weights, input_size=input_size, num_classes=num_classes,
                            trust_pickle=trust_pickle)
    check_input_size(m, spec.input_size)
    count = count_model(m, spec.input_size)
    groups = find_groups(m, build_graph(m, spec.input_size), spec.classifier)
    info = {"model": spec.to_dict(), **count.to_dict(),
            "groups": [{"root": g.root, "channels": g.channels, "prunable": g.prunable, "frozen": g.reason,
                        "members": [f"{mm.module}:{mm.kind}" for mm in g.members]} for g in groups]}
    if as_json:
        _say_json(info)
        return
    _say(f"{model}  input {','.join(map(str, spec.input_size))}  classifier {spec.classifier}")
    _say(f"params {count.params:,}   MACs {count.macs:,}   (FLOPs = 2 × MACs = {count.flops:,})")
    _say(f"\n{'layer':<40} {'type':<7} {'in':>6} {'out':>6} {'params':>12} {'MACs':>15}")
    for layer in count.layers:
        _say(f"{layer.name:<40} {layer.type:<7} {layer.in_channels:>6} {layer.out_channels:>6} "
                   f"{layer.params:>12,} {layer.macs:>15,}")
    n_prunable = sum(g.prunable for g in groups)
    _say(f"\n{len(groups)} channel groups, {n_prunable} prunable")
    for g in groups:
        state = "prunable" if g.prunable else f"frozen: {g.reason or 'a single channel'}"
        _say(f"  {g.root:<38} {g.channels:>5} ch  {len(g.members):>3} members  {state}")


@main.command()
@click.argument("model", required=False)
@_model_options
@click.option("--data", help="cifar10, random, an ImageFolder root (train/, test/) or a .tar.gz of one")
@click.option("--target", help="params=X | flops=X (fraction to remove), acc=X (max loss, points), latency=MS, "
                               "speedup=X (X times faster than dense on --runtime at the largest --speed-batches)")
@click.option("--schedule", type=click.Choice(["adaptive", "fixed", "oneshot"]), default=_d("schedule"),
              show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="run folder to create")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="continue the interrupted search in this run folder")
@click.option("--epochs-per-round", type=float, default=_d("epochs_per_round"), show_default=True,
              help="retraining per round")
@click.option("--train-fraction", type=float, default=_d("train_fraction"), show_default=True,
              help="share of the training split used per round")
@click.option("--max-rounds", type=int, default=None,
              help=f"round budget of the search [default: {_d('max_rounds')}]")
@click.option("--time-limit", default=None, help="budget for the whole search, e.g. 2h, 45m")
@click.option("--lam", type=float, default=_d("lam"), show_default=True, help="threshold step λ")
@click.option("--rate", type=float, default=_d("rate"), show_default=True,
              help="--schedule fixed: share removed per round")
@click.option("--step-mode", type=click.Choice(["size", "threshold"]), default=_d("step_mode"), show_default=True,
              help="adaptive: each round removes a share of the remaining size (size) or raises T by λ (threshold)")
@click.option("--max-step", type=float, default=_d("max_step"), show_default=True,
              help="size steps: largest share of the remaining params/MACs one round removes")
@click.option("--threshold-scale", type=click.Choice(["total", "per-layer"]), default=_d("threshold_scale"),
              show_default=True,
              help="Algorithm 3's group cost: the whole group's (total) or per member layer")
@click.option("--allocate", type=click.Choice(list(ALLOCATIONS)), default=_d("allocate"), show_default=True,
              help="how each group's kept width is chosen: threshold (Algorithm 3, rounded to --round-to) or "
                   "knapsack (least score lost for the target's cost, on the --round-to grid)")
@click.option("--knapsack-value", type=click.Choice(list(KNAPSACK_VALUES)), default=_d("knapsack_value"),
              show_default=True, help="knapsack: a channel's value is its score × the layers its group touches "
                                      "(layers) or its score alone")
@click.option("--distill", type=click.Choice(list(DISTILL)), default=_d("distill"), show_default=True,
              help="distil every retraining from the dense model (auto: whenever there is labelled data)")
@click.option("--distill-temperature", type=float, default=_d("distill_temperature"), show_default=True)
@click.option("--distill-alpha", type=float, default=_d("distill_alpha"), show_default=True,
              help="weight of the teacher's soft targets (1 − alpha: the labels)")
@click.option("--bn-images", type=int, default=_d("bn_images"), show_default=True,
              help="re-estimate BatchNorm statistics on N training images after every surgery (0: off)")
@click.option("--group-cap", type=float, default=_d("group_cap"), show_default=True,
              help="largest share of one channel group a single round (or one-shot plan) removes")
@click.option("--budget-epochs", type=float, default=_d("budget_epochs"),
              help="total retraining of the search: rounds + final fine-tune (sets --epochs-per-round)")
@click.option("--final-epochs", type=float, default=_d("final_epochs"),
              help="fine-tune the delivered model this long [default: half of --budget-epochs, else 0]")
@click.option("--rewind", type=click.Choice(["auto", "lr", "weights"]), default=_d("rewind"), show_default=True,
              help="lr: learning-rate rewinding; weights: needs --rewind-checkpoint")
@click.option("--rewind-checkpoint", type=click.Path(dir_okay=False), default=_d("rewind_checkpoint"),
              help="early-training weights for weight rewinding")
@click.option("--train-lr", type=float, default=_d("train_lr"),
              show_default=True, help="peak lr of the retraining schedule")
@click.option("--minimize", type=click.Choice(["params", "flops"]), default=_d("minimize"), show_default=True,
              help="acc targets: what to minimise")
@click.option("--val-images", type=int, default=_d("val_images"),
              help="search: validation images each round is measured on, spread over the split (default: all; "
                   "fewer make rounds cheaper and accuracy readings noisier)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=_d("log_format"), show_default=True,
              callback=_set_format, is_eager=True, help="json: every line on stdout and stderr is one JSON object")
@click.option("--criterion", default=_d("criterion"), show_default=True,
              help="attention-mean | attention-max | attention-sum | l1 | l2 | random")
@click.option("--p", "p", type=float, default=_d("p"), show_default=True, help="power of |a| for attention criteria")
@click.option("--calib-images", type=int, default=_d("calib_images"),
              show_default=True, help="calibration images for scores")
@click.option("--finetune-epochs", type=float, default=_d("finetune_epochs"),
              show_default=True, help="fine-tune after pruning")
@click.option("--lr", type=float, default=_d("lr"), show_default=True, help="fine-tuning learning rate")
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True)
@click.option("--seed", type=int, default=_d("seed"), show_default=True)
@click.option("--round-to", default=_d("round_to"), show_default=True,
              help="every pruned group keeps a multiple of N channels (auto: the runtime's; 1: no alignment)")
@click.option("--runtime", type=click.Choice(["onnxruntime-cpu", "onnxruntime-cpu-int8", "cuda"]),
              default=_d("runtime"),
              show_default=True, help="where the model ships: picks --round-to auto and the final speed check")
@click.option("--cost", type=click.Choice(["auto", "params", "flops", "latency"]), default=_d("cost"),
              show_default=True,
              help="what Algorithm 3 scales each group's threshold by (auto: the target's measure; latency: "
                   "a per-layer latency table measured on --runtime)")
@click.option("--device", default=_d("device"), show_default=True,
              help="scores, retraining and evaluation: auto (CUDA when available), cpu, cuda, cuda:N")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default=_d("amp"), show_default=True,
              help="mixed precision for training on CUDA (auto: bf16); the CPU trains in fp32")
@click.option("--data-mode", type=click.Choice(["auto", "memory", "stream"]), default=_d("data_mode"),
              show_default=True,
              help="decode the data into memory, or stream an ImageFolder from disk (auto: by size)")
@click.option("--workers", type=int, default=_d("workers"),
              help="DataLoader workers for streamed data [default: min(4, cores-1)]")
@click.option("--latency-threads", type=int, default=_d("latency_threads"), show_default=True,
              help="intra-op threads for latency targets, the latency table and the final speed check")
@click.option("--speed-batches", default=",".join(map(str, _d("speed_batches"))), show_default=True,
              help="time dense vs pruned on --runtime at these batch sizes at the end ('none' skips)")
@click.option("--overwrite", is_flag=True, help="replace an existing run folder")
@click.option("--trust-code", is_flag=True, help="--resume: " + TRUST_CODE_HELP)
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
def prune(model, weights, input_size, num_classes, trust_pickle, data, target, schedule, out, resume_dir,
          epochs_per_round, train_fraction, max_rounds, time_limit, lam, rate, step_mode, max_step, threshold_scale,
          allocate, knapsack_value, distill, distill_temperature, distill_alpha, bn_images, group_cap, budget_epochs,
          final_epochs, rewind, rewind_checkpoint, train_lr, minimize, val_images,
          log_format, criterion, p, calib_images, finetune_epochs, lr, batch_size, seed, round_to, runtime,
          device, amp, data_mode, workers, cost, latency_threads, speed_batches, overwrite, trust_code, quiet):
    """Prune MODEL to a target; write RUN_DIR/pruned.pt, run.json (and for a search rounds.jsonl, model.onnx).

    \b
    Examples:
      # adaptive search on the shared ResNet-20: half the FLOPs, small budget
      PRUNEKIT_DATA=../shared/data prunekit prune resnet20 \\
          --weights ../shared/weights/resnet20-cifar10jpeg.pt --data cifar10 --target flops=0.5 \\
          --epochs-per-round 0.2 --train-fraction 0.5 --max-rounds 12 --out runs/r20-f50
      # one-shot, half the parameters, one fine-tune epoch
      PRUNEKIT_DATA=../shared/data prunekit prune resnet56 \\
          --weights ../shared/weights/resnet56-cifar10jpeg.pt --data cifar10 \\
          --target params=0.5 --schedule oneshot --finetune-epochs 1 --out runs/r56-p50
      # continue an interrupted search
      prunekit prune --resume runs/r20-f50
    """
    from .models import parse_input_size
    from .config import PruneConfig
    from .pipeline import prune as run_prune

    _logger(quiet, log_format)
    _init_distributed()
    if resume_dir:
        from .search import resume_search

        run = resume_search(resume_dir, max_rounds=max_rounds, time_limit=time_limit, log_format=log_format,
                            trust_pickle=trust_pickle, trust_code=trust_code)
    else:
        missing = [n for n, v in (("MODEL", model), ("--data", data), ("--target", target), ("--out", out)) if not v]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or use --resume RUN_DIR)")
        cfg = PruneConfig(model=model, data=data, target=target, out=out, schedule=schedule, weights=weights,
                          criterion=criterion, p=p, calib_images=calib_images, finetune_epochs=finetune_epochs, lr=lr,
                          batch_size=batch_size, input_size=parse_input_size(input_size), num_classes=num_classes,
                          trust_pickle=trust_pickle, seed=seed, overwrite=overwrite,
                          epochs_per_round=epochs_per_round, train_fraction=train_fraction,
                          max_rounds=_d("max_rounds") if max_rounds is None else max_rounds,
                          time_limit=time_limit, lam=lam, rate=rate, rewind=rewind, step_mode=step_mode,
                          max_step=max_step, threshold_scale=threshold_scale, group_cap=group_cap,
                          allocate=allocate, knapsack_value=knapsack_value, distill=distill,
                          distill_temperature=distill_temperature, distill_alpha=distill_alpha, bn_images=bn_images,
                          budget_epochs=budget_epochs, final_epochs=final_epochs,
                          rewind_checkpoint=rewind_checkpoint, train_lr=train_lr, minimize=minimize,
                          val_images=val_images,
                          log_format=log_format, round_to=round_to, runtime=runtime, cost=cost, device=device,
                          amp=amp, data_mode=data_mode, workers=workers,
                          latency_threads=latency_threads,
                          speed_batches=() if speed_batches.strip().lower() == "none" else _parse_batches(
                              speed_batches, "--speed-batches"))
        run = run_prune(cfg)
    out = out or resume_dir
    acc = run["accuracy"]
    acc_text = "" if not acc else (f"; test accuracy {acc['dense']:.2f}% → {acc['pruned']:.2f}%"
                                   + (f" → {acc['pruned_finetuned']:.2f}% after fine-tuning"
                                      if "pruned_finetuned" in acc else ""))
    from .bench import speed_summary

    lines = []
    if run.get("search"):
        sr = run["search"]
        lines.append(f"{out}: search {sr['schedule']}, {sr['rounds']} rounds, chose round {sr['chosen_round']} "
                     f"({sr['stopped']}), {sr['wall_s'] / 60:.1f} min")
    lines.append(f"{out}: params -{run['reduction']['params']:.1%}, MACs -{run['reduction']['macs']:.1%}"
                 f" ({run['dense']['params']:,} → {run['pruned']['params']:,} params){acc_text}")
    if speed_summary(run.get("speed")):
        lines.append(f"{out}: {speed_summary(run.get('speed'))}")
    if _OUTPUT["format"] == "json":  # one object with the run's headline figures
        sr = run.get("search") or {}
        _say("; ".join(lines), event="summary", out=out, target=run["target"], reduction=run["reduction"],
             params={"dense": run["dense"]["params"], "pruned": run["pruned"]["params"]},
             macs={"dense": run["dense"]["macs"], "pruned": run["pruned"]["macs"]}, accuracy=acc or None,
             speedup={str(r["batch"]): r["speedup"] for r in (run.get("speed") or {}).get("batches", [])},
             search={k: sr[k] for k in ("schedule", "rounds", "chosen_round", "stopped", "wall_s")} if sr else None)
        return
    for line in lines:
        _say(line)


def _init_distributed() -> None:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():  # each rank on the GPU of its LOCAL_RANK, collectives over nccl
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")


def _resolve_export_source(source, weights, input_size, num_classes, trust_pickle, trust_code):
    """(model, spec, check inputs stored in the run or None) for a RUN_DIR, a pruned.pt, a pickled module or a
    model spec. A run folder's model is rebuilt without running code unless the user trusts it."""
    from .models import is_torch_file, resolve_model
    from .rebuild import load, load_spec
    from .storage import load_check_inputs

    if os.path.isdir(source) or (os.path.isfile(source) and is_torch_file(source) and _is_pruned_file(source)):
        stored = load_check_inputs(source) if os.path.isdir(source) else None
        return load(source, trust_pickle=trust_pickle, trust_code=trust_code), load_spec(source), stored
    model, spec = resolve_model(source, weights=weights, input_size=input_size, num_classes=num_classes,
                                trust_pickle=trust_pickle)
    return model, spec, None


def _run_data_spec(source: str) -> str | None:
    """The data spec a run folder was pruned with (run.json), or None."""
    from .files import read_json

    run_json = os.path.join(source, "run.json") if os.path.isdir(source) else ""
    return read_json(run_json, "run record").get("data", {}).get("spec") if os.path.isfile(run_json) else None


def _is_pruned_file(path: str) -> bool:
    from .storage import read_pruned

    try:
        read_pruned(path)
        return True
    except PrunekitError:
        return False


@main.command()
@log_format_option
@click.argument("source")
@_model_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="max |onnxruntime - pytorch| (plus 1e-5 × max|output|)")
@click.option("--data", default=None, help="inputs for the parity check (default: the run's data, else random)")
@click.option("--check-images", type=int, default=16, show_default=True)
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True)
@click.option("--int8", "with_int8", is_flag=True,
              help="also write a calibrated INT8 model beside --out (NAME.int8.onnx; see prunekit quantize)")
@click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP)
@click.option("--quiet", "-q", is_flag=True)
def export(source, weights, input_size, num_classes, trust_pickle, out, atol, data, check_images, exporter,
           with_int8, trust_code, quiet):
    """Export SOURCE (RUN_DIR, pruned.pt, MODEL) to ONNX and check it against PyTorch.

    \b
    Check inputs: --data when given, else the images stored in the run folder, else random inputs.
    Example:
      prunekit export runs/r56-p50 --out r56-p50.onnx
      prunekit export resnet20 --weights ../shared/weights/resnet20-cifar10jpeg.pt --out r20.onnx
    """
    import math

    import torch

    from .data import load_data
    from .export import export_onnx
    from .files import check_writable_location
    from .inputs import sample_inputs

    if check_images <= 0:
        raise PrunekitError("--check-images must be positive")
    if not math.isfinite(atol) or atol < 0:
        raise PrunekitError(f"--atol must be a finite number ≥ 0, got {atol}")
    check_writable_location(out)
    log = _logger(quiet)
    model, spec, stored = _resolve_export_source(source, weights, input_size, num_classes, trust_pickle, trust_code)
    if data and data != "random":
        inputs = sample_inputs(load_data(data, spec.input_size), check_images)
        kind = f"{inputs.shape[0]} images of {data}"
    elif stored is not None and not data:
        inputs = stored[:check_images]
        kind = f"{inputs.shape[0]} images stored in the run folder"
    else:
        inputs = torch.randn(check_images, *spec.input_size, generator=torch.Generator().manual_seed(0))
        kind = f"{check_images} random normal inputs"
    if tuple(inputs.shape[1:]) != tuple(spec.input_size):
        raise PrunekitError(f"the check inputs are {tuple(inputs.shape[1:])} but the model takes {spec.input_size}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        _say(f"warning: creating the folder {parent}", err=True)
    log(f"exporting with the {exporter} exporter; checking on {kind}")
    report = export_onnx(model, inputs, out, atol=atol, exporter=exporter)
    if not quiet:
        _say(report.checklist(), err=True)
    if with_int8:
        from .export import render_checklist

        int8_out = out[:-len(".onnx")] + ".int8.onnx" if out.endswith(".onnx") else out + ".int8.onnx"
        q = _quantize_file(out, int8_out, data or _run_data_spec(source), 256, "minmax", 0, log,
                           check_dir=source if os.path.isdir(source) else None)
        if not quiet:
            _say(render_checklist(q.checks), err=True)
        _say(f"{int8_out}: {q.bytes:,} bytes, INT8 (QDQ), calibrated on {q.calibration_images} images")
    parity = next(c for c in report.checks if c["check"] == "onnxruntime == pytorch")
    _say(f"{out}: {report.bytes:,} bytes, onnxruntime matches PyTorch "
               f"(max abs diff {parity['max_abs_diff']:.2g} on {kind})")
    fp = next((c for c in report.checks if "fast_path" in c), None)
    if fp and fp["warning"]:
        _say(f"warning: {fp['detail']}: those layers run slower than aligned ones "
                   "(prune with --round-to auto)", err=True)


def _parse_batches(text: str, option: str = "--batch-sizes") -> tuple[int, ...]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise PrunekitError(f"{option} must be positive integers like 1,32, got {text!r}")
    return tuple(sizes)


def _bench_sources(source: str, vs: str | None, trust_code: bool = False):
    """(pruned onnx, dense onnx or None, torch models or None) for an ONNX file or a run folder."""
    import torch

    from .export import export_onnx
    from .rebuild import load, load_dense, load_spec
    from .storage import load_check_inputs

    if os.path.isdir(source):
        pruned = load(source, trust_code=trust_code)
        dense = load_dense(source, trust_code=trust_code)
        x = load_check_inputs(source)
        x = x[:4] if x is not None else torch.randn(2, *load_spec(source).input_size)
        paths = {}
        for tag, model in (("pruned", pruned), ("dense", dense)):
            path = os.path.join(source, "model.onnx" if tag == "pruned" else "dense.onnx")
            if not os.path.isfile(path):
                export_onnx(model, x, path)
            paths[tag] = path
        return paths["pruned"], vs or paths["dense"], {"pruned": pruned, "dense": dense}
    if not os.path.isfile(source):
        raise PrunekitError(f"no such ONNX file or run folder: {source}")
    if vs and not os.path.isfile(vs):
        raise PrunekitError(f"no such ONNX file: {vs}")
    return source, vs, None


@main.command()
@log_format_option
@click.argument("source")
@click.option("--vs", default=None, help="dense ONNX model to compare with (a RUN_DIR brings its own)")
@click.option("--batch-sizes", default="1,32", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime / PyTorch intra-op threads")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="onnxruntime execution provider (cuda needs onnxruntime-gpu)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="PyTorch eager timing device: cuda times fp32 and bf16, contiguous and channels_last")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="also time PyTorch eager (run folders only)")
@click.option("--int8", "with_int8", is_flag=True,
              help="also time the INT8 models (RUN_DIR/model.int8.onnx, dense.int8.onnx; beside ONNX files: "
                   "NAME.int8.onnx), all four interleaved")
@click.option("--data", default=None, help="--int8 on a run folder: calibration images for missing int8 files")
@click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP)
@click.option("--json", "as_json", is_flag=True)
def bench(source, vs, batch_sizes, threads, warmup, runs, provider, device, with_torch, with_int8, data, trust_code,
          as_json):
    """Latency of an ONNX model (or a run's pruned vs dense model) in onnxruntime and PyTorch.

    \b
    onnxruntime: fixed intra-op threads, sequential execution, full graph optimisation, warm-up, then timed
    runs; p50/p90/p99/mean in ms and throughput. With a dense model (--vs, or a RUN_DIR) both run in one
    process, interleaved, and the speedup (dense p50 / pruned p50) and its efficiency (speedup / MAC ratio)
    are reported.
    Examples:
      prunekit bench runs/r56-p50 --batch-sizes 1,32
      prunekit bench pruned.onnx --vs dense.onnx --threads 2 --json
      prunekit bench runs/r56-p50 --int8      # dense / pruned × fp32 / int8, four models interleaved
    """
    from .bench import cuda_rows, measure_pair, measure_torch_pair, onnx_info

    if runs <= 0 or warmup < 0 or threads <= 0:
        raise PrunekitError("--runs and --threads must be positive and --warmup ≥ 0")
    sizes = _parse_batches(batch_sizes)
    if provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise PrunekitError("the CUDA execution provider is not available: install onnxruntime-gpu and run "
                                "on a machine with an NVIDIA GPU, or use --provider cpu")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PrunekitError("--device cuda: no CUDA GPU is available to PyTorch on this machine")
        if not os.path.isdir(source):
            raise PrunekitError("--device cuda times PyTorch models: give a run folder (or use --provider cuda "
                                "for onnxruntime on ONNX files)")
    pruned_path, dense_path, torch_models = _bench_sources(source, vs, trust_code)
    info = {"pruned": onnx_info(pruned_path)}
    paths = {"pruned": pruned_path}
    if dense_path:
        info["dense"] = onnx_info(dense_path)
        paths["dense"] = dense_path
        if info["dense"]["input_size"] != info["pruned"]["input_size"]:
            raise PrunekitError(f"the models take different inputs: {info['dense']['input_size']} vs "
                                f"{info['pruned']['input_size']}")
    if with_int8:
        if not dense_path:
            raise PrunekitError("--int8 compares dense and pruned: give --vs DENSE.onnx or a run folder")
        for k, p in _int8_paths(source, paths, data, trust_code).items():
            paths[f"{k}-int8"] = p
            info[f"{k}-int8"] = onnx_info(p)
    if provider == "cpu":
        from .fastpath import fast_path

        for k, p in paths.items():
            info[k]["fast_path"] = fast_path(p).to_dict()
    size = info["pruned"]["input_size"]
    result = {"source": source, "vs": dense_path, "threads": threads, "provider": provider, "warmup": warmup,
              "runs": runs, "models": {k: {"path": p, **info[k]} for k, p in paths.items()}, "batches": []}
    for b in sizes:
        ort_stats = measure_pair(paths, size, b, threads, warmup, runs, provider)
        row = {"batch": b, "onnxruntime": {k: v.to_dict() for k, v in ort_stats.items()}}
        if dense_path:
            speedup = ort_stats["dense"].p50_ms / ort_stats["pruned"].p50_ms
            mac_ratio = info["dense"]["macs"] / max(info["pruned"]["macs"], 1)
            row["speedup"] = speedup
            row["mac_ratio"] = mac_ratio
            row["speedup_efficiency"] = speedup / mac_ratio
        if with_int8:
            d8, p8 = ort_stats["dense-int8"].p50_ms, ort_stats["pruned-int8"].p50_ms
            row["int8"] = {"dense_int8_vs_dense": ort_stats["dense"].p50_ms / d8,
                           "pruned_int8_vs_dense": ort_stats["dense"].p50_ms / p8,
                           "pruned_int8_vs_dense_int8": d8 / p8,
                           "efficiency_over_int8": d8 / p8 / row["mac_ratio"]}
        if torch_models and with_torch and device == "cpu":
            t_stats = measure_torch_pair(torch_models, size, b, threads, runs=max(5, runs // 3))
            row["pytorch"] = {k: v.to_dict() for k, v in t_stats.items()}
            row["pytorch_speedup"] = t_stats["dense"].p50_ms / t_stats["pruned"].p50_ms
        if torch_models and device == "cuda":
            row["pytorch_cuda"] = cuda_rows(torch_models, size, b, warmup, runs)
        result["batches"].append(row)
    if as_json:
        _say_json(result)
        return
    for k, m in result["models"].items():
        _say(f"{k:<11} {m['path']}  MACs {m['macs']:,}  initializer elements {m['params']:,}")
        if "fast_path" in m:
            from .fastpath import FastPath

            _say(f"        {FastPath(**{f: v for f, v in m['fast_path'].items() if f != 'on_path'}).summary()}")
    _say(f"onnxruntime {provider}, {threads} thread(s), {warmup} warm-up + {runs} timed runs per model"
               + (", interleaved" if dense_path else ""))
    for row in result["batches"]:
        for runtime in ("onnxruntime", "pytorch"):
            for k, st in row.get(runtime, {}).items():
                _say(f"  batch {row['batch']:<4} {runtime:<11} {k:<11} p50 {st['p50_ms']:9.3f} ms  "
                           f"p90 {st['p90_ms']:9.3f}  p99 {st['p99_ms']:9.3f}  mean {st['mean_ms']:9.3f} "
                           f"± {st['std_ms']:.3f}  ({st['runs']} runs)  {st['throughput_ips']:10.1f} img/s")
        if "int8" in row:
            i8 = row["int8"]
            _say(f"  batch {row['batch']:<4} int8: dense int8 {_speedup_words(i8['dense_int8_vs_dense'])} "
                       f"vs dense fp32; pruned int8 {_speedup_words(i8['pruned_int8_vs_dense'])} vs dense fp32 and "
                       f"{_speedup_words(i8['pruned_int8_vs_dense_int8'])} vs dense int8 (efficiency "
                       f"{i8['efficiency_over_int8']:.0%})")
        for c in row.get("pytorch_cuda", []):
            _say(f"  batch {row['batch']:<4} pytorch cuda {c['dtype']:<4} {c['layout']:<13} dense p50 "
                       f"{c['dense_ms']:8.3f} ms  pruned {c['pruned_ms']:8.3f} ms  speedup "
                       f"{_speedup_words(c['speedup'])}")
        if "speedup" in row:
            _say(f"  batch {row['batch']:<4} speedup {_speedup_words(row['speedup'])} (onnxruntime p50), MAC "
                       f"ratio {row['mac_ratio']:.2f}×, efficiency {row['speedup_efficiency']:.0%}"
                       + (f"; PyTorch speedup {_speedup_words(row['pytorch_speedup'])}"
                          if "pytorch_speedup" in row else ""))


def _int8_paths(source: str, paths: dict, data: str | None, trust_code: bool) -> dict:
    """INT8 files for the dense and pruned models: beside the ONNX files (NAME.int8.onnx); for a run folder,
    quantized on demand (calibration: --data, else the run's data, else its stored check images)."""
    out = {}
    for k, p in (("dense", paths["dense"]), ("pruned", paths["pruned"])):
        q = p[:-len(".onnx")] + ".int8.onnx" if p.endswith(".onnx") else p + ".int8.onnx"
        if not os.path.isfile(q):
            if not os.path.isdir(source):
                raise PrunekitError(f"no INT8 model beside {p}: run prunekit quantize {p} --out {q} --data …")
            _quantize_for_bench(source, p, q, data)
        out[k] = q
    return out


def _quantize_for_bench(run_dir: str, fp32: str, out: str, data: str | None) -> None:
    from .files import read_json
    from .quantize import quantize_onnx
    from .storage import load_check_inputs

    spec = data or read_json(os.path.join(run_dir, "run.json"), "run record").get("data", {}).get("spec")
    stored = load_check_inputs(run_dir)
    if spec and spec != "random":
        from .bench import onnx_info
        from .data import load_data

        bundle = load_data(spec, onnx_info(fp32)["input_size"])
        calib = bundle.tensor(bundle.calibration(256)).numpy()
    elif stored is not None:
        _say(f"warning: calibrating {out} on the run folder's {len(stored)} stored images (latency only)",
                   err=True)
        calib = stored.numpy()
    else:
        raise PrunekitError("--int8 needs calibration images: give --data")
    check = stored.numpy() if stored is not None else calib[:16]
    quantize_onnx(fp32, out, calib, check)


def _speedup_words(speedup: float) -> str:
    """``1.42×``, or ``0.94× — SLOWER than dense`` below 1: a number alone hides that the pruning lost time."""
    return f"{speedup:.2f}×" if speedup >= 1 else f"{speedup:.2f}× — SLOWER than dense"


@main.command()
@log_format_option
@click.argument("model")
@click.option("--max-params", type=float, default=None, help="budget: ONNX initializer elements")
@click.option("--max-macs", type=float, default=None, help="budget: MACs at batch 1 (Conv/Gemm/MatMul)")
@click.option("--max-bytes", type=float, default=None, help="budget: file size")
@click.option("--max-latency-ms", type=float, default=None, help="absolute p50 at batch 1 (noisy on shared CI)")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="JSON with params/macs/bytes")
@click.option("--tolerance", default="0%", show_default=True, help="allowed growth over the baseline, e.g. 2%")
@click.option("--write-baseline", type=click.Path(dir_okay=False), default=None,
              help="write this model's figures as a baseline (and exit 0)")
@click.option("--vs", default=None, help="reference ONNX model for a relative latency gate")
@click.option("--min-speedup", type=float, default=None, help="with --vs: required p50 speedup over it")
@click.option("--require-fast-path", is_flag=True,
              help="fail when a Conv runs off onnxruntime's NCHWc kernels (with --vs: more than in that model)")
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None,
              help="also write a Markdown summary (for a CI job to post)")
def check(model, max_params, max_macs, max_bytes, max_latency_ms, baseline, tolerance, write_baseline, vs,
          min_speedup, require_fast_path, runs, threads, as_json, md_path):
    """CI gate: fail (exit 1) when MODEL.onnx grows past its budget or baseline, or is not fast enough.

    \b
    Exit codes: 0 within budget, 1 over budget, 2 usage error (missing or corrupt file, bad baseline).
    Examples:
      prunekit check model.onnx --write-baseline size-baseline.json
      prunekit check model.onnx --baseline size-baseline.json --tolerance 2%
      prunekit check model.onnx --max-macs 60e6 --vs dense.onnx --min-speedup 1.5 --markdown summary.md
    """
    from . import gate
    from .files import atomic_write_bytes, atomic_write_json, require_finite

    tol = gate.parse_tolerance(tolerance)
    for name, value in (("--max-params", max_params), ("--max-macs", max_macs), ("--max-bytes", max_bytes),
                        ("--max-latency-ms", max_latency_ms), ("--min-speedup", min_speedup)):
        if value is not None and require_finite(name, value) < 0:
            raise PrunekitError(f"{name} must not be negative, got {value}")
    if vs is not None and min_speedup is None and not require_fast_path:
        raise PrunekitError("--vs needs --min-speedup or --require-fast-path")
    if min_speedup is not None and vs is None:
        raise PrunekitError("--min-speedup needs --vs (the model to be faster than)")
    if runs <= 0 or threads <= 0:
        raise PrunekitError("--runs and --threads must be positive")
    actual = gate.figures(model)
    if write_baseline:
        atomic_write_json(write_baseline, {k: actual[k] for k in gate.DETERMINISTIC})
        _say(f"wrote {write_baseline}: params {actual['params']:,}, MACs {actual['macs']:,}, "
                   f"bytes {actual['bytes']:,}")
        return
    ref = gate.read_baseline(baseline) if baseline else None
    if vs and not os.path.isfile(vs):
        raise PrunekitError(f"no such ONNX file: {vs}")
    rows = gate.check_figures(actual, {"params": max_params, "macs": max_macs, "bytes": max_bytes}, ref, tol)
    if max_latency_ms is not None:
        rows.append(gate.check_latency(model, max_latency_ms, runs, threads))
    if require_fast_path:
        rows.append(gate.check_fast_path(model, vs))
    if vs and min_speedup is not None:
        rows.append(gate.check_speedup(model, vs, min_speedup, runs, threads))
    if not rows:
        raise PrunekitError("nothing to check: give a budget (--max-…), --baseline, --require-fast-path, "
                            "or --vs with --min-speedup")
    if md_path:
        atomic_write_bytes(md_path, gate.markdown(model, rows).encode())
    if as_json:
        _say_json(gate.to_json(model, rows, actual))
    else:
        _say(gate.table(rows))
    if not all(r.passed for r in rows):
        click.get_current_context().exit(1)


def _fp32_onnx_of(source: str, trust_code: bool, tmp_dir: str, log) -> tuple[str, str | None]:
    """(fp32 ONNX path, data spec recorded by the run or None) for a run folder or an ONNX file."""
    if os.path.isdir(source):
        data = _run_data_spec(source)
        onnx_path = os.path.join(source, "model.onnx")
        if not os.path.isfile(onnx_path):
            from .export import export_onnx
            from .rebuild import load, load_spec
            from .storage import load_check_inputs

            model = load(source, trust_code=trust_code)
            x = load_check_inputs(source)
            import torch

            x = x[:4] if x is not None else torch.randn(2, *load_spec(source).input_size)
            onnx_path = os.path.join(tmp_dir, "model.onnx")
            log(f"exporting {source}'s pruned model to ONNX first")
            export_onnx(model, x, onnx_path)
        return onnx_path, data
    if not os.path.isfile(source):
        raise PrunekitError(f"no such ONNX file or run folder: {source}")
    return source, None


@main.command()
@log_format_option
@click.argument("source")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="INT8 ONNX file to write")
@click.option("--data", default=None, help="calibration (and test) images: cifar10, an ImageFolder root, a .tar.gz "
                                           "(default: the run's data); random is allowed for latency work only")
@click.option("--calib-images", type=int, default=256, show_default=True, help="calibration images (training split)")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="calibration method")
@click.option("--eval-images", type=int, default=None,
              help="test images for the fp32 vs int8 accuracy (default: the whole test split; 0 skips it)")
@click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP)
@click.option("--quiet", "-q", is_flag=True)
def quantize(source, out, data, calib_images, method, eval_images, trust_code, quiet):
    """Quantize SOURCE (RUN_DIR or MODEL.onnx) to a calibrated INT8 ONNX (onnxruntime static, QDQ).

    \b
    Per-channel int8 weights, uint8 activations, calibrated on training images; the int8 model is compared
    with fp32 on check inputs (top-1 agreement, largest difference: a stated bound) and, with labelled data,
    on the test split (accuracy side by side). With a run folder, run.json records the result.
    Examples:
      PRUNEKIT_DATA=../shared/data prunekit quantize runs/r56-p50 --out runs/r56-p50/model.int8.onnx
      prunekit quantize model.onnx --data ../shared/data/cifar10-jpeg.tar.gz --out model.int8.onnx
    """
    import tempfile

    from .files import check_writable_location

    log = _logger(quiet)
    if calib_images <= 0:
        raise PrunekitError("--calib-images must be positive")
    if eval_images is not None and eval_images < 0:
        raise PrunekitError("--eval-images must not be negative")
    check_writable_location(out)
    with tempfile.TemporaryDirectory(prefix="prunekit-quantize-") as d:
        fp32_path, run_data = _fp32_onnx_of(source, trust_code, d, log)
        report = _quantize_file(fp32_path, out, data or run_data, calib_images, method, eval_images, log,
                                check_dir=source if os.path.isdir(source) else None)
    if os.path.isdir(source):
        from .runrecord import RunRecord

        if os.path.isfile(os.path.join(source, "run.json")):
            record = RunRecord.read(source)
            record.int8 = {**(record.int8 or {}), "pruned": report.to_dict()}
            record.write(source)
    if not quiet:
        from .export import render_checklist

        _say(render_checklist(report.checks), err=True)
    acc = report.accuracy
    acc_text = (f"; test accuracy fp32 {acc['fp32']:.2f}% → int8 {acc['int8']:.2f}% ({acc['images']:,} images)"
                if acc else "")
    _say(f"{out}: {report.bytes:,} bytes (fp32 {report.fp32_bytes:,}), {method} calibration on "
               f"{report.calibration_images} images{acc_text}")


def _quantize_file(fp32_path, out, data, calib_images, method, eval_images, log, check_dir=None):
    """Calibration and check inputs from ``data`` (or the run folder's stored images), then quantize."""
    from .bench import onnx_info
    from .data import load_data
    from .inputs import sample_inputs, spread
    from .quantize import is_quantized, quantize_onnx, read_onnx

    if is_quantized(read_onnx(fp32_path)):
        raise PrunekitError(f"{fp32_path} is already quantized")
    size = onnx_info(fp32_path)["input_size"]
    if not data:
        raise PrunekitError("quantize needs calibration images: give --data (cifar10, an ImageFolder root, a "
                            ".tar.gz, or random for latency work only)")
    if data == "random":
        _say("warning: calibrating on random inputs: the int8 model's accuracy is meaningless "
                   "(fine for latency work)", err=True)
    bundle = load_data(data, size)
    calib = bundle.tensor(bundle.calibration(calib_images)).numpy()
    stored = None
    if check_dir is not None:
        from .storage import load_check_inputs

        stored = load_check_inputs(check_dir)
    check = stored.numpy() if stored is not None else sample_inputs(bundle, 16).numpy()
    test = None
    if bundle.has_labels and bundle.test is not None and eval_images != 0:
        ds = bundle.test if eval_images is None else bundle.test.subset(spread(len(bundle.test), eval_images))
        test = (bundle.tensor(ds).numpy(), ds.labels)
    return quantize_onnx(fp32_path, out, calib, check, method=method, test=test)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir):
    """Write RUN_DIR/report.md with its plots (rounds.png, channels.png); prune does this after every run.

    \b
    Example:
      prunekit report runs/r20-f50
    """
    from .report import write_report

    _say(write_report(run_dir))


@main.command("models")
def list_models_cmd():
    """List the built-in architectures.

    \b
    Example:
      prunekit models
    """
    from .models import list_models
    from .models.registry import get_entry

    for name in list_models():
        e = get_entry(name)
        _say(f"{name:<14} input {','.join(map(str, e.input_size))}  classes {e.num_classes}  "
                   f"{(e.factory.__doc__ or '').strip().splitlines()[0]}")
    _say("torchvision:NAME  any torchvision classification model, e.g. torchvision:resnet50")


if __name__ == "__main__":
    sys.exit(main())
