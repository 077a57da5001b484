import os

import numpy as np
import pytest


def cuda_available() -> bool:
    try:
        import torch

        from pyretro import build_info

        return torch.cuda.is_available() and bool(build_info()["cuda_compiled"])
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and a CUDA build of pyretro")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(int(os.environ.get("PYRETRO_TEST_SEED", "0")))
