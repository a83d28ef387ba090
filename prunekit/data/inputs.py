"""Checks that a model and its data fit together, and the real inputs every verification runs on."""
from __future__ import annotations

import numpy as np
import torch

from prunekit.data import DataBundle
from prunekit.errors import PrunekitError


def check_input_size(model: torch.nn.Module, input_size: tuple[int, int, int]):
    """Run the model once on zeros of ``input_size`` (a clear error if it fails); returns what it returned (a
    tensor, or a tuple / list / dict of them: :func:`prunekit.outputs.named_outputs` names them)."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_size))
    except Exception as e:
        raise PrunekitError(
            f"the model does not run on inputs of size {','.join(map(str, input_size))}: "
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]} (set --input-size C,H,W)") from e
    return out


def check_data_fits(bundle: DataBundle, input_size: tuple[int, int, int], outputs: tuple[int, ...] | None = None,
                    model: str = "the model") -> None:
    """The data's images have the model's input size, and its classes match the classifier's outputs."""
    if bundle.synthetic:
        return
    h, w = bundle.train.image_size
    if (h, w) != tuple(input_size[1:]):
        raise PrunekitError(f"data {bundle.name} has {h}×{w} images but the model expects {input_size[1]}×"
                            f"{input_size[2]} (--input-size)")
    if outputs is not None and bundle.has_labels and bundle.num_classes is not None:
        n_out = outputs[-1] if len(outputs) == 2 else None
        if n_out != bundle.num_classes:
            raise PrunekitError(
                f"data {bundle.name} has {bundle.num_classes} classes but {model} outputs {n_out or outputs}: labels "
                "would not match the classifier (set --num-classes, or use data with the model's classes)")


def spread(total: int, n: int) -> np.ndarray:
    """``n`` indices evenly spread over ``range(total)`` (splits are sorted by class: the first n are one class)."""
    return np.unique(np.linspace(0, total - 1, num=min(n, total)).astype(np.int64))


def sample_images(bundle: DataBundle, n: int) -> np.ndarray:
    """``n`` test images (uint8) spread over the split (else training images): the inputs checks run on."""
    ds = bundle.test if bundle.test is not None and len(bundle.test) else bundle.train
    return ds.images_at(spread(len(ds), n))


def sample_inputs(bundle: DataBundle, n: int) -> torch.Tensor:
    """Real inputs for verification: :func:`sample_images`, normalised."""
    return bundle.to_tensor(sample_images(bundle, n))
