"""``prunekit export``: a run folder, ``pruned.pt`` or model to ONNX, checked against PyTorch (and INT8)."""
from __future__ import annotations

import click

from prunekit.cli.app import TRUST_CODE_HELP, choice, main, model_options
from prunekit.cli.output import log_format_option, logger, say


@main.command()
@log_format_option
@click.argument("source")
@model_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="max |onnxruntime - pytorch| (plus 1e-5 × max|output|)")
@click.option("--data", default=None, help="inputs for the parity check (default: the run's data, else random)")
@click.option("--check-images", type=int, default=16, show_default=True)
@click.option("--exporter", type=choice("exporter"), default="dynamo", show_default=True)
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
    from prunekit.deploy.artifacts import export_source
    from prunekit.deploy.export import render_checklist

    logger(quiet)
    done = export_source(source, out, weights=weights, input_size=input_size, num_classes=num_classes,
                         trust_pickle=trust_pickle, trust_code=trust_code, atol=atol, data=data,
                         check_images=check_images, exporter=exporter, int8=with_int8)
    report = done.report
    if not quiet:
        say(report.checklist(), err=True)
    if done.int8 is not None:
        if not quiet:
            say(render_checklist(done.int8.checks), err=True)
        say(f"{done.int8_out}: {done.int8.bytes:,} bytes, INT8 (QDQ), calibrated on {done.int8.calibration_images} "
            "images")
    parity = [c for c in report.checks if c["check"].startswith("onnxruntime == pytorch")]
    outputs = f"{len(parity)} outputs, " if len(parity) > 1 else ""
    say(f"{out}: {report.bytes:,} bytes, onnxruntime matches PyTorch ({outputs}max abs diff "
        f"{max(c['max_abs_diff'] for c in parity):.2g} on {done.inputs})")
    fp = next((c for c in report.checks if "fast_path" in c), None)
    if fp and fp["warning"]:
        say(f"warning: {fp['detail']}: those layers run slower than aligned ones (prune with --round-to auto)",
            err=True)
