"""Every list of choices prunekit accepts, defined once.

The CLI's ``click.Choice`` lists and help texts, the configs' ``__post_init__`` checks and the registries
that implement each choice (scoring criteria, AMP modes, data modes) all read this module; a test
(``tests/config/test_choices.py``) checks that every registry and every CLI option agree with it. The runtimes
are the one list that comes from its registry (:mod:`prunekit.runtimes`, where a runtime is one registered
object). Plain tuples, no torch: the CLI imports this to build its options.
"""
from __future__ import annotations

from prunekit.errors import PrunekitError
from prunekit.runtimes import runtime_names

CHOICES: dict[str, tuple[str, ...]] = {
    # filter importance criteria (prunekit.core.scoring registers one implementation per name)
    "criterion": ("attention-mean", "attention-max", "attention-sum", "l1", "l2", "group-norm", "random"),
    # where the pruned model ships: the runtimes registered in prunekit.runtimes (one object each)
    "runtime": runtime_names(),
    # mixed precision of training (prunekit.compute.device): bf16 on a CPU with native bf16, bf16/fp16 on CUDA
    "amp": ("auto", "bf16", "fp16", "off"),
    # how an ImageFolder is read (prunekit.data)
    "data_mode": ("auto", "memory", "stream"),
    # the training labels: used, or ignored (recovery by distillation from the dense model alone)
    "labels": ("use", "ignore"),
    "schedule": ("adaptive", "fixed", "oneshot"),
    "step_mode": ("size", "threshold"),
    "threshold_scale": ("total", "per-layer"),
    "allocate": ("knapsack", "threshold"),
    "knapsack_value": ("layers", "score"),
    # one-shot: may the knapsack drop whole residual branches (prunekit.core.branches), and how are they valued
    "depth": ("auto", "on", "off"),
    "branch_criterion": ("ablation", "share", "channels"),
    "distill": ("auto", "on", "off"),
    # distillation loss of an output: KL with temperature over its channels (class scores, per-pixel class maps),
    # or a regression normalised by the dense output's scale
    "distill_loss": ("auto", "kl", "mse", "smooth-l1"),
    "cost": ("auto", "params", "flops", "latency"),
    "rewind": ("auto", "lr", "weights"),
    "minimize": ("params", "flops"),
    "lr_schedule": ("step", "cosine"),
    "log_format": ("text", "json"),
    # deploy-side verbs
    "exporter": ("dynamo", "torchscript"),
    "quantize_method": ("minmax", "entropy", "percentile"),
    "bench_provider": ("cpu", "cuda"),
}

# what the user types on the command line for each choice (the error names the option, not the field)
OPTION = {"quantize_method": "--method", "bench_provider": "--provider"}


def option_name(name: str) -> str:
    return OPTION.get(name, "--" + name.replace("_", "-"))


def choices(name: str) -> tuple[str, ...]:
    return CHOICES[name]


def check_choice(name: str, value) -> str:
    """``value`` if it is one of ``CHOICES[name]``, else a PrunekitError naming the option and its choices."""
    if value not in CHOICES[name]:
        raise PrunekitError(f"{option_name(name)} must be one of {', '.join(CHOICES[name])}, got {value!r}")
    return value


def parse_distill_loss(text: str) -> dict[str, str]:
    """``auto`` / ``kl`` / ``mse`` / ``smooth-l1`` (every output) or ``name=loss,…`` (those outputs; the rest auto)
    → {output name or "*": loss}."""
    text = (text or "auto").strip()
    if "=" not in text:
        return {"*": check_choice("distill_loss", text)}
    out = {}
    for part in text.split(","):
        name, _, loss = part.partition("=")
        if not name.strip() or not loss.strip():
            raise PrunekitError(f"--distill-loss must look like kl or out=kl,boxes=smooth-l1, got {text!r}")
        out[name.strip()] = check_choice("distill_loss", loss.strip())
    return out


def check_device_spec(spec: str) -> str:
    """Syntax only (no hardware query): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    s = str(spec).strip().lower()
    if s in ("auto", "cpu", "cuda") or (s.startswith("cuda:") and s[5:].isdigit()):
        return s
    raise PrunekitError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def parse_round_to(value) -> int | str:
    """``auto`` or a positive integer (``1`` = no alignment); raises PrunekitError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        n = None
    if n is None or n < 1 or str(n) != str(value).strip():
        raise PrunekitError(f"--round-to must be auto or a positive integer (1 = no alignment), got {value!r}")
    return n
