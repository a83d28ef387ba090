"""The house rules, checked: module-level imports inside prunekit form no cycle, and the deploy-side verbs
(check, report, bench on ONNX files) start without torch or torch-pruning."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "prunekit"


def module_imports() -> dict[str, set[str]]:
    """prunekit module → the prunekit modules it imports at module level (function-level imports are lazy)."""
    mods = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mods[name] = path
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for cand in [target] + [f"{target}.{a.name}" for a in node.names]:
                    if cand in mods and cand != name:
                        graph[name].add(cand)
    return graph


def test_imports_form_no_cycle():
    graph = module_imports()
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
    assert len(graph) > 20


def test_deploy_verbs_do_not_import_torch():
    code = ("import sys; from prunekit import cli, gate, report, bench, fastpath, files, quantize; "
            "from prunekit.cli import main; "
            "print('torch' in sys.modules, 'torch_pruning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_ruff_is_clean():
    """The style rules in pyproject.toml hold (ruff is a dev dependency)."""
    import shutil

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        import pytest

        pytest.skip("ruff is not installed")
    root = PKG.parent
    res = subprocess.run([ruff, "check", "prunekit", "tests", "benchmarks", "examples"], cwd=root,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:]
