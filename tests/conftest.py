"""Shared test set-up: offscreen Qt, a private HF cache, and tiny pairs built on the spot."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Before anything imports Qt or huggingface_hub: no screen, and never the user's real caches or settings.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_private = Path(tempfile.mkdtemp(prefix="c2c-tests-"))
atexit.register(shutil.rmtree, _private, ignore_errors=True)  # it holds converted real models: GBs
os.environ["HF_HOME"] = str(_private / "hf")
os.environ["XDG_CONFIG_HOME"] = str(_private / "config")
os.environ["XDG_DATA_HOME"] = str(_private / "data")
os.environ["XDG_CACHE_HOME"] = str(_private / "cache")  # the real Gemma file is assembled here (fusers.real_models)
os.environ["HF_HUB_OFFLINE"] = "1"  # tests that serve a local hub turn this off for themselves
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip where torch sees no GPU, saying so; every other test runs as it is."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    build = f"torch {torch.__version__}" + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (a CPU build)")
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {build} sees none; benchmarks/gpu_check.sh runs these on a "
                                   "GPU machine")
    for item in marked:
        item.add_marker(skip)


@dataclass
class TinyPairDirs:
    """Folders of a tiny receiver (Qwen3), sharer (Qwen2) sharing one tokenizer, and a random fuser."""

    root: Path
    receiver: Path
    sharer: Path
    published: Path  # fuser in the published layout, gates open
    ours: Path  # the same fuser in our format


def build_tiny_pair(root: Path, seed: int = 0) -> TinyPairDirs:
    from transformers import AutoConfig

    from fusers import tiny
    from fusers.checkpoint import save_fuser, save_published

    root.mkdir(parents=True, exist_ok=True)
    tok = tiny.bpe_tokenizer(400)
    receiver = tiny.save_model(root / "receiver", "qwen3", tok, seed=seed + 1, layers=3, hidden_size=64, heads=4,
                               kv_heads=2, head_dim=16)
    sharer = tiny.save_model(root / "sharer", "qwen2", tok, seed=seed + 2, layers=2, hidden_size=48, heads=4,
                             kv_heads=1)
    fuser = tiny.random_fuser(AutoConfig.from_pretrained(receiver), AutoConfig.from_pretrained(sharer),
                              receiver=str(receiver), sharer=str(sharer), seed=seed + 3)
    published = save_published(fuser, root / "fuser_published")
    ours = save_fuser(fuser, root / "fuser_ours")
    return TinyPairDirs(root, receiver, sharer, published, ours)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> TinyPairDirs:
    """A tiny pair on disk, built once per test session."""
    return build_tiny_pair(tmp_path_factory.mktemp("tiny-pair"))


@pytest.fixture(scope="session")
def tiny_pair(tiny_dirs: TinyPairDirs):
    """The tiny pair loaded on the CPU in float32, with its fuser (gates open)."""
    from fusers.pair import ModelSpec, load_pair

    return load_pair(ModelSpec(str(tiny_dirs.receiver), "cpu"), ModelSpec(str(tiny_dirs.sharer), "cpu"),
                     tiny_dirs.published)


@dataclass
class CountingHub:
    """A server on 127.0.0.1 that stands for the Hub: it records every request and answers each with a 503."""

    endpoint: str
    requests: list[str]

    def run_child(self, code: str, *args: str) -> str:
        """Run ``code`` in a fresh Python process pointed at this hub, online (``HF_HUB_OFFLINE`` unset, as a
        user on a network has it); returns its standard output."""
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env["HF_ENDPOINT"] = self.endpoint
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout


@pytest.fixture
def counting_hub():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield CountingHub(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
