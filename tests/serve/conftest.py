"""The API server's tests: the shipped demo pair, loaded once, served by the real server on a free port of
127.0.0.1 and called with the official openai client."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Tiny models gain nothing from more torch threads, and lose a lot when the cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def demo_pair():
    from fusers.demo import pair_paths
    from fusers.pair import ModelSpec, load_pair

    receiver, sharer, fuser = pair_paths()
    return load_pair(ModelSpec(str(receiver), "cpu"), ModelSpec(str(sharer), "cpu"), fuser)


class Served:
    """What the server answered, as its on_answer callback saw it (on the models' thread)."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, object]] = []
        self.changed = threading.Condition()

    def __call__(self, model: str, answer: object) -> None:
        with self.changed:
            self.answers.append((model, answer))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 120.0) -> list[tuple[str, object]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.answers) >= count, timeout), self.answers
            return list(self.answers)


@pytest.fixture(scope="package")
def served():
    return Served()


@pytest.fixture(scope="package")
def server(demo_pair, served):
    """The demo pair served on a free port, as `c2c serve` serves it."""
    from fusers.engine import Engine
    from fusers.serve.server import ApiServer

    made = ApiServer(Engine(demo_pair), "demo", port=0, on_answer=served).start()
    yield made
    made.close()
    assert made.join(30)


@pytest.fixture(scope="package")
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120) as made:
        yield made
