"""``prunekit prune``: every option of both prune jobs, one config, :func:`prunekit.prune`, one summary."""
from __future__ import annotations

import click

from prunekit.cli.app import TRUST_CODE_HELP, choice, main, model_options, option_default, parse_batches
from prunekit.cli.output import json_output, logger, say, set_format


@main.command()
@click.argument("model", required=False)
@model_options
@click.option("--data", help="cifar10, random, an ImageFolder root (train/, test/) or a .tar.gz of one")
@click.option("--target", help="params=X | flops=X (fraction to remove), acc=X (max loss, points), fidelity=X "
                               "(max loss of agreement with the dense model, points; no labels needed), latency=MS, "
                               "speedup=X (X times faster than dense on --runtime at the largest --speed-batches)")
@click.option("--schedule", type=choice("schedule"), default=option_default("schedule"),
              show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="run folder to create")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="continue the interrupted search in this run folder")
@click.option("--epochs-per-round", type=float, default=option_default("epochs_per_round"), show_default=True,
              help="retraining per round")
@click.option("--train-fraction", type=float, default=option_default("train_fraction"), show_default=True,
              help="share of the training split used per round")
@click.option("--max-rounds", type=int, default=None,
              help=f"round budget of the search [default: {option_default('max_rounds')}]")
@click.option("--time-limit", default=None, help="budget for the whole search, e.g. 2h, 45m")
@click.option("--lam", type=float, default=option_default("lam"), show_default=True, help="threshold step λ")
@click.option("--rate", type=float, default=option_default("rate"), show_default=True,
              help="--schedule fixed: share removed per round")
@click.option("--step-mode", type=choice("step_mode"), default=option_default("step_mode"), show_default=True,
              help="adaptive: each round removes a share of the remaining size (size) or raises T by λ (threshold)")
@click.option("--max-step", type=float, default=option_default("max_step"), show_default=True,
              help="size steps: largest share of the remaining params/MACs one round removes")
@click.option("--threshold-scale", type=choice("threshold_scale"), default=option_default("threshold_scale"),
              show_default=True,
              help="Algorithm 3's group cost: the whole group's (total) or per member layer")
@click.option("--allocate", type=choice("allocate"), default=option_default("allocate"), show_default=True,
              help="how each group's kept width is chosen: threshold (Algorithm 3, rounded to --round-to) or "
                   "knapsack (least score lost for the target's cost, on the --round-to grid)")
@click.option("--knapsack-value", type=choice("knapsack_value"), default=option_default("knapsack_value"),
              show_default=True, help="knapsack: a channel's value is its score × the layers its group touches "
                                      "(layers) or its score alone")
@click.option("--depth", type=choice("depth"), default=option_default("depth"), show_default=True,
              help="one-shot: the knapsack may drop whole residual branches (auto: with a latency / speedup target)")
@click.option("--branch-criterion", type=choice("branch_criterion"), default=option_default("branch_criterion"),
              show_default=True, help="how a droppable branch is valued: the output change without it (ablation), "
                                      "its share of the block's output (share), or its channels' scores (channels)")
@click.option("--distill", type=choice("distill"), default=option_default("distill"), show_default=True,
              help="distil every retraining from the dense model (auto: whenever there is labelled data)")
@click.option("--labels", type=choice("labels"), default=option_default("labels"), show_default=True,
              help="ignore: nothing trains on the training labels (recovery by distillation from the dense model "
                   "alone; test accuracy still reported); a folder of images without class folders has none")
@click.option("--distill-loss", default=option_default("distill_loss"), show_default=True,
              help="per output: auto (KL for class scores and class maps, normalised MSE for other maps), kl, mse, "
                   "smooth-l1, or per name: out=kl,boxes=smooth-l1")
@click.option("--distill-temperature", type=float, default=option_default("distill_temperature"), show_default=True)
@click.option("--distill-alpha", type=float, default=option_default("distill_alpha"), show_default=True,
              help="weight of the teacher's soft targets (1 − alpha: the labels)")
@click.option("--bn-images", type=int, default=option_default("bn_images"), show_default=True,
              help="re-estimate BatchNorm statistics on N training images after every surgery (0: off)")
@click.option("--group-cap", type=float, default=option_default("group_cap"), show_default=True,
              help="largest share of one channel group a single round (or one-shot plan) removes")
@click.option("--budget-epochs", type=float, default=option_default("budget_epochs"),
              help="total retraining of the search: rounds + final fine-tune (sets --epochs-per-round)")
@click.option("--final-epochs", type=float, default=option_default("final_epochs"),
              help="fine-tune the delivered model this long [default: half of --budget-epochs, else 0]")
@click.option("--rewind", type=choice("rewind"), default=option_default("rewind"), show_default=True,
              help="lr: learning-rate rewinding; weights: needs --rewind-checkpoint")
@click.option("--rewind-checkpoint", type=click.Path(dir_okay=False), default=option_default("rewind_checkpoint"),
              help="early-training weights for weight rewinding")
@click.option("--train-lr", type=float, default=option_default("train_lr"),
              show_default=True, help="peak lr of the retraining schedule")
@click.option("--minimize", type=choice("minimize"), default=option_default("minimize"), show_default=True,
              help="acc targets: what to minimise")
@click.option("--val-images", type=int, default=option_default("val_images"),
              help="search: validation images each round is measured on, spread over the split (default: all; "
                   "fewer make rounds cheaper and accuracy readings noisier)")
@click.option("--log-format", type=choice("log_format"), default=option_default("log_format"), show_default=True,
              callback=set_format, is_eager=True, help="json: every line on stdout and stderr is one JSON object")
@click.option("--criterion", type=choice("criterion"), default=option_default("criterion"), show_default=True,
              help="filter importance: attention-* score post-activation outputs (METHOD.md §1), l1/l2 weight "
                   "norms, group-norm Torch-Pruning's group magnitude, random a baseline")
@click.option("--p", "p", type=float, default=option_default("p"), show_default=True,
              help="power of |a| for attention criteria")
@click.option("--calib-images", type=int, default=option_default("calib_images"),
              show_default=True, help="calibration images for scores")
@click.option("--finetune-epochs", type=float, default=option_default("finetune_epochs"),
              show_default=True, help="fine-tune after pruning")
@click.option("--finetune-minutes", type=float, default=option_default("finetune_minutes"), show_default=True,
              help="fine-tune for this wall-clock time (the schedule spans it; with --finetune-epochs: whichever "
                   "ends first)")
@click.option("--lr", type=float, default=option_default("lr"), show_default=True, help="fine-tuning learning rate")
@click.option("--batch-size", type=int, default=option_default("batch_size"), show_default=True)
@click.option("--seed", type=int, default=option_default("seed"), show_default=True)
@click.option("--round-to", default=option_default("round_to"), show_default=True,
              help="every pruned group keeps a multiple of N channels (auto: the runtime's; 1: no alignment)")
@click.option("--runtime", type=choice("runtime"),
              default=option_default("runtime"),
              show_default=True, help="where the model ships: picks --round-to auto and the final speed check")
@click.option("--cost", type=choice("cost"), default=option_default("cost"),
              show_default=True,
              help="what Algorithm 3 scales each group's threshold by (auto: the target's measure; latency: "
                   "a per-layer latency table measured on --runtime)")
@click.option("--device", default=option_default("device"), show_default=True,
              help="scores, retraining and evaluation: auto (CUDA when available), cpu, cuda, cuda:N")
@click.option("--amp", type=choice("amp"), default=option_default("amp"), show_default=True,
              help="training precision (auto: bf16 autocast + channels_last on CUDA and on a CPU with native bf16 "
                   "units, AMX or AVX-512 BF16; fp32 elsewhere)")
@click.option("--sync-bn", is_flag=True, default=option_default("sync_bn"),
              help="under torchrun on CUDA: BatchNorm statistics over every rank's images (SyncBatchNorm) while "
                   "training; the delivered model keeps plain BatchNorm")
@click.option("--data-mode", type=choice("data_mode"), default=option_default("data_mode"),
              show_default=True,
              help="decode the data into memory, or stream an ImageFolder from disk (auto: by size)")
@click.option("--workers", type=int, default=option_default("workers"),
              help="DataLoader workers for streamed data [default: min(4, cores-1)]")
@click.option("--latency-table", type=click.Path(dir_okay=False), default=option_default("latency_table"),
              help="plan and align from a table measured on the target device (prunekit latency-table)")
@click.option("--latency-threads", type=int, default=option_default("latency_threads"), show_default=True,
              help="intra-op threads for latency targets, the latency table and the final speed check")
@click.option("--speed-batches", default=",".join(map(str, option_default("speed_batches"))), show_default=True,
              help="time dense vs pruned on --runtime at these batch sizes at the end ('none' skips)")
@click.option("--overwrite", is_flag=True, help="replace an existing run folder")
@click.option("--trust-code", is_flag=True, help="--resume: " + TRUST_CODE_HELP)
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
def prune(**options):
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
    from prunekit.compute.ddp import init_from_env
    from prunekit.models import parse_input_size
    from prunekit.config import PruneConfig
    from prunekit.jobs.pipeline import prune as run_prune

    # every option is a PruneConfig field of the same name, but for these few
    resume_dir, trust_code, quiet = (options.pop(k) for k in ("resume_dir", "trust_code", "quiet"))
    log_format, max_rounds, speed_batches = options["log_format"], options["max_rounds"], options["speed_batches"]
    logger(quiet, log_format)
    init_from_env(options["device"])
    out = options["out"] or resume_dir
    if resume_dir:
        from prunekit.jobs.search.loop import resume_search

        run = resume_search(resume_dir, max_rounds=max_rounds, time_limit=options["time_limit"],
                            log_format=log_format, trust_pickle=options["trust_pickle"], trust_code=trust_code)
    else:
        missing = [n for n, k in (("MODEL", "model"), ("--data", "data"), ("--target", "target"), ("--out", "out"))
                   if not options[k]]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or use --resume RUN_DIR)")
        options.update(input_size=parse_input_size(options["input_size"]),
                       max_rounds=option_default("max_rounds") if max_rounds is None else max_rounds,
                       speed_batches=() if speed_batches.strip().lower() == "none" else parse_batches(
                           speed_batches, "--speed-batches"))
        run = run_prune(PruneConfig(**options))
    from prunekit.runs.summary import summary_fields, summary_lines

    lines = summary_lines(run, out)
    if json_output():  # one object with the run's headline figures
        say("; ".join(lines), event="summary", **summary_fields(run, out))
        return
    for line in lines:
        say(line)
