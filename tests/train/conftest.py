"""Training tests run torch on one thread (`one_torch_thread`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _train_on_one_thread(one_torch_thread):
    yield
