"""The demo tests run the shipped pair through the engine on one torch thread: tiny models gain nothing from
more, and lose a lot when the cores are shared."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
