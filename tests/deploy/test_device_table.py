"""Latency tables from the target device (issue 19): built from an ONNX file with onnx + onnxruntime only,
read back to the same predictions, refused for shapes they lack, and driving a prune."""
from __future__ import annotations

import json

import pytest
import torch

import prunekit
from tests.fresh import run_without
from prunekit.core.costmodel import CostModel
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.deploy.export import export_onnx
from prunekit.core.metrics import layer_shapes
from prunekit.deploy.latency_table import LatencyTable, LayerShape, read_table
from prunekit.deploy.device_table import build_table, candidate_shapes, onnx_layer_shapes
from prunekit.errors import PrunekitError
from prunekit.models import resolve_model


@pytest.fixture(scope="module")
def dense_onnx(tmp_path_factory):
    model, spec = resolve_model("resnet20")
    path = tmp_path_factory.mktemp("lut") / "r20.onnx"
    export_onnx(model, torch.randn(2, *spec.input_size), str(path), exporter="torchscript")
    return model, spec, str(path)


@pytest.fixture(scope="module")
def table_file(dense_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "table.json"
    build_table(dense_onnx[2], str(path), batch=1, round_to=16, budget_ms=1.0)
    return str(path)


def test_onnx_shapes_are_the_torch_shapes(dense_onnx):
    model, spec, path = dense_onnx
    torch_keys = sorted(s.key() for s in layer_shapes(model, spec.input_size, batch=4).values())
    assert sorted(s.key() for s in onnx_layer_shapes(path, batch=4)) == torch_keys


def test_candidates_cover_every_width_on_the_grid():
    conv = LayerShape("conv", 32, 64, 8, 8, (3, 3), (1, 1), (1, 1), 1, 1)
    stem = LayerShape("conv", 3, 32, 32, 32, (3, 3), (1, 1), (1, 1), 1, 1)
    head = LayerShape("linear", 64, 10)
    keys = {s.key() for s in candidate_shapes([stem, conv, head], 16)}
    assert {s.key() for s in (stem.resized(3, 16), conv.resized(16, 48), head.resized(48, 10))} <= keys
    assert stem.resized(1, 16).key() not in keys and head.resized(64, 16).key() not in keys  # input / classes kept


def test_a_table_reads_back_to_the_same_predictions(dense_onnx, table_file):
    model, spec, _ = dense_onnx
    doc = read_table(table_file)
    assert doc["device"]["onnxruntime"] and doc["device"]["grid"]["multiple"] in (8, 16) and doc["round_to"] == 16
    assert doc["runtime"] == doc["timed_on"] == doc["device"]["fingerprint"]["runtime"] == "onnxruntime-cpu"
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    plan = {g.root: list(range(16)) for g in groups if g.prunable and g.channels >= 32}
    local = LatencyTable("onnxruntime-cpu", 1, path=str(table_file) + ".local")
    local.entries = dict(doc["entries"])
    a = CostModel.build(model, groups, spec.input_size).attach_latency(model, spec.input_size,
                                                                       LatencyTable.from_file(table_file))
    b = CostModel.build(model, groups, spec.input_size).attach_latency(model, spec.input_size, local)
    assert a.dense_latency == pytest.approx(b.dense_latency) and a.dense_latency > 0
    assert a.predict_latency(plan) == pytest.approx(b.predict_latency(plan))
    assert a.predict_latency(plan) < a.dense_latency
    assert local.measured == 0  # every shape the plan needed was in the file


def test_a_shape_the_table_lacks_is_refused_by_name(table_file):
    table = LatencyTable.from_file(table_file)
    other = LayerShape("conv", 16, 16, 32, 32, (3, 3), (1, 1), (1, 1), 1, batch=7)
    with pytest.raises(PrunekitError, match=r"has no entry for the layer shape conv:16>16@32x32.*:b7"):
        table.ms(other)


def test_not_a_table_is_refused(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"entries": {"a": 1}}))
    with pytest.raises(PrunekitError, match="not a prunekit latency table"):
        read_table(str(bad))


def test_the_command_runs_without_torch(dense_onnx, tmp_path):
    out = tmp_path / "board.json"
    imported = run_without(["latency-table", dense_onnx[2], "--out", str(out), "--round-to", "32",
                            "--budget-ms", "0.5", "-q"])
    assert imported == {"torch": False, "torch_pruning": False}
    assert read_table(str(out))["entries"]


def test_a_table_drives_a_prune(table_file, tmp_path):
    run = prunekit.prune(prunekit.PruneConfig(
        model="resnet20", data="random", target="speedup=1.3", schedule="oneshot", out=str(tmp_path / "run"),
        latency_table=table_file, speed_batches=(1,), calib_images=16, verify_images=4, batch_size=16))
    assert run["latency"]["table"] == table_file and run["latency"]["predicted_speedup"] >= 1.3
    assert run["target"]["met"] and run["target"]["reached"] == run["latency"]["predicted_speedup"]
    assert "latency table's device" in run["alignment"]["detected"]
    assert run["speed"]["measured_on"].startswith("this machine")


def test_latency_targets_need_a_speedup_with_a_foreign_table(table_file, tmp_path):
    with pytest.raises(PrunekitError, match="give the goal as speedup="):
        prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="latency=1",
                                            out=str(tmp_path / "r"), schedule="oneshot", latency_table=table_file))
