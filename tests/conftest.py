"""Shared fixtures: a synthetic MUSDB tree written once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic MUSDB18-HQ tree (8 songs of 12 s: 6 train, 2 test)."""
    from sepcore.data.synth import write_synthetic_musdb

    root = tmp_path_factory.mktemp("synth-musdb")
    write_synthetic_musdb(root, tracks=8, seconds=12.0, seed=123)
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when torch sees no CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)
