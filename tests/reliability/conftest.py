"""One CPU thread for the reliability tests: on a loaded machine, torch's two OpenMP threads
wait on each other for tens of milliseconds per small op; one thread runs these tiny nets faster."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
