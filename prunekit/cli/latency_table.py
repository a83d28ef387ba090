"""``prunekit latency-table``: per-layer latencies measured on this device, for planning elsewhere."""
from __future__ import annotations

import click

from prunekit.cli.app import choice, main
from prunekit.cli.output import log_format_option, logger, say


@main.command("latency-table")
@log_format_option
@click.argument("source")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="table file to write (JSON)")
@click.option("--batch", type=int, default=1, show_default=True,
              help="batch the layers are timed at (prune's speed batch for speedup=: the largest --speed-batches)")
@click.option("--runtime", type=choice("runtime"), default="onnxruntime-cpu", show_default=True,
              help="the runtime the model ships on (an ONNX runtime: onnxruntime or OpenVINO)")
@click.option("--threads", type=int, default=1, show_default=True, help="the runtime's intra-op threads")
@click.option("--round-to", default="auto", show_default=True,
              help="channel grid of the widths timed (auto: this device's NCHWc block)")
@click.option("--budget-ms", type=float, default=60.0, show_default=True, help="timing budget per layer shape")
@click.option("--max-shapes", type=int, default=5000, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def latency_table(source, out, batch, runtime, threads, round_to, budget_ms, max_shapes, quiet):
    """Time SOURCE's layer shapes (and every width a plan may give them) on THIS device; write a table that
    `prunekit prune --latency-table` plans from on another machine.

    \b
    SOURCE: an fp32 ONNX model (needs only onnx + onnxruntime: run it on the target board), a run folder, or
    a model spec (those two need torch to export the dense model first).
    Example (on the board, then on the workstation):
      prunekit latency-table resnet56-dense.onnx --batch 32 --out board.json
      prunekit latency-table resnet56-dense.onnx --batch 32 --runtime openvino-cpu --out board-ov.json
      prunekit prune resnet56 --data cifar10 --target speedup=1.5 --schedule oneshot \\
          --latency-table board.json --out runs/r56-board
    """
    import tempfile

    from prunekit.deploy.device_table import build_table, source_onnx

    logger(quiet)
    with tempfile.TemporaryDirectory(prefix="prunekit-lut-") as d:
        doc = build_table(source_onnx(source, d), out, runtime=runtime, threads=threads, batch=batch,
                          round_to=round_to, budget_ms=budget_ms, max_shapes=max_shapes)
    dev = doc["device"]
    say(f"{out}: {len(doc['entries'])} layer shapes at batch {batch}, {threads} thread(s), grid {doc['round_to']}, "
        f"on {dev['cpu']} ({doc['timed_on']}, channel grid {dev['grid']['multiple']}), {doc['seconds']:.0f} s")
