"""Shared fixtures: a synthetic MUSDB tree written once per test session."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on CI's two cores: one BLAS/OpenMP thread each
    # (before torch is imported), instead of two workers with two spinning threads apiece
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


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


def _xdist_groups(config, items) -> None:
    """Under ``pytest -n`` (make test runs ``--dist loadgroup``), keep each file on one worker:
    module-scoped fixtures (a local Ray, a tracking server, the stack) start once, not once per
    worker. (Two files in one group would get their items interleaved, and a module fixture
    torn down and started again between them.) An explicit ``xdist_group`` marker wins.
    Only tests/e2e/test_stack.py makes network namespaces and a bridge."""
    root = config.rootpath
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        rel = item.path.relative_to(root).as_posix()
        item.add_marker(pytest.mark.xdist_group(rel))


def _slow_files_first(items) -> None:
    """Files holding a test marked ``slow`` (Ray sweeps, the e2e stacks, long training) run
    first, each file's tests in their order: the two xdist workers then end on short files
    instead of one of them finishing a long one alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)  # stable: the order is otherwise kept


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Slow files first and each file one group for pytest-xdist; skip tests marked ``gpu``
    when torch sees no CUDA device."""
    _slow_files_first(items)
    _xdist_groups(config, items)
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)
