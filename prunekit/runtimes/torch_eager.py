"""PyTorch eager as a deployment runtime: ``torch-cpu`` (fp32, the module as trained) and ``cuda`` (a CUDA GPU,
bf16 autocast and channels_last: what tensor cores run). Both run the PyTorch module, not an ONNX file."""
from __future__ import annotations

from prunekit.errors import PrunekitError
from prunekit.runtimes.base import Grid, Runner, Runtime, register
from prunekit.runtimes.machine import nchwc_block
from prunekit.runtimes.timing import time_budgeted


def _torch_layer(s):
    import torch.nn as nn

    if s.kind == "conv":
        return nn.Conv2d(s.in_c, s.out_c, s.k, s.stride, s.pad, groups=s.groups)
    return nn.Linear(s.in_c, s.out_c)


class TorchCPU(Runtime):
    name = "torch-cpu"
    help = "PyTorch eager on the CPU, fp32 (the module itself, no export)"
    family = "torch"
    module = "torch"
    artifact = "torch"

    def versions(self) -> dict:
        import torch

        return {"torch": torch.__version__}

    def load(self, artifact, threads: int, input_shape) -> Runner:
        import copy

        import torch

        model = copy.deepcopy(artifact).eval()

        def run(x):
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return model(torch.from_numpy(x))
            finally:
                torch.set_num_threads(old)
        return Runner(run, "fp32")

    def grid(self, threads: int = 1) -> Grid:
        block, how = nchwc_block()
        return Grid(block, "PyTorch CPU convolutions (oneDNN) use the same SIMD blocks: " + how)

    def layer_ms(self, shape, threads: int, budget_ms: float) -> float:
        import numpy as np
        import torch

        layer = _torch_layer(shape).eval()
        x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape.input_dims()).astype(np.float32))
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return time_budgeted(lambda: layer(x), budget_ms)
        finally:
            torch.set_num_threads(old)


class TorchCUDA(Runtime):
    name = "cuda"
    help = "PyTorch eager on a CUDA GPU, bf16 autocast and channels_last"
    family = "torch"
    precision = "bf16"
    module = "torch"
    artifact = "torch"

    def missing(self) -> str | None:
        why = super().missing()
        if why:
            return why
        import torch

        return None if torch.cuda.is_available() else "runtime cuda: no CUDA GPU is available to PyTorch here"

    def versions(self) -> dict:
        return {"gpu": cuda_identity()}

    def load(self, artifact, threads: int, input_shape) -> Runner:
        import copy

        import numpy as np
        import torch

        model = copy.deepcopy(artifact).eval().cuda().to(memory_format=torch.channels_last)
        cache: dict = {}

        def run(x: np.ndarray):
            key = (x.ctypes.data, x.shape)
            if key not in cache:  # the batch goes to the GPU once; calls time the model, not the copy
                cache.clear()
                cache[key] = torch.from_numpy(x).cuda().contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(cache[key])
            torch.cuda.synchronize()
            return out
        return Runner(run, "bf16")

    def grid(self, threads: int = 1) -> Grid:
        return Grid(8, "CUDA: fp16/bf16 tensor cores want multiples of 8 channels")

    def layer_ms(self, shape, threads: int, budget_ms: float) -> float:
        """The layer as the whole model runs on CUDA (bf16 autocast, channels_last), less the fixed cost of one
        such call."""
        import torch

        if not torch.cuda.is_available():
            raise PrunekitError("a CUDA latency table needs a CUDA GPU on this machine")
        fmt = torch.channels_last if shape.kind == "conv" else torch.contiguous_format
        layer = _torch_layer(shape).cuda().eval().to(memory_format=fmt)
        x = torch.randn(*shape.input_dims(), device="cuda").contiguous(memory_format=fmt)
        times = {}
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for what, fn in (("layer", layer), ("call", torch.amax)):
                def call(fn=fn):
                    fn(x)
                    torch.cuda.synchronize()
                times[what] = time_budgeted(call, budget_ms)
        return max(times["layer"] - times["call"], 0.05 * times["layer"])


def cuda_identity() -> str:
    """The current GPU and the libraries that decide its kernels (name, capability, torch, CUDA, cuDNN)."""
    import torch

    if not torch.cuda.is_available():
        return "no cuda"
    d = torch.cuda.current_device()
    return (f"{torch.cuda.get_device_name(d)}|sm{''.join(map(str, torch.cuda.get_device_capability(d)))}|"
            f"torch {torch.__version__}|cuda {torch.version.cuda}|cudnn {torch.backends.cudnn.version()}")


register(TorchCPU())
register(TorchCUDA())
