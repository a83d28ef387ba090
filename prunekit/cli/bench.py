"""``prunekit bench``: renders what :func:`prunekit.deploy.compare.bench` measured."""
from __future__ import annotations

import click

from prunekit.cli.app import TRUST_CODE_HELP, choice, main, parse_batches
from prunekit.cli.output import log_format_option, say, say_json


@main.command()
@log_format_option
@click.argument("source")
@click.option("--vs", default=None, help="dense ONNX model to compare with (a RUN_DIR brings its own)")
@click.option("--batch-sizes", default="1,32", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime / PyTorch intra-op threads")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--provider", type=choice("bench_provider"), default="cpu", show_default=True,
              help="onnxruntime execution provider (cuda needs onnxruntime-gpu)")
@click.option("--device", type=choice("bench_provider"), default="cpu", show_default=True,
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
    from prunekit.deploy.compare import bench as run_bench, speedup_words

    result = run_bench(source, vs, parse_batches(batch_sizes), threads, warmup, runs, provider, device, with_torch,
                       with_int8, data, trust_code)
    if as_json:
        say_json(result.to_dict())
        return
    for k, m in result.models.items():
        say(f"{k:<11} {m['path']}  MACs {m['macs']:,}  initializer elements {m['params']:,}")
        if "fast_path" in m:
            from prunekit.deploy.fastpath import FastPath

            say(f"        {FastPath(**{f: v for f, v in m['fast_path'].items() if f != 'on_path'}).summary()}")
    say(f"onnxruntime {provider}, {threads} thread(s), {warmup} warm-up + {runs} timed runs per model"
               + (", interleaved" if result.vs else ""))
    for row in result.batches:
        for runtime in ("onnxruntime", "pytorch"):
            for k, st in row.get(runtime, {}).items():
                say(f"  batch {row['batch']:<4} {runtime:<11} {k:<11} p50 {st['p50_ms']:9.3f} ms  "
                           f"p90 {st['p90_ms']:9.3f}  p99 {st['p99_ms']:9.3f}  mean {st['mean_ms']:9.3f} "
                           f"± {st['std_ms']:.3f}  ({st['runs']} runs)  {st['throughput_ips']:10.1f} img/s")
        if "int8" in row:
            i8 = row["int8"]
            say(f"  batch {row['batch']:<4} int8: dense int8 {speedup_words(i8['dense_int8_vs_dense'])} "
                       f"vs dense fp32; pruned int8 {speedup_words(i8['pruned_int8_vs_dense'])} vs dense fp32 and "
                       f"{speedup_words(i8['pruned_int8_vs_dense_int8'])} vs dense int8 (efficiency "
                       f"{i8['efficiency_over_int8']:.0%})")
        for c in row.get("pytorch_cuda", []):
            say(f"  batch {row['batch']:<4} pytorch cuda {c['dtype']:<4} {c['layout']:<13} dense p50 "
                       f"{c['dense_ms']:8.3f} ms  pruned {c['pruned_ms']:8.3f} ms  speedup "
                       f"{speedup_words(c['speedup'])}")
        if "speedup" in row:
            say(f"  batch {row['batch']:<4} speedup {speedup_words(row['speedup'])} (onnxruntime p50), MAC "
                       f"ratio {row['mac_ratio']:.2f}×, efficiency {row['speedup_efficiency']:.0%}"
                       + (f"; PyTorch speedup {speedup_words(row['pytorch_speedup'])}"
                          if "pytorch_speedup" in row else ""))
