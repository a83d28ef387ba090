"""The house rules, checked: the package tree reads as the flow and its imports run one way.

- module-level imports inside prunekit form no cycle;
- every subpackage imports only the layers its rule allows (function-level, lazy imports included: a lazy
  import still ties one stage to another);
- the deploy-side verbs (check, report, bench on ONNX files) start without torch or torch-pruning;
- no module grows past the size a reader can hold (~350 lines), and ``cli/`` holds no computation.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "prunekit"

# layer → the layers it may import (besides itself and the shared base: errors, files, progress)
ALLOWED = {
    "runtimes": set(),  # the runtime registry: only the shared base (what ships is below everything else)
    "config": {"runtimes"},
    "models": {"config"},  # a model family registers its pruners and branches in models.extensions; core reads them
    "data": {"config"},
    "core": {"config", "data", "models", "runtimes"},  # runtime facts and the device arrive as objects passed in
    "compute": {"config", "data", "runtimes"},
    "runs": {"config", "core", "models", "data"},
    "deploy": {"config", "core", "data", "models", "runs", "runtimes"},
    "jobs": {"config", "core", "compute", "data", "models", "runs", "deploy", "runtimes"},
    "cli": {"config", "core", "data", "models", "runs", "deploy", "jobs", "compute", "runtimes", "__init__"},
    "base": set(),
}
BASE = {"errors", "files", "progress", "outputs"}


def modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return mods


def imports(name: str, path: Path, module_level: bool) -> set[str]:
    """The prunekit modules ``name`` imports (absolute or relative), at module level or anywhere."""
    mods = modules()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else ast.walk(tree)
    found = set()
    for node in nodes:
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t in mods and t != name:
                found.add(t)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if parts[1] == "__main__":
        return "cli"
    return "base" if parts[1] in BASE else parts[1]


def test_imports_form_no_cycle():
    mods = modules()
    graph = {m: imports(m, p, module_level=True) for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError(f"import cycle: {' → '.join(path + [n])}")
            if n not in state:
                visit(n, path + [n])
        state[m] = 2
    for m in graph:
        if m not in state:
            visit(m, [m])
    assert sum(len(v) for v in graph.values()) > 50  # the parser sees the imports at all


def test_models_import_nothing_of_core():
    """A model family registers its pruners and branches in ``models.extensions``: no model module reaches into
    ``core`` (which reads the registries), not even inside a function."""
    reach = [f"{name} → {t}" for name, path in modules().items() if layer(name) == "models"
             for t in imports(name, path, module_level=False) if layer(t) == "core"]
    assert not reach, reach


def test_export_compares_outputs_without_core_and_the_report_lives_with_the_run_folder():
    """``compare_outputs`` is in the shared base (``prunekit.outputs``), so exporting needs nothing of ``core``;
    the run folder's report is written by ``runs``, not ``deploy``."""
    mods = modules()
    assert not [t for t in imports("prunekit.deploy.export", mods["prunekit.deploy.export"], module_level=False)
                if layer(t) == "core"]
    assert "prunekit.runs.report" in mods and "prunekit.deploy.report" not in mods


def test_every_layer_imports_only_what_its_rule_allows():
    broken = []
    for name, path in modules().items():
        here = layer(name)
        if here == "__init__":  # the lazy public API re-exports from every layer
            continue
        for target in imports(name, path, module_level=False):
            there = layer(target)
            if there in (here, "base") or (there == "__init__" and target == "prunekit" and here == "cli"):
                continue
            if there not in ALLOWED[here]:
                broken.append(f"{name} → {target} ({here} may not import {there})")
    assert not broken, "\n".join(broken)


def test_deploy_and_runs_never_reach_a_job_or_the_trainer():
    """The rule the tree is drawn for, stated on its own: what ships never depends on how it was made."""
    for name, path in modules().items():
        if layer(name) in ("deploy", "runs"):
            bad = {t for t in imports(name, path, module_level=False) if layer(t) in ("jobs", "compute", "cli")}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_deploy_verbs_do_not_import_torch():
    code = ("import sys; from prunekit import cli, files; "
            "from prunekit.deploy import gate, bench, speed, fastpath, quantize, artifacts; "
            "from prunekit.config import choices, jobs; from prunekit.runs import record, report; "
            "from prunekit.deploy import latency_table, device_table; import prunekit.runtimes; "
            "from prunekit.cli import main; "
            "print('torch' in sys.modules, 'torch_pruning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("limit", [360])
def test_no_module_is_too_long(limit):
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: k for n, k in long.items() if k > limit}, "split these modules"


def test_no_function_or_class_is_too_long():
    """No function over 80 lines and no class over 150 in prunekit/ (the house rules of issue 26)."""
    import ast

    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 80 or (
                    isinstance(node, ast.ClassDef) and size > 150):
                long.append(f"{name}.{node.name}: {size} lines")
    assert not long, long


def test_cli_modules_only_parse_and_render():
    """A verb module calls API functions and prints; it defines no helper beyond option parsing. Checked by
    what it defines (commands, and a few parse/format helpers in app and output) and by its size."""
    allowed_helpers = {"app": {"choice", "option_default", "model_options", "parse_batches", "_usage_error"},
                       "output": {"say", "say_json", "set_format", "_capture_warnings", "format_from_args",
                                  "log_format_option", "json_output", "reset_format", "logger"}}
    for path in (PKG / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        commands = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)
                    and any("command" in ast.unparse(d) or "group" in ast.unparse(d) for d in n.decorator_list)}
        extra = defs - commands - allowed_helpers.get(path.stem, set())
        assert not extra, f"cli/{path.name} defines {sorted(extra)}: move the computation to the API"
        assert len(path.read_text().splitlines()) < 200, path.name


def test_ruff_is_clean():
    """The style rules in pyproject.toml hold (ruff is a dev dependency)."""
    import shutil

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    root = PKG.parent
    res = subprocess.run([ruff, "check", "prunekit", "tests", "benchmarks", "examples"], cwd=root,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:]
