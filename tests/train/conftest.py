import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine more threads only spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
