"""prunekit/deploy/runtime.py: --round-to parsing and the channel multiple each runtime's grid gives."""
from __future__ import annotations

import pytest

from prunekit.deploy import runtime
from prunekit.errors import PrunekitError
from prunekit.runtimes import Grid, get_runtime, machine


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" AUTO ", "auto"), (8, 8), ("16", 16), (1, 1)])
def test_parse_round_to(value, expected):
    assert runtime.parse_round_to(value) == expected


@pytest.mark.parametrize("value", [0, -8, "x", "8.0", 2.5, True, ""])
def test_bad_round_to(value):
    with pytest.raises(PrunekitError, match="--round-to must be auto or a positive integer"):
        runtime.parse_round_to(value)


def test_auto_picks_the_runtime_multiple(monkeypatch):
    monkeypatch.setattr(machine, "cpu_info", lambda: machine.CpuInfo("cpu", "x86_64", 2, frozenset({"avx512f"})))
    from prunekit.runtimes import onnxruntime_cpu

    monkeypatch.setattr(onnxruntime_cpu, "nchwc_block", lambda: machine.nchwc_block(machine.cpu_info()))
    assert runtime.resolve_round_to("auto", "onnxruntime-cpu").round_to == 16
    int8 = runtime.resolve_round_to("auto", "onnxruntime-cpu-int8")
    assert int8.round_to == 16 and "int8" in int8.detected
    assert runtime.resolve_round_to("auto", "cuda").round_to == 8
    assert runtime.resolve_round_to(4, "cuda").round_to == 4
    assert "no alignment" in runtime.resolve_round_to(1).detected
    relaxed = runtime.resolve_round_to("auto").relaxed(8, "flops=0.7")
    assert relaxed.round_to == 8 and "relaxed to 8" in relaxed.detected and relaxed.to_dict()["round_to"] == 8
    table = runtime.resolve_round_to("auto", "onnxruntime-cpu", (4, "a board's block"))
    assert table.round_to == 4 and "latency table's device: a board's block" in table.detected


def test_auto_asks_the_runtime_for_its_grid(monkeypatch):
    rt = get_runtime("openvino-cpu")
    monkeypatch.setattr(type(rt), "missing", lambda self: None)
    monkeypatch.setattr(type(rt), "grid", lambda self, threads=1: Grid(32, "measured: a fake staircase"))
    a = runtime.resolve_round_to("auto", "openvino-cpu")
    assert (a.round_to, a.runtime, a.detected) == (32, "openvino-cpu", "measured: a fake staircase")


def test_unknown_runtime():
    with pytest.raises(PrunekitError, match="--runtime must be one of .*got 'tpu'"):
        runtime.resolve_round_to("auto", "tpu")
