"""prunekit/runtime.py: --round-to parsing and the channel multiple each runtime gets from the CPU's flags."""
from __future__ import annotations

import pytest

from prunekit.deploy import runtime
from prunekit.errors import PrunekitError


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" AUTO ", "auto"), (8, 8), ("16", 16), (1, 1)])
def test_parse_round_to(value, expected):
    assert runtime.parse_round_to(value) == expected


@pytest.mark.parametrize("value", [0, -8, "x", "8.0", 2.5, True, ""])
def test_bad_round_to(value):
    with pytest.raises(PrunekitError, match="--round-to must be auto or a positive integer"):
        runtime.parse_round_to(value)


@pytest.mark.parametrize("flags, machine, block", [({"avx512f", "avx2"}, "x86_64", 16), ({"avx2"}, "x86_64", 8),
                                                   (set(), "x86_64", 8), (set(), "aarch64", 8)])
def test_nchwc_block_from_cpu_flags(monkeypatch, flags, machine, block):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    monkeypatch.setattr(runtime.platform, "machine", lambda: machine)
    got, how = runtime.nchwc_block()
    assert got == block and how


def test_auto_picks_the_runtime_multiple(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512f"})
    assert runtime.resolve_round_to("auto", "onnxruntime-cpu").round_to == 16
    int8 = runtime.resolve_round_to("auto", "onnxruntime-cpu-int8")
    assert int8.round_to == 16 and "int8" in int8.detected
    assert runtime.resolve_round_to("auto", "cuda").round_to == 8
    assert runtime.resolve_round_to(4, "cuda").round_to == 4
    assert "no alignment" in runtime.resolve_round_to(1).detected
    relaxed = runtime.resolve_round_to("auto").relaxed(8, "flops=0.7")
    assert relaxed.round_to == 8 and "relaxed to 8" in relaxed.detected and relaxed.to_dict()["round_to"] == 8


def test_unknown_runtime():
    with pytest.raises(PrunekitError, match="--runtime must be one of .*got 'tpu'"):
        runtime.resolve_round_to("auto", "tpu")
