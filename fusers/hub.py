"""Published fusers on the Hub: list the pairs of ``nics-efc/C2C_Fuser``, download one (and its models), remove it.

Everything lives in the standard Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), so a pair
downloaded here is also what ``huggingface_hub`` and ``transformers`` find, and the reverse. ``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read when a function is called, not at import.

What ``huggingface_hub`` 2.x does for us and what we add:

- It downloads each file to a unique temporary file and renames it into ``blobs/`` only when complete, so a
  partial file is never in the cache. A dropped connection is resumed inside the same call with an HTTP
  ``Range`` request (a few retries); a later call restarts an unfinished file from zero. Finished files are
  never fetched again: we skip files already in the snapshot.
- It checks the byte count against the size the server announced (``HEAD``), nothing more: it does not hash
  what it downloaded. We check every downloaded file against the repo tree listing: its size, and its sha256
  (LFS files) or git blob sha1 (other files). A file that fails is deleted from the cache and the download
  fails with :class:`~fusers.errors.DownloadError`.
- It only warns about disk space per file; we check free space against the whole remaining download first
  (:class:`~fusers.errors.DiskSpaceError`).

This module never imports torch: ``c2c fuser list`` stays fast.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import AuthError, Cancelled, DiskSpaceError, DownloadError

REPO_ID = "nics-efc/C2C_Fuser"
REVISION = "main"
PAIR_CONFIG = "config.json"  # checkpoint.PUBLISHED_CONFIG; not imported from there to keep torch out

# The pairs the spec lists, for offline listings and for naming the models without fetching config.json.
KNOWN_PAIRS: dict[str, tuple[str, str]] = {
    "qwen3_0.6b+qwen2.5_0.5b_Fuser": ("Qwen/Qwen3-0.6B", "Qwen/Qwen2.5-0.5B-Instruct"),
    "qwen3_0.6b+llam3.2_1b_Fuser": ("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct"),
    "qwen3_0.6b+qwen2.5_1.5b_math_Fuser": ("Qwen/Qwen3-0.6B", "Qwen/Qwen2.5-Math-1.5B"),
    "qwen3_0.6b+qwen3_4b_Fuser": ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B"),
    "qwen3_0.6b+qwen3_4b_base_Fuser": ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B-Base"),
    "qwen3_1.7b+qwen2.5_1.5b_Fuser": ("Qwen/Qwen3-1.7B", "Qwen/Qwen2.5-1.5B-Instruct"),
    "qwen3_8b+qwen2.5_7b_Fuser": ("Qwen/Qwen3-8B", "Qwen/Qwen2.5-7B-Instruct"),
}

# Files of a model repo that transformers needs; root level only, so ONNX exports, GGUF files and the
# original/ consolidated checkpoints (gigabytes each) are never fetched.
MODEL_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
MODEL_FALLBACK_PATTERNS = ("*.bin",)  # only for repos without safetensors weights
DISK_RESERVE_BYTES = 256 * 2**20  # kept free after a download, so the cache never fills the disk to the byte
MAX_WORKERS = 4
PROGRESS_INTERVAL_S = 0.1
CONFIG_FETCH_LIMIT = 1 << 20  # listing reads a pair's config.json over HTTP only when it is this small
STALE_PARTIAL_S = 3600.0  # a temporary download file untouched this long was left by a killed process

STAGES = ("fuser", "receiver", "sharer")
STATUSES = ("absent", "partial", "complete")


@dataclass(frozen=True)
class PairListing:
    """One pair folder of the fuser repo. ``size_bytes`` is None when only the spec's table knows the pair."""

    name: str
    receiver: str
    sharer: str
    size_bytes: int | None
    files: int | None
    status: str  # "absent" | "partial" | "complete" (in the local cache)
    online: bool = True  # False: listed from the cache and the known table (offline or the Hub unreachable)
    local_bytes: int = 0  # bytes of its files already in the cache


@dataclass(frozen=True)
class FileProgress:
    repo_id: str
    path: str
    done: int
    total: int


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot of a running download; sent to the ``progress`` callback from download threads."""

    stage: str  # "fuser" | "receiver" | "sharer"
    repo_id: str
    file: str  # the file this update is about ("" for start/end updates)
    file_done: int
    file_total: int
    done: int  # bytes in the cache out of ``total``, files already there included
    total: int
    files_done: int
    files_total: int
    rate: float  # bytes/s over the last seconds, 0.0 until known
    eta: float | None  # seconds, None until a rate is known
    elapsed: float
    active: tuple[FileProgress, ...] = ()  # files being fetched right now
    finished: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def describe(self) -> str:
        eta = f", {format_duration(self.eta)} left" if self.eta is not None and not self.finished else ""
        rate = f", {format_bytes(self.rate)}/s" if self.rate else ""
        return f"{self.stage}: {format_bytes(self.done)} of {format_bytes(self.total)}{rate}{eta}"


ProgressCallback = Callable[[DownloadProgress], None]


# -- environment, read at call time ---------------------------------------------------------------------------

def cache_dir() -> Path:
    """The Hugging Face hub cache this process uses, from the environment as it is now."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    return Path(constants.HF_HUB_CACHE)


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else HF_HUB_OFFLINE (the environment now, or as huggingface_hub read it at import)."""
    if offline is not None:
        return offline
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    # huggingface_hub refuses every request once it has read HF_HUB_OFFLINE=1 at import, whatever the env says now.
    return env in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())  # token: HF_TOKEN or the saved login, looked up per request


def _storage(repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")


# -- small helpers ------------------------------------------------------------------------------------------

def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in {".", ".."} or name.startswith("."):
        raise DownloadError(f"{name!r} is not a pair name; `c2c fuser list` shows the pairs (e.g. "
                            f"{next(iter(KNOWN_PAIRS))}).")
    return name


@dataclass(frozen=True)
class _Entry:
    """A file of a repo at one commit, as the tree listing describes it."""

    repo_id: str
    commit: str
    path: str
    size: int
    blob_id: str
    sha256: str | None  # LFS files

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


def _entries(files: Iterable[Any], repo_id: str, commit: str) -> list[_Entry]:
    from huggingface_hub.hf_api import RepoFile

    out = []
    for f in files:
        if isinstance(f, RepoFile):
            out.append(_Entry(repo_id, commit, f.path, int(f.size), str(f.blob_id),
                              f.lfs.sha256 if f.lfs is not None else None))
    return out


def _snapshot_file(entry: _Entry) -> Path:
    return _storage(entry.repo_id) / "snapshots" / entry.commit / entry.path


def _present(entry: _Entry) -> bool:
    """The file is in the cache's snapshot of its commit.

    Presence is enough: huggingface_hub only ever renames whole files into the cache, and we verify each one
    against the Hub's listing when it arrives (and delete it if it fails).
    """
    return _snapshot_file(entry).is_file()


def _hash_file(path: Path, entry: _Entry) -> tuple[str, str]:
    """(algorithm, hex digest) the tree listing's id uses for this file: sha256 for LFS, git blob sha1 otherwise."""
    if entry.sha256:
        h = hashlib.sha256()
        algorithm = "sha256"
    else:
        h = hashlib.sha1()
        h.update(b"blob %d\0" % path.stat().st_size)  # git's blob id
        algorithm = "git sha1"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return algorithm, h.hexdigest()


def _verify(entry: _Entry, path: Path) -> None:
    """Reject a downloaded file that differs from the tree listing; a rejected file leaves the cache."""
    problem = None
    size = path.stat().st_size
    if size != entry.size:
        problem = f"it has {size} bytes, the repo listing says {entry.size}"
    else:
        algorithm, digest = _hash_file(path, entry)
        expected = entry.etag.lower()
        if digest != expected:
            problem = f"its {algorithm} is {digest[:12]}…, the repo listing says {expected[:12]}…"
    if problem is None:
        return
    _delete_cached(path)
    raise DownloadError(
        f"{entry.repo_id}/{entry.path} from {endpoint()} failed verification ({problem}); the file was deleted. "
        "Run the download again; if it fails the same way, the server or a proxy is serving wrong files."
    )


def _delete_cached(pointer: Path) -> None:
    blob = Path(os.path.realpath(pointer))
    pointer.unlink(missing_ok=True)
    if blob != pointer:
        blob.unlink(missing_ok=True)


def _free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk_space(needed: int, where: Path, reserve: int = DISK_RESERVE_BYTES) -> None:
    """Raise :class:`DiskSpaceError` unless ``needed`` bytes fit at ``where`` with ``reserve`` bytes left over."""
    free = _free_bytes(where)
    if needed + reserve > free:
        short = needed + reserve - free
        raise DiskSpaceError(
            f"Not enough disk space in {where}: the download needs {format_bytes(needed)} and "
            f"{format_bytes(reserve)} must stay free, but only {format_bytes(free)} is free "
            f"({format_bytes(short)} short). Free some space, or point HF_HOME (or HF_HUB_CACHE) at a bigger disk."
        )


def _translate(exc: BaseException, what: str, repo_id: str | None = None) -> DownloadError:
    """A typed error with a fix for an exception from huggingface_hub or the network."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    login = "log in with `hf auth login` or set HF_TOKEN to a token that can read it"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError):
        page = f"{endpoint()}/{repo_id}" if repo_id else "its Hub page"
        return AuthError(f"{what} is gated: accept its licence on {page}, then {login}.")
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return AuthError(f"{what} needs a valid Hugging Face token (missing or expired): {login}.")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(f"{what} was not found on {endpoint()}; check the name (or, if it is private, {login}).")
    if isinstance(exc, (RevisionNotFoundError, RemoteEntryNotFoundError)):
        return DownloadError(f"{what} was not found on {endpoint()} ({first}).")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return AuthError(f"{what}: access refused (403); your token lacks read access: {login}.")
    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return DownloadError(f"{what} is not in the cache and downloads are off (HF_HUB_OFFLINE) or the Hub "
                             f"({endpoint()}) cannot be reached. Go online and download it again.")
    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return DownloadError(f"Lost the connection to {endpoint()} while fetching {what} ({first}). Run the download "
                             "again: finished files are kept.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskSpaceError(f"The disk filled up (or a quota or file-size limit was reached) while fetching {what}. "
                              "Free some space and download again: finished files are kept.")
    return DownloadError(f"Could not fetch {what} from {endpoint()}: {first}")


def _is_connection_error(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is not None and status >= 500
    return isinstance(exc, (httpx2.TransportError, OfflineModeIsEnabled, ConnectionError, TimeoutError))


# -- the cache, offline ------------------------------------------------------------------------------------

def _cached_commits(repo_id: str) -> list[str]:
    """Commits with a snapshot in the cache: the one ``main`` points to first, then newest first."""
    storage = _storage(repo_id)
    commits = []
    ref = storage / "refs" / REVISION
    if ref.is_file():
        commits.append(ref.read_text().strip())
    snaps = storage / "snapshots"
    if snaps.is_dir():
        others = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        commits += [p.name for p in others if p.name not in commits]
    return commits


def _cached_tree(repo_id: str, commit: str) -> list[_Entry] | None:
    """The repo's file listing at ``commit`` as snapshot_download cached it, or None."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        files = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir())
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None
    return _entries(files, repo_id, commit)


def _folder_entries(entries: Iterable[_Entry], name: str) -> list[_Entry]:
    return [e for e in entries if e.path.startswith(name + "/")]


def _layout_complete(folder: Path) -> bool:
    """Without a cached listing: the published layout is whole (config, layer map, every fuser it names)."""
    final = folder / "final"
    try:
        json.loads((folder / PAIR_CONFIG).read_text())
        links = json.loads((final / "projector_config.json").read_text())["0"]["1"]
        indices = {int(pairs[0][1]) for pairs in links.values()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
    return bool(indices) and all(
        (final / f"projector_{i}.json").is_file() and (final / f"projector_{i}.pt").is_file() for i in indices
    )


def local_pair_path(name: str) -> Path | None:
    """The folder of a completely downloaded pair in the cache, else None. Never touches the network."""
    try:
        _check_name(name)
    except DownloadError:
        return None
    storage = _storage(REPO_ID)
    for commit in _cached_commits(REPO_ID):
        folder = storage / "snapshots" / commit / name
        if not folder.is_dir():
            continue
        tree = _cached_tree(REPO_ID, commit)
        files = _folder_entries(tree, name) if tree is not None else None
        if files:
            if all(_present(e) for e in files):
                return folder
        elif tree is None and _layout_complete(folder):
            return folder
    return None


def _select_model_files(entries: list[_Entry]) -> list[_Entry]:
    root = [e for e in entries if "/" not in e.path]
    chosen = [e for e in root if any(fnmatch(e.path, p) for p in MODEL_PATTERNS)]
    if not any(e.path.endswith(".safetensors") for e in chosen):
        chosen += [e for e in root if any(fnmatch(e.path, p) for p in MODEL_FALLBACK_PATTERNS)]
    return chosen


def _model_cached(repo_id: str) -> bool:
    for commit in _cached_commits(repo_id):
        tree = _cached_tree(repo_id, commit)
        if tree is not None:
            files = _select_model_files(tree)
            return bool(files) and all(_present(e) for e in files)
        snapshot = _storage(repo_id) / "snapshots" / commit
        if (snapshot / "config.json").is_file() and any(snapshot.glob("*.safetensors")):
            return True  # fetched by another tool that kept no listing
    return False


def _read_pair_models(config_text: str) -> tuple[str, str] | None:
    try:
        model = json.loads(config_text)["model"]
        return str(model["base_model"]), str(model["teacher_model"])
    except (ValueError, KeyError, TypeError):
        return None


def _cached_pair_models(name: str) -> tuple[str, str] | None:
    storage = _storage(REPO_ID)
    for commit in _cached_commits(REPO_ID):
        config = storage / "snapshots" / commit / name / PAIR_CONFIG
        if config.is_file():
            found = _read_pair_models(config.read_text(errors="replace"))
            if found:
                return found
    return None


def _local_bytes(files: list[_Entry]) -> int:
    return sum(e.size for e in files if _present(e))


def _status(files: list[_Entry]) -> str:
    present = sum(_present(e) for e in files)
    return "absent" if present == 0 else "complete" if present == len(files) else "partial"


# -- listing ----------------------------------------------------------------------------------------------

def list_pairs(offline: bool | None = None) -> list[PairListing]:
    """The pairs in ``nics-efc/C2C_Fuser`` with size and local status; from the cache when offline or unreachable."""
    if not is_offline(offline):
        try:
            return _list_online()
        except Exception as exc:  # noqa: BLE001 - only an unreachable Hub falls back, anything else is raised typed
            if not _is_connection_error(exc):
                if isinstance(exc, DownloadError):
                    raise
                raise _translate(exc, REPO_ID, REPO_ID) from exc
    return _list_cached()


def _list_online() -> list[PairListing]:
    api = _api()
    commit = api.model_info(REPO_ID, revision=REVISION).sha
    entries = _entries(api.list_repo_tree(REPO_ID, recursive=True, revision=commit), REPO_ID, commit)
    folders = sorted({e.path.split("/", 1)[0] for e in entries if e.path.count("/") >= 1
                      and e.path.split("/", 1)[1] == PAIR_CONFIG})
    out = []
    for name in folders:
        files = _folder_entries(entries, name)
        models = _cached_pair_models(name) or KNOWN_PAIRS.get(name) or _fetch_pair_models(name, files)
        receiver, sharer = models or ("?", "?")
        out.append(PairListing(name, receiver, sharer, sum(e.size for e in files), len(files), _status(files),
                               local_bytes=_local_bytes(files)))
    return out


def _fetch_pair_models(name: str, files: list[_Entry]) -> tuple[str, str] | None:
    """Read a small config.json straight from the server, without putting it in the cache (listing only)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    config = next((e for e in files if e.path == f"{name}/{PAIR_CONFIG}"), None)
    if config is None or config.size > CONFIG_FETCH_LIMIT:
        return None
    url = hf_hub_url(REPO_ID, config.path, revision=config.commit, endpoint=endpoint())
    try:
        response = get_session().get(url, headers=build_hf_headers(), follow_redirects=True, timeout=10)
        response.raise_for_status()
        return _read_pair_models(response.text)
    except Exception:  # noqa: BLE001 - the names are a nicety; the listing goes on with "?"
        return None


def _list_cached() -> list[PairListing]:
    out: dict[str, PairListing] = {}
    storage = _storage(REPO_ID)
    for commit in reversed(_cached_commits(REPO_ID)):  # the newest listing wins
        tree = _cached_tree(REPO_ID, commit)
        if tree is None:
            continue
        names = {e.path.split("/", 1)[0] for e in tree if e.path.count("/") >= 1
                 and e.path.split("/", 1)[1] == PAIR_CONFIG}
        for name in names:
            files = _folder_entries(tree, name)
            receiver, sharer = _cached_pair_models(name) or KNOWN_PAIRS.get(name) or ("?", "?")
            state = "complete" if local_pair_path(name) else _status(files)  # an older complete copy counts offline
            out[name] = PairListing(name, receiver, sharer, sum(e.size for e in files), len(files), state,
                                    online=False, local_bytes=_local_bytes(files))
    for name, (receiver, sharer) in KNOWN_PAIRS.items():
        out.setdefault(name, PairListing(name, receiver, sharer, None, None, "absent", online=False))
    for commit in _cached_commits(REPO_ID):  # pairs fetched by other tools, without a cached listing
        snap = storage / "snapshots" / commit
        for folder in sorted(snap.iterdir()) if snap.is_dir() else ():
            known = out.get(folder.name)
            if not (folder / PAIR_CONFIG).is_file() or (known is not None and known.size_bytes is not None):
                continue
            status = "complete" if local_pair_path(folder.name) else "partial"
            receiver, sharer = _cached_pair_models(folder.name) or KNOWN_PAIRS.get(folder.name) or ("?", "?")
            out[folder.name] = PairListing(folder.name, receiver, sharer, None, None, status, online=False)
    return sorted(out.values(), key=lambda p: p.name)


# -- downloading ------------------------------------------------------------------------------------------

@dataclass
class _Job:
    stage: str
    entry: _Entry
    present: bool
    done: int = 0


@dataclass
class _Run:
    """Shared state of one download: byte counters, rate, cancellation. Updated from worker threads."""

    jobs: list[_Job]
    progress: ProgressCallback | None
    cancel: threading.Event
    abort: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    start: float = field(default_factory=time.monotonic)
    transferred: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=64))
    active: dict = field(default_factory=dict)  # path -> _Job
    stage: str = "fuser"
    repo_id: str = REPO_ID
    last_emit: float = 0.0

    @property
    def total(self) -> int:
        return sum(j.entry.size for j in self.jobs)

    def check(self) -> None:
        if self.cancel.is_set() or self.abort.is_set():
            raise _Aborted()

    def add(self, job: _Job, n: int) -> None:
        with self.lock:
            first = job.done == 0 and n > 0  # always shown: the file has started to arrive
            job.done += n
            self.transferred += n
            now = time.monotonic()
            self.samples.append((now, self.transferred))
            self._emit(job, force=first, now=now)
        self.check()  # after counting, so a cancelled chunk is visible; the client then deletes the partial file

    def begin(self, job: _Job) -> None:
        with self.lock:
            self.active[(job.entry.repo_id, job.entry.path)] = job
            self._emit(job, force=True)

    def end(self, job: _Job, ok: bool) -> None:
        with self.lock:
            self.active.pop((job.entry.repo_id, job.entry.path), None)
            if ok:
                job.done = job.entry.size  # also when the client only linked a blob it already had
                job.present = True
            else:
                self.transferred -= job.done  # the partial file is gone
                job.done = 0
            self._emit(job, force=True)

    def rate(self, now: float) -> float:
        """Bytes per second over the last few seconds (over the whole run until then)."""
        recent = [(t, b) for t, b in self.samples if now - t <= 5.0]
        if len(recent) >= 2 and recent[-1][0] - recent[0][0] >= 0.5:
            (t0, b0), (t1, b1) = recent[0], recent[-1]
            return max(0.0, (b1 - b0) / (t1 - t0))
        elapsed = now - self.start
        return self.transferred / elapsed if elapsed >= 0.2 and self.transferred > 0 else 0.0

    def snapshot(self, job: _Job | None, finished: bool = False, now: float | None = None) -> DownloadProgress:
        now = time.monotonic() if now is None else now
        done = sum(j.entry.size if j.present else j.done for j in self.jobs)
        total = self.total
        rate = self.rate(now)
        eta = (total - done) / rate if rate > 0 else (0.0 if done >= total else None)
        return DownloadProgress(
            stage=job.stage if job else self.stage,
            repo_id=job.entry.repo_id if job else self.repo_id,
            file=job.entry.path if job else "",
            file_done=job.done if job else 0,
            file_total=job.entry.size if job else 0,
            done=done,
            total=total,
            files_done=sum(j.present for j in self.jobs),
            files_total=len(self.jobs),
            rate=rate,
            eta=eta,
            elapsed=now - self.start,
            active=tuple(FileProgress(j.entry.repo_id, j.entry.path, j.done, j.entry.size)
                         for j in self.active.values()),
            finished=finished,
        )

    def _emit(self, job: _Job | None, force: bool, now: float | None = None) -> None:
        if self.progress is None:
            return
        now = time.monotonic() if now is None else now
        if not force and now - self.last_emit < PROGRESS_INTERVAL_S:
            return
        self.last_emit = now
        self.progress(self.snapshot(job, now=now))

    def emit_stage(self, stage: str, repo_id: str, finished: bool = False) -> None:
        with self.lock:
            self.stage, self.repo_id = stage, repo_id
            if self.progress is not None:
                self.progress(self.snapshot(None, finished=finished))


class _Aborted(Exception):
    """Raised inside huggingface_hub's progress hook to stop a transfer (cancel, or another file failed)."""


def _progress_class(run: _Run, job: _Job) -> type:
    """A tqdm stand-in for one file: huggingface_hub calls it with total/initial and feeds it byte counts."""

    class FileBar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial
            self.total = total
            if initial:
                run.add(job, initial)

        def __enter__(self) -> "FileBar":
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def update(self, n: int | float | None = 1) -> None:
            n = int(n or 0)
            self.n += n
            run.add(job, n)

        def update_transfer(self, n: int | float | None = 1) -> None:
            run.check()  # network bytes (Xet): counted through update(), only used to stop quickly

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

        set_transfer_postfix_str = set_postfix_str
        set_description = set_postfix_str
        set_description_str = set_postfix_str

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

    return FileBar


def _quiet_class() -> type:
    """A tqdm that shows nothing, for the small bookkeeping calls."""
    from tqdm.auto import tqdm

    class Quiet(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def _fetch_one(run: _Run, job: _Job) -> None:
    from huggingface_hub import hf_hub_download

    run.check()
    run.begin(job)
    ok = False
    try:
        path = hf_hub_download(
            job.entry.repo_id, job.entry.path, revision=job.entry.commit, cache_dir=cache_dir(),
            endpoint=endpoint(), tqdm_class=_progress_class(run, job),
        )
        _verify(job.entry, Path(path))
        ok = True
    except (_Aborted, DownloadError):
        raise
    except Exception as exc:  # noqa: BLE001 - typed with a fix for the user
        raise _translate(exc, f"{job.entry.repo_id}/{job.entry.path}", job.entry.repo_id) from exc
    finally:
        run.end(job, ok)


def _fetch(run: _Run, jobs: list[_Job], max_workers: int) -> None:
    todo = [j for j in jobs if not j.present]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(todo))), thread_name_prefix="c2c-download") as pool:
        futures: list[Future] = [pool.submit(_fetch_one, run, job) for job in todo]
        try:
            while True:
                done, pending = wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None and not isinstance(f.exception(), _Aborted)]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                if not pending:
                    break
                if run.cancel.is_set():
                    raise Cancelled("Download cancelled; finished files stay in the cache and are not fetched again.")
                if any(isinstance(f.exception(), _Aborted) for f in done):
                    raise Cancelled("Download cancelled; finished files stay in the cache and are not fetched again.")
        except BaseException:
            run.abort.set()  # the other transfers stop at their next chunk and delete their partial files
            for f in futures:
                f.cancel()
            wait(futures)
            raise
    if run.cancel.is_set() and any(not j.present for j in jobs):
        raise Cancelled("Download cancelled; finished files stay in the cache and are not fetched again.")


def sweep_stale_partials(repo_id: str, older_than_s: float = STALE_PARTIAL_S) -> int:
    """Delete temporary files a killed download left in a repo's ``blobs/``; returns the bytes freed.

    huggingface_hub deletes its temporary file when a download fails or is cancelled, but not when the process
    is killed; nothing ever reuses such a file. One untouched for ``older_than_s`` belongs to no live download.
    """
    freed = 0
    now = time.time()
    for path in (_storage(repo_id) / "blobs").glob("*.incomplete"):
        try:
            stat = path.stat()
            if now - stat.st_mtime > older_than_s:
                path.unlink()
                freed += stat.st_size
        except OSError:
            pass
    return freed


def _resolve_repo(repo_id: str, first_file: str) -> Path:
    """Fix the commit ``main`` points to and fetch one small file through snapshot_download.

    Besides ``first_file`` this records ``refs/main`` and the repo's file listing in the cache, which is what lets
    the pair (and the models) be found offline later. Returns the snapshot folder, named after the commit.
    """
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=[first_file], cache_dir=cache_dir(), endpoint=endpoint(),
                                  tqdm_class=_quiet_class(), max_workers=1))


def _plan_pair(name: str) -> tuple[Path, list[_Entry]]:
    snapshot = _resolve_repo(REPO_ID, f"{name}/{PAIR_CONFIG}")
    commit = snapshot.name
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        files = _entries(_api().list_repo_tree(REPO_ID, path_in_repo=name, recursive=True, revision=commit),
                         REPO_ID, commit)
    except RemoteEntryNotFoundError:
        files = []
    files = _folder_entries(files, name)
    config = next((e for e in files if e.path == f"{name}/{PAIR_CONFIG}"), None)
    if config is None or not (snapshot / config.path).is_file():
        known = ", ".join(KNOWN_PAIRS)
        raise DownloadError(f"{REPO_ID} has no pair named {name!r}. `c2c fuser list` shows the pairs ({known}).")
    _verify(config, snapshot / config.path)  # fetched by snapshot_download above, so not checked by _fetch_one
    return snapshot / name, files


def _plan_model(repo_id: str) -> list[_Entry]:
    snapshot = _resolve_repo(repo_id, "config.json")
    files = _select_model_files(_entries(_api().list_repo_tree(repo_id, recursive=True, revision=snapshot.name),
                                         repo_id, snapshot.name))
    for entry in files:
        if entry.path == "config.json":
            _verify(entry, snapshot / entry.path)
    if not any(e.path.endswith((".safetensors", ".bin")) for e in files):
        raise DownloadError(f"{repo_id} has no weights in safetensors or PyTorch format; it cannot be loaded.")
    return files


def download_pair(
    name: str,
    with_models: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    *,
    reserve_bytes: int = DISK_RESERVE_BYTES,
    max_workers: int = MAX_WORKERS,
) -> Path:
    """Download a published pair into the HF cache (and, with ``with_models``, its receiver and sharer).

    Returns the complete pair folder. ``progress`` is called from download threads with a
    :class:`DownloadProgress`; ``cancel`` stops the download (raising :class:`Cancelled`) and leaves only whole,
    verified files in the cache, which a later call does not fetch again. Free disk space is checked against
    the remaining bytes plus ``reserve_bytes`` before anything large is fetched.
    """
    _check_name(name)
    cancel = cancel or threading.Event()
    if is_offline():
        return _download_offline(name, with_models)
    stage_of: list[tuple[str, str, list[_Entry]]] = []
    try:
        folder, pair_files = _plan_pair(name)
        stage_of.append(("fuser", REPO_ID, pair_files))
        if with_models:
            models = _read_pair_models((folder / PAIR_CONFIG).read_text(errors="replace"))
            if models is None:
                raise DownloadError(f"{folder / PAIR_CONFIG} names no model.base_model / model.teacher_model; "
                                    "download the models yourself and pass --receiver and --sharer.")
            seen = set()
            for stage, repo_id in zip(("receiver", "sharer"), models):
                if repo_id in seen:
                    continue
                seen.add(repo_id)
                try:
                    stage_of.append((stage, repo_id, _plan_model(repo_id)))
                except DownloadError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise _translate(exc, f"the {stage} {repo_id}", repo_id) from exc
    except (DownloadError, Cancelled):
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_connection_error(exc):
            found = local_pair_path(name)
            if found is not None and (not with_models or _pair_models_cached(found)):
                return found  # unreachable, but nothing is missing
        raise _translate(exc, f"{REPO_ID}/{name}", REPO_ID) from exc

    for _, repo_id, _ in stage_of:
        sweep_stale_partials(repo_id)
    jobs = [_Job(stage, e, _present(e)) for stage, _, files in stage_of for e in files]
    run = _Run(jobs, progress, cancel)
    check_disk_space(sum(j.entry.size for j in jobs if not j.present), cache_dir(), reserve_bytes)
    for stage, repo_id, _ in stage_of:
        if cancel.is_set():
            raise Cancelled("Download cancelled; finished files stay in the cache and are not fetched again.")
        run.emit_stage(stage, repo_id)
        _fetch(run, [j for j in jobs if j.stage == stage and j.entry.repo_id == repo_id], max_workers)
    run.emit_stage(stage_of[-1][0], stage_of[-1][1], finished=True)
    found = local_pair_path(name)
    if found is None:  # pragma: no cover - every file was fetched and verified above
        raise DownloadError(f"{name} was downloaded but is not complete in {cache_dir()}; download it again.")
    return found


def _pair_models_cached(folder: Path) -> bool:
    models = _read_pair_models((folder / PAIR_CONFIG).read_text(errors="replace"))
    return models is not None and all(_model_cached(m) for m in models)


def _download_offline(name: str, with_models: bool) -> Path:
    found = local_pair_path(name)
    if found is None:
        raise DownloadError(f"{name} is not downloaded and HF_HUB_OFFLINE is set: unset it (or go online) and "
                            "download the pair again.")
    if with_models:
        models = _read_pair_models((found / PAIR_CONFIG).read_text(errors="replace")) or ()
        missing = [m for m in models if not _model_cached(m)]
        if missing:
            raise DownloadError(f"{' and '.join(missing)} not in the cache and HF_HUB_OFFLINE is set: go online to "
                                "download the models.")
    return found


# -- removing ---------------------------------------------------------------------------------------------

def cached_pair_folders(name: str) -> list[Path]:
    """Every folder of this pair in the cache (one per commit), complete or not."""
    _check_name(name)
    snaps = _storage(REPO_ID) / "snapshots"
    return sorted(p for p in snaps.glob(f"*/{name}") if p.is_dir()) if snaps.is_dir() else []


def remove_pair(name: str) -> int:
    """Delete a downloaded pair from the cache (every snapshot). Returns the bytes freed; the models stay.

    Files another pair shares (same blob) stay in the cache and are not counted.
    """
    snaps = _storage(REPO_ID) / "snapshots"
    doomed: set[Path] = set()
    freed = 0
    for folder in cached_pair_folders(name):
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_symlink():
                doomed.add(Path(os.path.realpath(path)))
                path.unlink()
            elif path.is_file():  # a cache without symlinks holds copies
                freed += path.stat().st_size
                path.unlink()
            elif path.is_dir():
                path.rmdir()
        folder.rmdir()
    still_used = {Path(os.path.realpath(p)) for p in snaps.rglob("*") if p.is_symlink()}
    for blob in doomed - still_used:
        if blob.is_file():
            freed += blob.stat().st_size
            blob.unlink()
    return freed
