"""Fixtures shared by the tests; the helpers themselves live in ``tests/helpers.py``."""

import os

import pytest
import torch

from tests.helpers import make_config

# No test reaches the network: a data set's files come from a local server (task.mirror) or are missing, and a
# missing one is refused at once (bench/tasks/download.py). Inherited by the processes the tests start.
os.environ["GRADBENCH_OFFLINE"] = "1"


def pytest_configure(config):
    """One torch thread per test process under pytest-xdist, which runs one worker per core: on tiny tensors
    a second thread per worker only waits for a core another worker holds (a toy training step took 60 ms
    with two threads on a loaded 2-core machine and 0.2 ms with one). Processes the tests start inherit it
    through OMP_NUM_THREADS; a test that sets ``threads=N`` still gets N."""
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def config_factory():
    """``config_factory(*overrides)``: the config ``python -m bench`` would build from these overrides."""
    return make_config


@pytest.fixture
def one_thread():
    """Tiny tensors: on a loaded 2-core machine a second torch thread only spins and waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
