"""Training tests run torch on one thread: the machines they run on are small and shared, and oversubscribed CPU
threads make tiny-model steps many times slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
