"""The ``prunekit`` command group: every user-facing failure becomes one ``error:`` line and an exit code, and
the options several verbs share are defined here once (their choices come from :mod:`prunekit.config.choices`).

Heavy libraries (torch, onnx) are imported inside the commands so that ``--help`` is instant.
"""
from __future__ import annotations

import click

from prunekit import __version__
from prunekit.cli.output import reset_format, say
from prunekit.config.choices import choices
from prunekit.errors import PrunekitError


def choice(name: str) -> click.Choice:
    """A click choice of one list in :mod:`prunekit.config.choices`."""
    return click.Choice(list(choices(name)))


class ChoiceList(click.ParamType):
    """A comma-separated list of one list's choices (``--runtimes onnxruntime-cpu,openvino-cpu``)."""
    name = "list"

    def __init__(self, list_name: str):
        self.choices = tuple(choices(list_name))

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.choices) + "],…"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        bad = [v for v in items if v not in self.choices]
        if bad or not items:
            self.fail(f"{', '.join(bad) or repr(value)} is not one of {', '.join(self.choices)}", param, ctx)
        return items


def _usage_error(e: click.UsageError) -> None:
    verb = e.ctx.command_path if e.ctx is not None else "prunekit"
    say(f"error: {e.format_message()} (see: {verb} --help)", err=True)


class _Group(click.Group):
    """Turns every user-facing failure into one ``error:`` line and an exit code: PrunekitError (its own code),
    click's usage errors (2, without the Usage block), Ctrl-C (130, saying what was kept)."""

    def make_context(self, info_name, args, parent=None, **extra):
        reset_format(args)
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
            say(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            say("interrupted", err=True)
            ctx.exit(130)


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


def option_default(name: str):
    """A prune option's default: its config field's (:func:`prunekit.config.option_default`, one place for each)."""
    from prunekit.config import option_default

    return option_default(name)


TRUST_CODE_HELP = "allow a run folder whose model is a file.py:factory to import and run that file"


def model_options(f):
    f = click.option("--trust-pickle", is_flag=True,
                     help="allow unpickling a saved module (runs code from the file)")(f)
    f = click.option("--num-classes", type=int, default=None, help="classifier outputs (default: the model's own)")(f)
    f = click.option("--input-size", default=None, help="C,H,W (default: the model's own, 3,224,224 otherwise)")(f)
    f = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="state-dict file (loaded with weights_only=True)")(f)
    return f


def parse_batches(text: str, option: str = "--batch-sizes") -> tuple[int, ...]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise PrunekitError(f"{option} must be positive integers like 1,32, got {text!r}")
    return tuple(sizes)
