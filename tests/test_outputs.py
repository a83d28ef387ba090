"""prunekit/outputs.py: every output structure a model may return is named the same way everywhere (export,
checks, losses, fidelity), and one that is not tensors is a one-line refusal naming where."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.outputs import describe_outputs, named_outputs, output_names

T = torch.zeros(1, 3)


@pytest.mark.parametrize("out,names", [
    (T, ["output"]),
    ((T, T), ["output_0", "output_1"]),
    ([T], ["output_0"]),
    ({"out": T, "aux": T}, ["out", "aux"]),
    (OrderedDict(boxes=T, cls=T), ["boxes", "cls"]),
    ({"det": (T, T), "seg": {"mask": T}}, ["det.0", "det.1", "seg.mask"]),
    ((T, {"a": [T, T]}), ["output_0", "output_1.a.0", "output_1.a.1"]),
])
def test_every_structure_is_named(out, names):
    assert output_names(out) == names
    assert all(t is T for _, t in named_outputs(out))


@pytest.mark.parametrize("out,match", [
    ("scores", r"returns a str: prunekit handles tensors"),
    ({"out": T, "meta": None}, r"returns a NoneType at 'meta'"),
    ((T, {"x": 3}), r"returns a int at 'output_1.x'"),
    ({}, r"returns an empty dict"),
])
def test_a_structure_that_is_not_tensors_is_one_refusal(out, match):
    with pytest.raises(PrunekitError, match=match):
        named_outputs(out)


def test_description():
    assert describe_outputs({"out": torch.zeros(1, 21, 8, 8), "aux": torch.zeros(1, 21, 8, 8)}) == \
        "out (1, 21, 8, 8), aux (1, 21, 8, 8)"
