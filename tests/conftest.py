"""Fixtures shared by the tests; the helpers themselves live in ``tests/helpers.py``."""

import pytest

from tests.helpers import make_config


@pytest.fixture
def config_factory():
    """``config_factory(*overrides)``: the config ``python -m bench`` would build from these overrides."""
    return make_config
