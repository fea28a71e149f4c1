import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every zoo test on one thread (tests/conftest.py)."""
