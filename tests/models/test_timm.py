"""timm models by name (``timm:NAME``, the optional extra): offline, random init, one-shot flops=0.4 on random
data; each either prunes, reloads and matches onnxruntime, or refuses with one clear error. Skipped where timm
is not installed (CI installs the extra)."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.deploy.export import export_onnx
from prunekit.errors import PrunekitError

timm = pytest.importorskip("timm")

# one architecture per building block the issue names: SE + depthwise, CSP (split → paths → concat + add),
# RepVGG (parallel branches), ConvNeXt (LayerNorm), HRNet (multi-resolution fuse), Ghost (concat of a depthwise
# copy: pruned in pairs), MixNet (a mixed conv's fixed-size split: rewritten); 32² inputs so the list stays cheap
PARITY = {"efficientnet_b0": None, "cspresnet50": "split", "repvgg_a0": None, "convnext_atto": None,
          "hrnet_w18_small": None, "ghostnet_050": None, "mixnet_s": None}


@pytest.mark.parametrize("arch", list(PARITY))
def test_timm_prune_export_parity(arch, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    try:
        run = prunekit.prune(prunekit.PruneConfig(
            model=f"timm:{arch}", data="random", target="flops=0.4", out=str(out), schedule="oneshot",
            input_size=(3, 32, 32), calib_images=8, verify_images=4, batch_size=8, speed_batches=()))
    except PrunekitError as e:  # a clean refusal is allowed; it must name the layer or the reason
        assert arch in ("convnext_atto",) and ("LayerNorm" in str(e) or "cannot" in str(e)), str(e)
        return
    assert run["verification"][0]["passed"] and run["reduction"]["macs"] >= 0.4
    assert run["model"]["source"] == "timm" and run["model"]["name"] == arch
    frozen = [g["frozen"] for g in run["groups"] if g["frozen"]]
    if PARITY[arch]:
        assert any(PARITY[arch] in r for r in frozen), frozen
    model = prunekit.load(str(out))  # a timm spec rebuilds without --trust-code
    report = export_onnx(model, torch.randn(2, 3, 32, 32), str(tmp_path / "m.onnx"))
    assert report.passed


def test_timm_input_size_comes_from_the_pretrained_config():
    model, spec = prunekit.resolve_model("timm:resnet18")
    assert spec.source == "timm" and spec.input_size == (3, 224, 224) and spec.classifier == "fc"


def test_unknown_timm_model_is_one_error():
    with pytest.raises(PrunekitError, match="unknown timm model 'no_such_net'"):
        prunekit.resolve_model("timm:no_such_net")
