"""``prunekit check``: the CI gate on an ONNX model's size, speed and fast path (no torch)."""
from __future__ import annotations

import click

from prunekit.cli.app import choice, main
from prunekit.cli.output import log_format_option, say, say_json


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
@click.option("--runtime", type=choice("runtime"), default="onnxruntime-cpu", show_default=True,
              help="the runtime MODEL is timed on for --min-speedup (an ONNX runtime)")
@click.option("--against", type=click.Choice(["same", "fastest"]), default="same", show_default=True,
              help="--vs on the same --runtime, or on every runtime installed here, the fastest of them (int8 "
                   "runtimes on NAME.int8.onnx beside it)")
@click.option("--require-fast-path", is_flag=True,
              help="fail when a Conv runs off onnxruntime's NCHWc kernels (with --vs: more than in that model)")
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None,
              help="also write a Markdown summary (for a CI job to post)")
def check(model, max_params, max_macs, max_bytes, max_latency_ms, baseline, tolerance, write_baseline, vs,
          min_speedup, runtime, against, require_fast_path, runs, threads, as_json, md_path):
    """CI gate: fail (exit 1) when MODEL.onnx grows past its budget or baseline, or is not fast enough.

    \b
    Exit codes: 0 within budget, 1 over budget, 2 usage error (missing or corrupt file, bad baseline).
    Examples:
      prunekit check model.onnx --write-baseline size-baseline.json
      prunekit check model.onnx --baseline size-baseline.json --tolerance 2%
      prunekit check model.onnx --max-macs 60e6 --vs dense.onnx --min-speedup 1.5 --markdown summary.md
      prunekit check model.onnx --vs dense.onnx --min-speedup 1.2 --runtime openvino-cpu --against fastest
    """
    from prunekit.deploy import gate
    from prunekit.files import atomic_write_bytes, atomic_write_json

    if write_baseline:
        actual = gate.figures(model)
        atomic_write_json(write_baseline, {k: actual[k] for k in gate.DETERMINISTIC})
        say(f"wrote {write_baseline}: params {actual['params']:,}, MACs {actual['macs']:,}, "
            f"bytes {actual['bytes']:,}")
        return
    rows, actual = gate.run_checks(model, gate.Budgets(max_params, max_macs, max_bytes, max_latency_ms), baseline,
                                   tolerance, vs, min_speedup, require_fast_path, runs, threads, runtime, against)
    if md_path:
        atomic_write_bytes(md_path, gate.markdown(model, rows).encode())
    if as_json:
        say_json(gate.to_json(model, rows, actual))
    else:
        say(gate.table(rows))
    if not all(r.passed for r in rows):
        click.get_current_context().exit(1)
