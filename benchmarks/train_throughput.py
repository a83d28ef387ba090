"""Training and evaluation throughput (images/s) per device and data path.

Paths: CIFAR-10 in memory (the shared JPEG tarball, decoded once), and a streamed ImageFolder of generated
224² JPEGs (DataLoader workers, RandomResizedCrop + flip). Devices: cpu, and cuda when a GPU is there.

    python benchmarks/train_throughput.py --steps 30
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from _common import machine, shared, write_results
from PIL import Image

from prunekit.data import load_data
from prunekit.compute.device import resolve_compute
from prunekit.models import resolve_model
from prunekit.compute.train import TrainSchedule, evaluate, train


def folder(root: str, n: int, classes: int = 10) -> str:
    rng = np.random.default_rng(0)
    for split, k in (("train", n), ("test", max(2, n // 10))):
        for c in range(classes):
            d = os.path.join(root, split, f"c{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(k // classes):
                Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(os.path.join(d, f"{i}.jpg"))
    return root


def measure(model_name, size, data, device, steps, batch, mode="auto", workers=None):
    compute = resolve_compute(device)
    bundle = load_data(data, size, mode=mode, workers=workers)
    model, _ = resolve_model(model_name, input_size=size, num_classes=bundle.num_classes)
    epochs = steps * batch / len(bundle.train)
    t0 = time.perf_counter()
    s = train(model, bundle, TrainSchedule(epochs=epochs, lr=0.01, batch_size=batch), compute=compute)
    train_ips = s["images"] / (time.perf_counter() - t0)
    val = bundle.val.subset(np.arange(min(len(bundle.val), steps * batch)))
    t0 = time.perf_counter()
    evaluate(model, bundle, val, batch_size=batch, compute=compute)
    return {"model": model_name, "data": "streamed" if bundle.streamed else "in memory", "device": str(compute.device),
            "amp": compute.amp, "batch": batch, "train_ips": train_ips,
            "eval_ips": len(val) / (time.perf_counter() - t0), "steps": s["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as d:
        imgs = folder(os.path.join(d, "folder"), 40 * 64 if torch.cuda.is_available() else 400)
        for dev in devices:
            rows.append(measure("resnet56", (3, 32, 32), shared("data", "cifar10-jpeg.tar.gz"), dev, args.steps, 128))
            rows.append(measure("torchvision:resnet18", (3, 224, 224), imgs, dev,
                                args.steps if dev == "cuda" else max(3, args.steps // 6), 64 if dev == "cuda" else 16,
                                mode="stream"))
            print(rows[-2], rows[-1], flush=True)
    md = ["| model | data | device | amp | batch | train img/s | eval img/s |",
          "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    md += [f"| {r['model']} | {r['data']} | {r['device']} | {r['amp']} | {r['batch']} | {r['train_ips']:.0f} | "
           f"{r['eval_ips']:.0f} |" for r in rows]
    m = machine()
    md.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; "
              f"command: `python benchmarks/{m['command']}`")
    write_results(args.out, "train_throughput", {"rows": rows, "machine": m}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
