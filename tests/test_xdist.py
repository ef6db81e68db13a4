"""How `make test` spreads the suite over pytest-xdist workers (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import conftest


class _Item:
    def __init__(self, path: Path, group: str | None = None, slow: bool = False):
        self.path = path
        self.markers = [pytest.mark.xdist_group(group).mark] if group else []
        if slow:
            self.markers.append(pytest.mark.slow.mark)

    def get_closest_marker(self, name):
        return next((m for m in self.markers if m.name == name), None)

    def add_marker(self, marker):
        self.markers.append(marker.mark)

    @property
    def group(self):
        marks = [m for m in self.markers if m.name == "xdist_group"]
        assert len(marks) == 1
        return marks[0].args[0]


def test_each_file_is_one_group():
    root = Path(conftest.__file__).resolve().parents[1]
    items = [_Item(root / "tests/sweeps/test_runner.py"),
             _Item(root / "tests/sweeps/test_runner.py"),
             _Item(root / "tests/sepcore/test_train.py"),
             _Item(root / "tests/e2e/test_stack.py"), _Item(root / "tests/stack/test_stack.py"),
             _Item(root / "tests/sepcore/test_cli.py", group="mine")]
    conftest._xdist_groups(SimpleNamespace(rootpath=root), items)
    assert [i.group for i in items] == [
        "tests/sweeps/test_runner.py", "tests/sweeps/test_runner.py", "tests/sepcore/test_train.py",
        "tests/e2e/test_stack.py", "tests/stack/test_stack.py", "mine"]


def test_files_with_a_slow_test_come_first_and_stay_whole():
    a, b, c = Path("/r/tests/a.py"), Path("/r/tests/b.py"), Path("/r/tests/c.py")
    items = [_Item(a), _Item(b), _Item(b, slow=True), _Item(c), _Item(a), _Item(c, slow=True)]
    order = list(items)
    conftest._slow_files_first(items)
    assert [i.path for i in items] == [b, b, c, c, a, a]
    assert items == [order[1], order[2], order[3], order[5], order[0], order[4]]


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="not on an xdist worker")
def test_a_worker_keeps_torch_to_one_thread():
    import torch

    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == 1
