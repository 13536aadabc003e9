"""Fixtures shared by the tests; the helpers themselves live in ``tests/helpers.py``."""

import pytest
import torch

from tests.helpers import make_config


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
