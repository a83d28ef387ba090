"""The runtime registry: one object per runtime, the CLI's choices are its names, unknown names and missing
extras are one clear error, and every CPU fact comes from one reader."""
from __future__ import annotations

import pytest

from prunekit.errors import PrunekitError
from prunekit.runtimes import RUNTIMES, Runtime, available_runtimes, get_runtime, machine, runtime_names


def test_every_registered_runtime_describes_itself():
    assert runtime_names()[:2] == ("onnxruntime-cpu", "onnxruntime-cpu-int8")
    for name, rt in RUNTIMES.items():
        assert isinstance(rt, Runtime) and rt.name == name and rt.help and rt.family
        assert rt.artifact in ("onnx", "torch") and rt.precision in ("fp32", "int8", "auto", "bf16")
        assert rt.table_proxy is None or rt.table_proxy in RUNTIMES
    assert {r.name for r in available_runtimes("onnx")} >= {"onnxruntime-cpu", "onnxruntime-cpu-int8"}


def test_unknown_runtime_is_one_error_naming_the_choices():
    with pytest.raises(PrunekitError, match="--runtime must be one of onnxruntime-cpu, .*got 'tpu'"):
        get_runtime("tpu")


def test_a_missing_library_names_the_extra(monkeypatch):
    import importlib.util

    rt = get_runtime("openvino-cpu")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert "pip install 'prunekit[openvino]'" in rt.missing()
    with pytest.raises(PrunekitError, match=r"runtime openvino-cpu needs openvino.*prunekit\[openvino\]"):
        rt.require()
    assert "openvino-cpu" not in {r.name for r in available_runtimes()}


def test_fingerprints_key_caches_by_device_versions_precision_and_threads():
    ort = get_runtime("onnxruntime-cpu")
    fp = ort.fingerprint(2)
    assert fp["runtime"] == "onnxruntime-cpu" and fp["threads"] == 2 and fp["onnxruntime"] and fp["cpu"]
    assert ort.key(1) == ort.key(1) != ort.key(2) != get_runtime("onnxruntime-cpu-int8").key(2)


@pytest.mark.parametrize("flags, machine_name, block", [({"avx512f", "avx2"}, "x86_64", 16), ({"avx2"}, "x86_64", 8),
                                                        (set(), "x86_64", 8), (set(), "aarch64", 8)])
def test_nchwc_block_from_cpu_flags(flags, machine_name, block):
    info = machine.CpuInfo("some cpu", machine_name, 2, frozenset(flags))
    got, how = machine.nchwc_block(info)
    assert got == block and how


def test_cpuinfo_is_read_once_and_closed(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor : 0\nmodel name : Test CPU 9000\nflags : fpu avx2 avx512f avx512_bf16\n\n"
                 "processor : 1\nmodel name : Test CPU 9000\nflags : fpu avx2 avx512f avx512_bf16\n")
    model, flags = machine._read_cpuinfo(str(f))
    assert model == "Test CPU 9000" and {"avx512_bf16", "avx2"} <= flags
    info = machine.CpuInfo(model, "x86_64", 2, frozenset(flags))
    assert info.native_bf16 and info.isa == "AVX-512 BF16"
    assert not machine.CpuInfo("x", "x86_64", 2, frozenset({"avx512f"})).native_bf16  # emulated bf16 is not native
    assert machine._read_cpuinfo(str(tmp_path / "none")) == (None, set())


def test_prune_for_a_runtime_that_is_not_installed_is_one_error_line(monkeypatch, tmp_path):
    import importlib.util

    from click.testing import CliRunner

    from prunekit.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    r = CliRunner().invoke(main, ["prune", "resnet20", "--data", "random", "--target", "speedup=1.3", "--schedule",
                                  "oneshot", "--runtime", "openvino-cpu", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and r.output == ("error: runtime openvino-cpu needs openvino, which is not installed "
                                             "(pip install 'prunekit[openvino]')\n"), r.output
    assert not (tmp_path / "run").exists()
    r = CliRunner().invoke(main, ["bench", str(tmp_path), "--runtimes", "openvino-cpu"])
    assert r.exit_code == 2 and "pip install 'prunekit[openvino]'" in r.output
