"""Run a ``prunekit`` command in a fresh Python process and report which heavy modules it imported: how the
tests prove that a deploy verb works without torch."""
from __future__ import annotations

import subprocess
import sys


def run_without(argv: list[str], modules: tuple[str, ...] = ("torch", "torch_pruning"), prelude: str = "") -> dict:
    """Run ``prunekit *argv`` (after ``prelude``, e.g. a patch) in a fresh interpreter; it must exit 0. Returns
    {module: whether it was imported}."""
    code = (f"import sys\n{prelude}\nfrom prunekit.cli import main\nsys.argv = {['prunekit', *argv]!r}\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            f"print(*[m in sys.modules for m in {list(modules)!r}])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return dict(zip(modules, (w == "True" for w in res.stdout.split()[-len(modules):])))
