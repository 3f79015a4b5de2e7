"""A hub-compatible HTTP server on 127.0.0.1 (stdlib only) and fixtures pointing huggingface_hub at it.

The server speaks the part of the Hub API that ``huggingface_hub`` 2.x uses to list and download:

- ``GET  /api/models/{repo}/revision/{rev}``        repo info with the commit ``sha``
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``   file listing (``recursive``), with ``lfs`` for LFS files
- ``HEAD /{repo}/resolve/{rev}/{path}``             ``X-Repo-Commit``, ``ETag`` (git sha1, or sha256 for LFS), size
- ``GET  /{repo}/resolve/{rev}/{path}``             the bytes, with ``Range`` support

and Hub-style errors (``X-Error-Code``: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Tests add faults:
drop the connection mid-file, announce a wrong size, serve other bytes than the listing's hash, hold a
transfer at a byte until the test releases it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

PAIR = "qwen3_0.6b+qwen2.5_0.5b_Fuser"  # receiver Qwen/Qwen3-0.6B, sharer Qwen/Qwen2.5-0.5B-Instruct (tiny here)
GATED_PAIR = "qwen3_0.6b+llam3.2_1b_Fuser"  # its sharer meta-llama/Llama-3.2-1B-Instruct is gated
EXTRA_PAIR = "tiny_extra_Fuser"  # not in the spec's table: the listing reads its config.json
RECEIVER = "Qwen/Qwen3-0.6B"
SHARER = "Qwen/Qwen2.5-0.5B-Instruct"
GATED = "meta-llama/Llama-3.2-1B-Instruct"
GATED_TOKEN = "hf_test_token_that_may_read_llama"
LFS_SUFFIXES = (".pt", ".safetensors", ".bin", ".onnx", ".pth")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str = ""
    gated: bool = False

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for path in sorted(self.files):
                digest.update(path.encode() + b"\0" + self.files[path])
            self.sha = digest.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_id(data)

    def entry(self, path: str) -> dict:
        data = self.files[path]
        out = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
        if self.is_lfs(path):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return out


@dataclass
class Faults:
    """What the server does wrong, per (repo, path)."""

    drop_after: dict = field(default_factory=dict)  # -> (bytes sent before closing, how many times)
    head_size: dict = field(default_factory=dict)  # -> size HEAD announces (the GET is honest)
    swap: dict = field(default_factory=dict)  # -> bytes served by HEAD/GET instead (listing unchanged)
    tree_size: dict = field(default_factory=dict)  # -> size the tree listing claims
    chunk_delay: float = 0.0  # seconds between 16 KiB pieces of every file: a slow link
    hold: dict = field(default_factory=dict)  # -> bytes sent before the server waits for ``Gate.release``
    gate: "Gate" = field(default_factory=lambda: Gate())


class Gate:
    """Where a held transfer stands: ``held`` once the bytes before the hold point are sent and flushed.

    A test then looks at the client while the download sits at a known byte, however fast the machine.
    """

    def __init__(self) -> None:
        self.held = threading.Event()
        self.released = threading.Event()

    def wait_released(self) -> None:
        self.held.set()
        self.released.wait(timeout=600)  # a safety net only: tests release in their finally (and reset does)

    def release(self) -> None:
        self.released.set()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults = Faults()
        self.log: list[tuple[str, str, str, str | None]] = []  # (method, repo, path, Range)
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        with self.lock:
            self.faults.gate.release()  # a transfer still held by a failed test goes on
            self.faults = Faults()
            self.log.clear()

    def gets(self, repo: str | None = None) -> list[str]:
        """Paths fetched with GET .../resolve/... (file downloads), in order."""
        with self.lock:
            return [p for m, r, p, _ in self.log
                    if m == "GET" and not p.startswith("api:") and (repo is None or r == repo)]

    def ranges(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return [(p, rng) for m, _, p, rng in self.log if m == "GET" and rng]

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub.handle(self, "GET")

            def do_HEAD(self) -> None:
                hub.handle(self, "HEAD")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # a dropped connection is on purpose
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-hub").start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # -- request handling ------------------------------------------------------------------------------------

    def handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(req.path)
        parts = split.path.split("/")[1:]
        query = parse_qs(split.query)
        try:
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id = f"{unquote(parts[2])}/{unquote(parts[3])}"
                repo = self.repo_or_error(req, repo_id)
                if repo is None:
                    return
                kind, rev, rest = parts[4], unquote(parts[5]), "/".join(unquote(p) for p in parts[6:])
                if not self.revision_ok(req, repo, rev):
                    return
                self.record(method, repo_id, f"api:{kind}:{rest}", None)
                if kind == "revision":
                    return self.json(req, {"id": repo_id, "sha": repo.sha, "private": False, "gated": repo.gated,
                                           "siblings": [{"rfilename": p} for p in sorted(repo.files)]})
                if kind == "tree":
                    recursive = query.get("recursive", ["false"])[0].lower() == "true"
                    return self.tree(req, repo_id, repo, rest, recursive)
            elif len(parts) >= 5 and parts[2] == "resolve":
                repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
                repo = self.repo_or_error(req, repo_id)
                if repo is None:
                    return
                rev, path = unquote(parts[3]), "/".join(unquote(p) for p in parts[4:])
                if not self.revision_ok(req, repo, rev):
                    return
                return self.resolve(req, method, repo_id, repo, path)
            self.error(req, 404, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def record(self, method: str, repo: str, path: str, rng: str | None) -> None:
        with self.lock:
            self.log.append((method, repo, path, rng))

    def repo_or_error(self, req: BaseHTTPRequestHandler, repo_id: str) -> Repo | None:
        auth = req.headers.get("Authorization")
        if auth is not None and auth != f"Bearer {GATED_TOKEN}":  # as the Hub does, on every repo
            self.error(req, 401, "Invalid credentials in Authorization header")
            return None
        repo = self.repos.get(repo_id)
        if repo is None:
            self.error(req, 404, "Repository not found", "RepoNotFound")
            return None
        if repo.gated and req.headers.get("Authorization") != f"Bearer {GATED_TOKEN}":
            self.error(req, 401, f"Access to model {repo_id} is restricted. You must have access to it and be "
                                 "authenticated to access it. Please log in.", "GatedRepo")
            return None
        return repo

    def revision_ok(self, req: BaseHTTPRequestHandler, repo: Repo, rev: str) -> bool:
        if rev in ("main", repo.sha):
            return True
        self.error(req, 404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return False

    def tree(self, req: BaseHTTPRequestHandler, repo_id: str, repo: Repo, prefix: str, recursive: bool) -> None:
        base = prefix.rstrip("/") + "/" if prefix else ""
        paths = [p for p in sorted(repo.files) if p.startswith(base)]
        if prefix and not paths:
            return self.error(req, 404, f"Entry not found: {prefix}", "EntryNotFound")
        entries, folders = [], set()
        for path in paths:
            rest = path[len(base):]
            if "/" in rest and not recursive:
                folders.add(base + rest.split("/", 1)[0])
                continue
            for i in range(rest.count("/")):
                folders.add(base + "/".join(rest.split("/")[: i + 1]))
            entry = repo.entry(path)
            if (repo_id, path) in self.faults.tree_size:
                entry["size"] = self.faults.tree_size[(repo_id, path)]
                if "lfs" in entry:
                    entry["lfs"]["size"] = entry["size"]
            entries.append(entry)
        dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(folders)]
        self.json(req, dirs + entries)

    def resolve(self, req: BaseHTTPRequestHandler, method: str, repo_id: str, repo: Repo, path: str) -> None:
        if path not in repo.files:
            self.record(method, repo_id, path, None)
            return self.error(req, 404, f"Entry not found: {path}", "EntryNotFound")
        key = (repo_id, path)
        data = self.faults.swap.get(key, repo.files[path])
        rng = req.headers.get("Range")
        self.record(method, repo_id, path, rng)
        start = 0
        if rng and rng.startswith("bytes=") and rng[6:].rstrip("-").isdigit():
            start = int(rng[6:].rstrip("-"))
        body = data[start:]
        req.send_response(206 if start else 200)
        req.send_header("X-Repo-Commit", repo.sha)
        req.send_header("ETag", f'"{repo.etag(path)}"')
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("Content-Type", "application/octet-stream")
        if start:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        size = len(body)
        if method == "HEAD" and key in self.faults.head_size:
            size = self.faults.head_size[key]
        req.send_header("Content-Length", str(size))
        req.end_headers()
        if method == "HEAD":
            return
        drop = self.faults.drop_after.get(key)
        if drop is not None and drop[1] > 0:
            with self.lock:
                self.faults.drop_after[key] = (drop[0], drop[1] - 1)
            req.wfile.write(body[: drop[0]])
            req.wfile.flush()
            req.close_connection = True
            req.connection.shutdown(2)  # the peer sees the body end early, as on a dropped link
            return
        hold = self.faults.hold.get(key)
        if hold is not None and start < hold < len(data):
            req.wfile.write(body[: hold - start])
            req.wfile.flush()
            self.faults.gate.wait_released()
            body = body[hold - start:]
        for i in range(0, len(body), 16384):
            req.wfile.write(body[i:i + 16384])
            if self.faults.chunk_delay:
                req.wfile.flush()
                time.sleep(self.faults.chunk_delay)

    def json(self, req: BaseHTTPRequestHandler, payload: object) -> None:
        body = json.dumps(payload).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)

    def error(self, req: BaseHTTPRequestHandler, status: int, message: str, code: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("X-Error-Message", message)
        if code:
            req.send_header("X-Error-Code", code)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)


# -- content: tiny models under their hub ids, tiny pairs in the published layout ------------------------------

def _folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


_REPOS: dict[str, Repo] | None = None
_SERVER: FakeHub | None = None


def build_repos() -> dict[str, Repo]:
    """The repos the fake hub serves: nics-efc/C2C_Fuser with three tiny pairs, and their tiny models.

    Built once per process (the hub tests and the app tests share them).
    """
    global _REPOS
    if _REPOS is not None:
        return _REPOS
    from transformers import AutoConfig

    from fusers import tiny
    from fusers.checkpoint import save_published

    root = Path(tempfile.mkdtemp(prefix="c2c-hub-content-"))
    tok = tiny.bpe_tokenizer(300)
    receiver = tiny.save_model(root / "receiver", "qwen3", tok, seed=1, layers=2, hidden_size=32, heads=2,
                               kv_heads=1, head_dim=16)
    sharer = tiny.save_model(root / "sharer", "qwen2", tok, seed=2, layers=2, hidden_size=32, heads=2, kv_heads=1)
    gated = tiny.save_model(root / "gated", "llama", tok, seed=3, layers=2, hidden_size=32, heads=2, kv_heads=1)
    rcfg = AutoConfig.from_pretrained(receiver)
    pairs = {}
    for name, sharer_id, sharer_dir, hidden in ((PAIR, SHARER, sharer, 96), (GATED_PAIR, GATED, gated, 32),
                                                (EXTRA_PAIR, SHARER, sharer, 32)):
        fuser = tiny.random_fuser(rcfg, AutoConfig.from_pretrained(sharer_dir), receiver=RECEIVER, sharer=sharer_id,
                                  hidden_dim=hidden, intermediate_dim=hidden, seed=4)
        pairs[name] = save_published(fuser, root / name)
    fuser_files = {"README.md": b"# C2C fusers (test copy)\n", ".gitattributes": b"*.pt filter=lfs\n"}
    for name, folder in pairs.items():
        fuser_files.update(_folder_files(folder, f"{name}/"))
    extras = {"README.md": b"tiny\n", "onnx/model.onnx": b"\0" * 5000, "original/consolidated.pth": b"\1" * 7000}
    _REPOS = {
        "nics-efc/C2C_Fuser": Repo(fuser_files),
        RECEIVER: Repo({**_folder_files(receiver), **extras}),
        SHARER: Repo(_folder_files(sharer)),
        GATED: Repo(_folder_files(gated), gated=True),
    }
    shutil.rmtree(root, ignore_errors=True)
    return _REPOS


def running_hub() -> FakeHub:
    """The process's fake hub server, started on first use (daemon threads; it ends with the process)."""
    global _SERVER
    if _SERVER is None:
        hub = FakeHub()
        hub.repos = build_repos()
        hub.start()
        _SERVER = hub
    return _SERVER


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf"


@pytest.fixture
def fake_hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake hub, with huggingface_hub online and pointed at it, a fresh HF_HOME, and small read chunks.

    The real client runs unchanged; only its settings differ: 8 KiB chunks (instead of 10 MiB) so that
    progress and cancel happen inside the tiny files, as they do inside real gigabyte files, and a read
    timeout longer than any hold.
    """
    from huggingface_hub import constants

    fake_hub_server = running_hub()
    fake_hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", fake_hub_server.url)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    # a transfer a test holds (Faults.hold) must not hit the client's 10 s read timeout on a loaded machine
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 600)
    return fake_hub_server


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
