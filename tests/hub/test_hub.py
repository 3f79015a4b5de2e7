"""Downloads of published pairs against a hub-compatible server on 127.0.0.1, with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fusers import hub
from fusers.errors import AuthError, Cancelled, DiskSpaceError, DownloadError
from fusers.hub.verification import free_bytes

from .fake_hub import (
    EXTRA_PAIR,
    GATED,
    GATED_PAIR,
    GATED_TOKEN,
    PAIR,
    RECEIVER,
    SHARER,
    FakeHub,
    Repo,
    go_offline,
)

REPO = hub.REPO_ID
TARGET = f"{PAIR}/final/projector_1.pt"  # an LFS file of a few hundred kB


def pair_files(fake_hub: FakeHub, name: str) -> dict[str, bytes]:
    return {p: b for p, b in fake_hub.repos[REPO].files.items() if p.startswith(name + "/")}


def assert_same_files(folder: Path, expected: dict[str, bytes], prefix: str) -> None:
    got = {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert got.keys() == expected.keys()
    for path, data in expected.items():
        assert hashlib.sha256(got[path]).digest() == hashlib.sha256(data).digest(), path


def leftovers(hf_home: Path) -> list[Path]:
    """Partial downloads anywhere in the cache."""
    return [p for p in (hf_home / "hub").rglob("*.incomplete")]


def status(name: str, offline: bool | None = None) -> str:
    return {p.name: p.status for p in hub.list_pairs(offline=offline)}[name]


def cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusers.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_listing_names_sizes_and_status(fake_hub: FakeHub) -> None:
    pairs = {p.name: p for p in hub.list_pairs()}
    assert set(pairs) == {PAIR, GATED_PAIR, EXTRA_PAIR}  # README.md and .gitattributes are not pairs
    for name, listing in pairs.items():
        files = pair_files(fake_hub, name)
        assert listing.size_bytes == sum(len(b) for b in files.values())
        assert listing.files == len(files)
        assert listing.status == "absent" and listing.online
    assert (pairs[PAIR].receiver, pairs[PAIR].sharer) == (RECEIVER, SHARER)  # from the spec's table
    assert (pairs[GATED_PAIR].receiver, pairs[GATED_PAIR].sharer) == (RECEIVER, GATED)
    # Not in the table: read from its config.json, without putting anything in the cache.
    assert (pairs[EXTRA_PAIR].receiver, pairs[EXTRA_PAIR].sharer) == (RECEIVER, SHARER)
    assert fake_hub.gets() == [f"{EXTRA_PAIR}/config.json"]
    assert not (hub.cache_dir() / "models--nics-efc--C2C_Fuser").exists()


def test_download_with_models_then_compare_runs(fake_hub: FakeHub, hf_home: Path) -> None:
    events: list[hub.DownloadProgress] = []
    # a rate needs 0.2 s of transfer: the slow link makes the largest file alone take >= 0.3 s on any machine
    fake_hub.faults.chunk_delay = 0.01
    path = hub.download_pair(PAIR, with_models=True, progress=events.append)
    fake_hub.faults.chunk_delay = 0.0

    assert path == hub.local_pair_path(PAIR)
    assert path.is_relative_to(hf_home / "hub")  # the standard cache under HF_HOME
    assert_same_files(path, pair_files(fake_hub, PAIR), f"{PAIR}/")
    # Only what transformers needs from the model repos: no ONNX export, no original/ checkpoint, no README.
    receiver_gets = set(fake_hub.gets(RECEIVER))
    assert "model.safetensors" in receiver_gets and "tokenizer.json" in receiver_gets
    assert not receiver_gets & {"onnx/model.onnx", "original/consolidated.pth", "README.md"}
    assert fake_hub.gets(GATED) == [] and not any(p.startswith(EXTRA_PAIR) for p in fake_hub.gets(REPO))

    # Progress: stages in order, per-file bytes inside a file, overall bytes ending at the total.
    stages = [e.stage for e in events]
    assert stages.index("fuser") < stages.index("receiver") < stages.index("sharer")
    assert any(e.file == TARGET and 0 < e.file_done < e.file_total for e in events)
    last = events[-1]
    assert last.finished and last.done == last.total and last.files_done == last.files_total
    expected_total = (sum(len(b) for b in pair_files(fake_hub, PAIR).values())
                      + sum(len(b) for p, b in fake_hub.repos[SHARER].files.items()))
    assert last.total > expected_total  # plus the receiver's files
    assert all(e.done <= e.total for e in events)
    assert any(e.rate > 0 and e.eta is not None for e in events)
    assert status(PAIR) == "complete"

    # A second call fetches nothing.
    fake_hub.reset()
    assert hub.download_pair(PAIR, with_models=True) == path
    assert fake_hub.gets() == []

    # The real CLI, offline, finds the pair by name and its models in the same cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    done = cli(["compare", "--fuser", PAIR, "--prompt", "What is the capital of France?", "--modes",
                "receiver,fusion", "--max-new-tokens", "3", "--device", "cpu"], env)
    assert done.returncode == 0, done.stderr
    assert "fusion" in done.stdout and RECEIVER in done.stderr


def test_dropped_connection_is_resumed_inside_the_file(fake_hub: FakeHub) -> None:
    data = fake_hub.repos[REPO].files[TARGET]
    cut = 3 * 8192 + 100
    assert len(data) > 2 * cut
    fake_hub.faults.drop_after[(REPO, TARGET)] = (cut, 1)

    path = hub.download_pair(PAIR)

    assert (path / "final/projector_1.pt").read_bytes() == data
    # huggingface_hub resumed with a Range request from the last whole chunk it had written.
    resumed = [rng for p, rng in fake_hub.ranges() if p == TARGET]
    assert len(resumed) == 1
    start = int(resumed[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= cut
    assert fake_hub.gets().count(TARGET) == 2


def test_cancel_leaves_no_partial_file_and_a_rerun_fetches_only_the_rest(fake_hub: FakeHub, hf_home: Path) -> None:
    cancel = threading.Event()
    seen: list[hub.DownloadProgress] = []

    def progress(p: hub.DownloadProgress) -> None:
        seen.append(p)
        if p.file == TARGET and 0 < p.file_done < p.file_total:
            cancel.set()  # in the middle of a file

    with pytest.raises(Cancelled):
        hub.download_pair(PAIR, progress=progress, cancel=cancel, max_workers=1)

    assert any(p.file == TARGET and p.file_done < p.file_total for p in seen)
    assert leftovers(hf_home) == []
    assert hub.local_pair_path(PAIR) is None
    listing = {p.name: p for p in hub.list_pairs()}[PAIR]
    assert listing.status == "partial" and 0 < listing.local_bytes < listing.size_bytes
    snapshot = next((hf_home / "hub" / "models--nics-efc--C2C_Fuser" / "snapshots").iterdir())
    assert not (snapshot / TARGET).exists()
    finished = {p for p in pair_files(fake_hub, PAIR) if (snapshot / p).is_file()}
    assert f"{PAIR}/final/projector_0.pt" in finished  # fetched before the cancel, and whole
    for p in finished:
        assert (snapshot / p).read_bytes() == fake_hub.repos[REPO].files[p]

    # A killed process leaves its temporary file behind; the next download sweeps old ones, not fresh ones.
    blobs = hf_home / "hub" / "models--nics-efc--C2C_Fuser" / "blobs"
    stale, fresh = blobs / "0123.abcd.incomplete", blobs / "4567.ef01.incomplete"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 10)
    os.utime(stale, (1, 1))

    fake_hub.reset()
    path = hub.download_pair(PAIR)
    assert not stale.exists() and fresh.exists()
    fresh.unlink()
    assert_same_files(path, pair_files(fake_hub, PAIR), f"{PAIR}/")
    again = set(fake_hub.gets())
    assert TARGET in again and not again & finished  # finished files are never fetched again
    assert not fake_hub.ranges()  # the cancelled file restarts from zero, as huggingface_hub does


@pytest.mark.parametrize("lie", ["head_size", "swap_lfs", "swap_git", "tree_size"])
def test_server_lying_about_size_or_hash_is_rejected(fake_hub: FakeHub, hf_home: Path, lie: str) -> None:
    repo = fake_hub.repos[REPO]
    path = f"{PAIR}/final/projector_0.json" if lie == "swap_git" else TARGET
    data = repo.files[path]
    key = (REPO, path)
    if lie == "head_size":  # HEAD announces more bytes than the file has: huggingface_hub's own size check
        fake_hub.faults.head_size[key] = len(data) + 1000
    elif lie.startswith("swap"):  # same size, other bytes: only a hash check sees it
        fake_hub.faults.swap[key] = bytes(b ^ 0x5A for b in data)
    else:  # the listing's size differs from what HEAD and GET agree on
        fake_hub.faults.tree_size[key] = len(data) - 10

    with pytest.raises(DownloadError) as err:
        hub.download_pair(PAIR, max_workers=1)

    message = str(err.value)
    assert path.split("/")[-1] in message
    expected_words = {"head_size": "size", "swap_lfs": "sha256", "swap_git": "git sha1", "tree_size": "bytes"}
    assert expected_words[lie] in message
    snapshot = next((hf_home / "hub" / "models--nics-efc--C2C_Fuser" / "snapshots").iterdir())
    assert not (snapshot / path).exists()
    blobs = hf_home / "hub" / "models--nics-efc--C2C_Fuser" / "blobs"
    bad = fake_hub.faults.swap.get(key)
    assert all(b.read_bytes() != bad for b in blobs.iterdir()) if bad else True
    assert leftovers(hf_home) == []
    assert hub.local_pair_path(PAIR) is None
    assert status(PAIR) != "complete"

    fake_hub.reset()  # the server behaves again: the download completes
    assert_same_files(hub.download_pair(PAIR), pair_files(fake_hub, PAIR), f"{PAIR}/")


def test_disk_space_shortfall_is_a_clear_error(fake_hub: FakeHub) -> None:
    free = free_bytes(hub.cache_dir())
    with pytest.raises(DiskSpaceError) as err:
        hub.download_pair(PAIR, reserve_bytes=free)  # the real free-space reading; only the margin is raised
    message = str(err.value)
    assert "short" in message and str(hub.cache_dir()) in message and "HF_HOME" in message
    assert not [p for p in fake_hub.gets() if p.endswith(".pt")]  # checked before anything large


def test_offline_is_served_from_the_cache(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hub.download_pair(PAIR, with_models=True)
    go_offline(monkeypatch)
    fake_hub.reset()

    pairs = {p.name: p for p in hub.list_pairs()}
    assert not pairs[PAIR].online and pairs[PAIR].status == "complete"
    assert pairs[PAIR].size_bytes == sum(len(b) for b in pair_files(fake_hub, PAIR).values())
    assert pairs[EXTRA_PAIR].status == "absent"  # known from the cached listing
    assert "qwen3_8b+qwen2.5_7b_Fuser" in pairs  # and the spec's table
    assert hub.local_pair_path(PAIR) == path
    assert hub.download_pair(PAIR, with_models=True) == path
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        hub.download_pair(EXTRA_PAIR)
    assert fake_hub.log == []  # not one request


def test_unreachable_hub_falls_back_to_the_cache(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    pairs = {p.name: p for p in hub.list_pairs()}
    assert set(hub.KNOWN_PAIRS) <= set(pairs)
    assert all(not p.online and p.status == "absent" and p.size_bytes is None for p in pairs.values())
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        hub.download_pair(PAIR)


def closed_port() -> int:
    """A local port nothing listens on: bound once, then let go."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("where", ["closed port", "bad host"])
def test_an_unreachable_hub_is_said_as_such_with_what_to_do(fake_hub: FakeHub, hf_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Offline (or a bad HF_ENDPOINT, DNS, a proxy): the Hub was never reached, so nothing was "lost"; the message
    names the endpoint and the ways on, in the library, the CLI and (through the same text) the app."""
    url = f"http://127.0.0.1:{closed_port()}" if where == "closed port" else "http://c2c-no-such-host.invalid"
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(DownloadError) as err:
        hub.download_pair(EXTRA_PAIR)
    text = str(err.value)
    assert text.startswith(f"Cannot reach the Hub at {url} (HF_ENDPOINT)") and "Lost the connection" not in text
    for fix in ("offline", "DNS", "proxy", "HTTPS_PROXY", "HF_ENDPOINT", "local fuser folder"):
        assert fix in text
    done = cli(["fuser", "download", EXTRA_PAIR], {**os.environ})
    assert done.returncode == 2 and f"Cannot reach the Hub at {url}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_gated_model_asks_for_a_login(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AuthError) as err:
        hub.download_pair(GATED_PAIR, with_models=True)
    message = str(err.value)
    assert GATED in message and "hf auth login" in message and "HF_TOKEN" in message
    assert not [p for p in fake_hub.gets() if p.endswith((".pt", ".safetensors"))]  # failed before the big files

    monkeypatch.setenv("HF_TOKEN", "hf_expired_or_revoked")
    with pytest.raises(AuthError, match="expired") as err:
        hub.download_pair(GATED_PAIR, with_models=True)
    assert "hf auth login" in str(err.value)

    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)  # read at call time
    path = hub.download_pair(GATED_PAIR, with_models=True)
    assert "model.safetensors" in fake_hub.gets(GATED)
    assert hub.local_pair_path(GATED_PAIR) == path


def test_remove_keeps_blobs_another_pair_shares(fake_hub: FakeHub) -> None:
    hub.download_pair(GATED_PAIR)
    extra = hub.download_pair(EXTRA_PAIR)
    repo = fake_hub.repos[REPO]
    shared = {repo.etag(p) for p in pair_files(fake_hub, GATED_PAIR)}
    unique = {repo.etag(p): len(b) for p, b in pair_files(fake_hub, EXTRA_PAIR).items() if repo.etag(p) not in shared}
    assert unique and len(unique) < len(pair_files(fake_hub, EXTRA_PAIR))  # the two tiny pairs share weights

    assert hub.remove_pair(EXTRA_PAIR) == sum(unique.values())
    assert not extra.exists() and hub.local_pair_path(EXTRA_PAIR) is None
    assert status(EXTRA_PAIR) == "absent"
    kept = hub.local_pair_path(GATED_PAIR)
    assert kept is not None
    assert_same_files(kept, pair_files(fake_hub, GATED_PAIR), f"{GATED_PAIR}/")
    assert hub.remove_pair(EXTRA_PAIR) == 0


def test_asking_for_a_missing_pair_after_a_new_commit_keeps_the_cache_readable(
        fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hub.download_pair(EXTRA_PAIR)
    old = fake_hub.repos[REPO]
    monkeypatch.setitem(fake_hub.repos, REPO, Repo({**old.files, "NEWS.md": b"a new commit\n"}))

    with pytest.raises(DownloadError, match="no pair named 'no_such_Fuser'"):
        hub.download_pair("no_such_Fuser")

    # no ref to the new commit without a snapshot: scan_cache_dir would report the whole repo as corrupt
    assert hub.local_pair_path(EXTRA_PAIR) == path
    assert status(EXTRA_PAIR, offline=True) == "complete"


def test_a_pair_fetched_without_a_listing_is_judged_by_its_layout(fake_hub: FakeHub,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import hf_hub_download

    # fetched file by file, as another tool or an older client does: no tree listing in the cache
    for path in pair_files(fake_hub, EXTRA_PAIR):
        hf_hub_download(REPO, path, cache_dir=hub.cache_dir(), endpoint=fake_hub.url)
    folder = hub.cache_dir() / "models--nics-efc--C2C_Fuser" / "snapshots" / fake_hub.repos[REPO].sha / EXTRA_PAIR
    assert not (hub.cache_dir() / "models--nics-efc--C2C_Fuser" / "trees").exists()
    go_offline(monkeypatch)
    fake_hub.reset()

    assert hub.local_pair_path(EXTRA_PAIR) == folder
    listing = {p.name: p for p in hub.list_pairs()}[EXTRA_PAIR]
    assert listing.status == "complete" and (listing.receiver, listing.sharer) == (RECEIVER, SHARER)
    (folder / "final" / "projector_0.pt").unlink()  # a fuser the layer map names is missing
    assert hub.local_pair_path(EXTRA_PAIR) is None
    assert status(EXTRA_PAIR) == "partial"
    assert fake_hub.log == []


def test_cli_list_download_remove(fake_hub: FakeHub, hf_home: Path) -> None:
    env = {**os.environ}
    done = cli(["fuser", "download", EXTRA_PAIR], env)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == hub.local_pair_path(EXTRA_PAIR)
    assert "fuser" in done.stderr and "files" in done.stderr  # the progress bar

    done = cli(["fuser", "list"], env)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith(EXTRA_PAIR))
    assert line.split()[-1] == "complete" and RECEIVER in line and SHARER in line
    assert next(line for line in done.stdout.splitlines() if line.startswith(PAIR)).split()[-1] == "absent"

    done = cli(["fuser", "remove", EXTRA_PAIR], env)
    assert done.returncode == 0 and "freed" in done.stdout, done.stderr
    assert hub.local_pair_path(EXTRA_PAIR) is None

    done = cli(["fuser", "download", "no_such_Fuser"], env)
    assert done.returncode == 2 and "no pair named 'no_such_Fuser'" in done.stderr
