"""Shared fixtures. Tests that need ``../shared`` skip when it is missing, except under ``CI=true``, where a
missing file is a failure."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRUNEKIT_SHARED", ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_file(*parts: str) -> str:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI needs {path} (the shared data and weights beside the checkout)")
        pytest.skip(f"{path} not available")
    return str(path)


@pytest.fixture(scope="session")
def cifar_tarball() -> str:
    return shared_file("data", "cifar10-jpeg.tar.gz")


@pytest.fixture(scope="session")
def cifar(cifar_tarball):
    from prunekit.data import load_data

    return load_data(cifar_tarball)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Keep the decode cache between test runs (PRUNEKIT_CACHE wins when set)."""
    if not os.environ.get("PRUNEKIT_CACHE"):
        os.environ["PRUNEKIT_CACHE"] = str(Path.home() / ".cache" / "prunekit")
    yield
