import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny batches gain nothing from intra-op threads, and on a busy machine they spin.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
