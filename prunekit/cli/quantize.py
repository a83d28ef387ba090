"""``prunekit quantize``: a run folder or ONNX file to a calibrated INT8 ONNX (onnxruntime static, QDQ)."""
from __future__ import annotations

import click

from prunekit.cli.app import TRUST_CODE_HELP, choice, main
from prunekit.cli.output import log_format_option, logger, say
from prunekit.errors import PrunekitError


@main.command()
@log_format_option
@click.argument("source")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="INT8 ONNX file to write")
@click.option("--data", default=None, help="calibration (and test) images: cifar10, an ImageFolder root, a .tar.gz "
                                           "(default: the run's data); random is allowed for latency work only")
@click.option("--calib-images", type=int, default=256, show_default=True, help="calibration images (training split)")
@click.option("--method", type=choice("quantize_method"), default="minmax",
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
    from prunekit.deploy.artifacts import quantize_source
    from prunekit.deploy.export import render_checklist

    logger(quiet)
    if calib_images <= 0:
        raise PrunekitError("--calib-images must be positive")
    if eval_images is not None and eval_images < 0:
        raise PrunekitError("--eval-images must not be negative")
    report = quantize_source(source, out, data, calib_images, method, eval_images, trust_code=trust_code)
    if not quiet:
        say(render_checklist(report.checks), err=True)
    acc = report.accuracy
    acc_text = (f"; test accuracy fp32 {acc['fp32']:.2f}% → int8 {acc['int8']:.2f}% ({acc['images']:,} images)"
                if acc else "")
    say(f"{out}: {report.bytes:,} bytes (fp32 {report.fp32_bytes:,}), {method} calibration on "
        f"{report.calibration_images} images{acc_text}")
