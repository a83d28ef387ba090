"""``prunekit bench``: renders what :func:`prunekit.deploy.bench.bench` measured."""
from __future__ import annotations

import click

from prunekit.cli.app import TRUST_CODE_HELP, ChoiceList, choice, main, parse_batches
from prunekit.cli.output import log_format_option, say, say_json


@main.command()
@log_format_option
@click.argument("source")
@click.option("--vs", default=None, help="dense ONNX model to compare with (a RUN_DIR brings its own)")
@click.option("--batch-sizes", default="1,32", show_default=True)
@click.option("--runtimes", type=ChoiceList("runtime"), default=None,
              help="the runtimes to time [default: every ONNX runtime installed here, INT8 ones when INT8 files "
                   "exist or can be made]")
@click.option("--threads", type=int, default=1, show_default=True, help="intra-op threads of every runtime")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--provider", type=choice("bench_provider"), default="cpu", show_default=True,
              help="onnxruntime execution provider (cuda needs onnxruntime-gpu; times onnxruntime only)")
@click.option("--device", type=choice("bench_provider"), default="cpu", show_default=True,
              help="PyTorch eager timing device: cuda times fp32 and bf16, contiguous and channels_last")
@click.option("--torch/--no-torch", "with_torch", default=False, show_default=True,
              help="also time PyTorch eager on the CPU (run folders only)")
@click.option("--int8", "with_int8", is_flag=True,
              help="insist on the INT8 models (RUN_DIR/model.int8.onnx, dense.int8.onnx; beside ONNX files: "
                   "NAME.int8.onnx)")
@click.option("--data", default=None, help="calibration images for missing int8 files; with labels, the test "
                                           "accuracy of every row")
@click.option("--eval-images", type=int, default=None, help="test images per row's accuracy [default: all]")
@click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP)
@click.option("--json", "as_json", is_flag=True)
def bench(source, vs, batch_sizes, runtimes, threads, warmup, runs, provider, device, with_torch, with_int8, data,
          eval_images, trust_code, as_json):
    """Latency of an ONNX model (or a run's pruned vs dense model) on every runtime and precision here.

    \b
    Every (runtime, model) pair is loaded, warmed up, then timed in one interleaved loop; p50/p90 in ms and
    throughput. With a dense model (--vs, or a RUN_DIR) each pruned row gets its speedup over the same
    runtime's dense model and over the fastest dense deployment measured (named): what pruning adds on top of
    the best you could ship without it. With labelled --data, each row's test accuracy as that runtime runs it.
    Examples:
      prunekit bench runs/r56-p50 --batch-sizes 1,32
      prunekit bench runs/r56-p50 --data cifar10 --eval-images 2000   # with accuracy per runtime
      prunekit bench pruned.onnx --vs dense.onnx --threads 2 --runtimes onnxruntime-cpu,openvino-cpu --json
    """
    from prunekit.deploy.bench import bench as run_bench, speedup_words

    result = run_bench(source, vs, parse_batches(batch_sizes), threads, warmup, runs, provider, device, with_torch,
                       with_int8, data, trust_code, runtimes, eval_images if data else 0)
    if as_json:
        say_json(result.to_dict())
        return
    for k, m in result.models.items():
        say(f"{k:<11} {m['path']}  MACs {m['macs']:,}  initializer elements {m['params']:,}")
    say(f"{', '.join(result.runtimes)}; {threads} thread(s), {warmup} warm-up + {runs} timed runs per model, "
        "interleaved" + "".join(f"\n  not timed: {r} ({why})" for r, why in result.skipped.items()))
    for row in result.batches:
        say(f"batch {row['batch']}:")
        for r in row.get("frontier", []):
            say(f"  {r['runtime']:<20} {r['model']:<7} {r['precision'] or '':<10} p50 {r['p50_ms']:9.3f} ms  "
                f"p90 {r['p90_ms']:9.3f}  {r['throughput_ips']:9.1f} img/s"
                + (f"  speedup {speedup_words(r['speedup'])}" if "speedup" in r else "")
                + (f"  {r['over_fastest_dense']:.2f}× vs fastest dense" if "over_fastest_dense" in r else "")
                + (f"  acc {r['accuracy']:.2f}%" if "accuracy" in r else ""))
        for k, st in ({} if "frontier" in row else row.get("onnxruntime", {})).items():  # --provider cuda
            say(f"  onnxruntime {provider} {k:<11} p50 {st['p50_ms']:9.3f} ms  p90 {st['p90_ms']:9.3f}  "
                f"({st['runs']} runs)  {st['throughput_ips']:10.1f} img/s")
        if row.get("fastest_dense"):
            f = row["fastest_dense"]
            say(f"  fastest dense deployment: {f['runtime']} ({f['precision']}) {f['p50_ms']:.3f} ms")
        for c in row.get("pytorch_cuda", []):
            say(f"  pytorch cuda {c['dtype']:<4} {c['layout']:<13} dense p50 {c['dense_ms']:8.3f} ms  pruned "
                f"{c['pruned_ms']:8.3f} ms  speedup {speedup_words(c['speedup'])}")
        if "speedup" in row:
            say(f"  onnxruntime fp32: speedup {speedup_words(row['speedup'])}, MAC ratio {row['mac_ratio']:.2f}×, "
                f"efficiency {row['speedup_efficiency']:.0%}")

