"""Published fusers on the Hub: list the pairs of ``nics-efc/C2C_Fuser``, download one (and its models), remove it.

Everything lives in the standard Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), so a pair
downloaded here is also what ``huggingface_hub`` and ``transformers`` find, and the reverse. ``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read when a function is called, not at import.

``huggingface_hub`` does the work; this module adds thin steps around it:

- Fetching is ``hf_hub_download``, one call per file: it writes each file to a unique temporary file and
  renames it into ``blobs/`` only when whole, resumes a dropped connection with a ``Range`` request, and never
  fetches a finished file again. ``snapshot_download`` fetches a pair's (or a model's) first small file and
  records ``refs/main`` and the repo's listing in the cache (what finds a pair offline later). The rest comes
  through ``hf_hub_download`` per file, in a small thread pool, not ``snapshot_download``, because that one
  hands every file the same aggregate progress bar: which file is arriving and how far it is, which the app
  and the CLI show, is lost there, and a failure or Ctrl-C does not stop the transfers still running.
- The cache is read with ``scan_cache_dir`` and emptied with ``delete_files`` / ``delete_revisions``
  (:func:`remove_pair` says which, and why).
- Added: every downloaded file is checked against the repo's tree listing (size, and sha256 for LFS files or
  the git blob sha1 for others; huggingface_hub checks only the byte count), free disk space is checked
  against the whole remaining download first, progress is reported per pair (bytes, files, rate, the files in
  flight), a ``threading.Event`` cancels, and temporary files a killed process left behind are swept.

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
from concurrent.futures import ThreadPoolExecutor, as_completed
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
CANCELLED = "Download cancelled; finished files stay in the cache and are not fetched again."


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

    return [_Entry(repo_id, commit, f.path, int(f.size), str(f.blob_id), f.lfs.sha256 if f.lfs is not None else None)
            for f in files if isinstance(f, RepoFile)]


def _folder_entries(entries: Iterable[_Entry], name: str) -> list[_Entry]:
    return [e for e in entries if e.path.startswith(name + "/")]


def _pair_names(entries: Iterable[_Entry]) -> set[str]:
    """The pair folders of a listing of the fuser repo: top-level folders with a config.json."""
    return {e.path.split("/", 1)[0] for e in entries if e.path.count("/") == 1 and e.path.endswith("/" + PAIR_CONFIG)}


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
    # The snapshot entry and its blob both go, even if another entry links the blob (delete_files would keep
    # it): the blob is named by the etag the server claimed, so every entry that links it holds the bad bytes.
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    raise DownloadError(
        f"{entry.repo_id}/{entry.path} from {endpoint()} failed verification ({problem}); the file was deleted. "
        "Run the download again; if it fails the same way, the server or a proxy is serving wrong files."
    )


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
    if isinstance(exc, _transport_errors()):
        return DownloadError(f"Lost the connection to {endpoint()} while fetching {what} ({first}). Run the download "
                             "again: finished files are kept.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskSpaceError(f"The disk filled up (or a quota or file-size limit was reached) while fetching {what}. "
                              "Free some space and download again: finished files are kept.")
    return DownloadError(f"Could not fetch {what} from {endpoint()}: {first}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed connection raises. huggingface_hub 1.x talks through httpx, 2.x through its fork httpx2:
    the module is the one behind the hub's own session, so neither is imported (nor declared) by name."""
    import importlib

    from huggingface_hub.utils import get_session

    http = importlib.import_module(type(get_session()).__module__.split(".")[0])
    return (http.TransportError, ConnectionError, TimeoutError)


def _is_connection_error(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is not None and status >= 500
    return isinstance(exc, (OfflineModeIsEnabled, *_transport_errors()))




# -- the cache, as scan_cache_dir sees it -------------------------------------------------------------------

class _Cache:
    """One ``scan_cache_dir`` of the HF cache, read by a public call from start to end."""

    def __init__(self) -> None:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        self.info = None
        for _ in range(3):  # a file another thread deletes mid-scan (a failed check, a removal) fails the scan
            try:
                self.info = scan_cache_dir(cache_dir())
                break
            except CacheNotFound:
                break
            except FileNotFoundError:
                continue

    def revisions(self, repo_id: str) -> list[Any]:
        """The repo's cached revisions (``CachedRevisionInfo``): the one ``main`` points to first, then newest."""
        repo = next((r for r in self.info.repos if r.repo_id == repo_id and r.repo_type == "model"), None) \
            if self.info is not None else None
        if repo is None:
            return []
        return sorted(repo.revisions, key=lambda r: (REVISION not in r.refs, -r.last_modified))

    def present(self, repo_id: str, commit: str) -> set[str]:
        """Paths (in the repo) of the files the cache holds at ``commit``."""
        for revision in self.revisions(repo_id):
            if revision.commit_hash == commit:
                return {f.file_path.relative_to(revision.snapshot_path).as_posix() for f in revision.files}
        return set()

    def pair_folders(self, name: str) -> list[Path]:
        return [p for r in self.revisions(REPO_ID) if (p := r.snapshot_path / name).is_dir()]


def _cached_tree(repo_id: str, commit: str) -> list[_Entry] | None:
    """The repo's file listing at ``commit`` as snapshot_download cached it, or None."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        files = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir())
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None
    return _entries(files, repo_id, commit)


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
    return _complete_pair(name, _Cache())


def _complete_pair(name: str, cache: _Cache) -> Path | None:
    for revision in cache.revisions(REPO_ID):
        folder = revision.snapshot_path / name
        if not folder.is_dir():
            continue
        tree = _cached_tree(REPO_ID, revision.commit_hash)
        files = _folder_entries(tree, name) if tree is not None else None
        if files:
            if {e.path for e in files} <= cache.present(REPO_ID, revision.commit_hash):
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


def _model_cached(repo_id: str, cache: _Cache) -> bool:
    for revision in cache.revisions(repo_id):
        tree = _cached_tree(repo_id, revision.commit_hash)
        if tree is not None:
            files = _select_model_files(tree)
            return bool(files) and {e.path for e in files} <= cache.present(repo_id, revision.commit_hash)
        snapshot = revision.snapshot_path
        if (snapshot / "config.json").is_file() and any(snapshot.glob("*.safetensors")):
            return True  # fetched by another tool that kept no listing
    return False


def _read_pair_models(config_text: str) -> tuple[str, str] | None:
    try:
        model = json.loads(config_text)["model"]
        return str(model["base_model"]), str(model["teacher_model"])
    except (ValueError, KeyError, TypeError):
        return None


def _pair_models(name: str, cache: _Cache) -> tuple[str, str] | None:
    """(receiver, sharer) from a cached copy of the pair's config.json, else the spec's table."""
    for revision in cache.revisions(REPO_ID):
        config = revision.snapshot_path / name / PAIR_CONFIG
        if config.is_file() and (found := _read_pair_models(config.read_text(errors="replace"))):
            return found
    return KNOWN_PAIRS.get(name)


def _pair_models_cached(folder: Path, cache: _Cache) -> bool:
    models = _read_pair_models((folder / PAIR_CONFIG).read_text(errors="replace"))
    return models is not None and all(_model_cached(m, cache) for m in models)


def _status(files: list[_Entry], present: set[str]) -> str:
    have = sum(e.path in present for e in files)
    return "absent" if have == 0 else "complete" if have == len(files) else "partial"


def _local_bytes(files: list[_Entry], present: set[str]) -> int:
    return sum(e.size for e in files if e.path in present)


# -- listing ----------------------------------------------------------------------------------------------

def list_pairs(offline: bool | None = None) -> list[PairListing]:
    """The pairs in ``nics-efc/C2C_Fuser`` with size and local status; from the cache when offline or unreachable."""
    cache = _Cache()
    if not is_offline(offline):
        try:
            return _list_online(cache)
        except Exception as exc:  # noqa: BLE001 - only an unreachable Hub falls back, anything else is raised typed
            if not _is_connection_error(exc):
                if isinstance(exc, DownloadError):
                    raise
                raise _translate(exc, REPO_ID, REPO_ID) from exc
    return _list_cached(cache)


def _list_online(cache: _Cache) -> list[PairListing]:
    api = _api()
    commit = api.model_info(REPO_ID, revision=REVISION).sha
    entries = _entries(api.list_repo_tree(REPO_ID, recursive=True, revision=commit), REPO_ID, commit)
    present = cache.present(REPO_ID, commit)
    out = []
    for name in sorted(_pair_names(entries)):
        files = _folder_entries(entries, name)
        receiver, sharer = _pair_models(name, cache) or _fetch_pair_models(name, files) or ("?", "?")
        out.append(PairListing(name, receiver, sharer, sum(e.size for e in files), len(files),
                               _status(files, present), local_bytes=_local_bytes(files, present)))
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


def _list_cached(cache: _Cache) -> list[PairListing]:
    out: dict[str, PairListing] = {}
    revisions = cache.revisions(REPO_ID)
    for revision in reversed(revisions):  # the newest listing wins
        tree = _cached_tree(REPO_ID, revision.commit_hash)
        present = cache.present(REPO_ID, revision.commit_hash)
        for name in _pair_names(tree or ()):
            files = _folder_entries(tree, name)
            receiver, sharer = _pair_models(name, cache) or ("?", "?")
            # an older complete copy counts offline
            state = "complete" if _complete_pair(name, cache) else _status(files, present)
            out[name] = PairListing(name, receiver, sharer, sum(e.size for e in files), len(files), state,
                                    online=False, local_bytes=_local_bytes(files, present))
    for name, (receiver, sharer) in KNOWN_PAIRS.items():
        out.setdefault(name, PairListing(name, receiver, sharer, None, None, "absent", online=False))
    for revision in revisions:  # pairs fetched by other tools, without a cached listing
        for folder in sorted(p for p in revision.snapshot_path.iterdir() if (p / PAIR_CONFIG).is_file()):
            known = out.get(folder.name)
            if known is not None and known.size_bytes is not None:
                continue
            status = "complete" if _complete_pair(folder.name, cache) else "partial"
            receiver, sharer = _pair_models(folder.name, cache) or ("?", "?")
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
    """Per-pair progress of one download (bytes, files, rate, files in flight) and its cancel flags.

    Updated from the download threads, under ``lock``.
    """

    jobs: list[_Job]
    progress: ProgressCallback | None
    cancel: threading.Event
    abort: threading.Event = field(default_factory=threading.Event)  # another file failed: stop the rest
    lock: threading.Lock = field(default_factory=threading.Lock)
    start: float = field(default_factory=time.monotonic)
    transferred: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=64))
    active: dict = field(default_factory=dict)  # (repo, path) -> _Job
    stage: str = "fuser"
    repo_id: str = REPO_ID
    last_emit: float = 0.0

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
        total = sum(j.entry.size for j in self.jobs)
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


class _NotInRepo(Exception):
    """The file a plan starts from is not in the repo (at the commit ``main`` points to)."""


def _quiet_class() -> type:
    """A tqdm that shows nothing (huggingface_hub's own bars would print over the app's and the CLI's)."""
    from tqdm.auto import tqdm

    class Quiet(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub names its own bars; plain tqdm refuses the keyword
            super().__init__(*args, **{**kwargs, "disable": True})

    return Quiet


def _file_bar_class(run: _Run, job: _Job) -> type:
    """The ``tqdm_class`` of one file's ``hf_hub_download``: its byte counts go to the run, and a cancel stops it.

    ``update_transfer`` and ``set_transfer_postfix_str`` are the two methods huggingface_hub adds to a progress
    bar it may share (snapshot_download's aggregate bar has them too): with them, a Xet download counts its bytes
    once, through ``update``, instead of opening a second bar for the network bytes.
    """

    class FileBar(_quiet_class()):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.n:  # a resumed transfer starts with the bytes it already has
                run.add(job, int(self.n))

        def update(self, n: int | float | None = 1) -> None:
            self.n += n or 0
            run.add(job, int(n or 0))

        def update_transfer(self, n: int | float | None = 1) -> None:
            run.check()

        def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

    return FileBar


def _fetch_one(run: _Run, job: _Job) -> None:
    from huggingface_hub import hf_hub_download

    run.check()
    run.begin(job)
    ok = False
    try:
        path = hf_hub_download(
            job.entry.repo_id, job.entry.path, revision=job.entry.commit, cache_dir=cache_dir(),
            endpoint=endpoint(), tqdm_class=_file_bar_class(run, job),
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
    """The missing files, ``max_workers`` at a time; the first failure (or a cancel) stops the others.

    Not huggingface_hub's ``hf_thread_map``: it lets the transfers still running finish their files before it
    raises, and these can be gigabytes. Here they stop at their next chunk.
    """
    todo = [j for j in jobs if not j.present]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(todo))), thread_name_prefix="c2c-download") as pool:
        futures = [pool.submit(_fetch_one, run, job) for job in todo]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException as exc:
            run.abort.set()  # the other transfers stop at their next chunk and delete their partial files
            for f in futures:
                f.cancel()
            if isinstance(exc, _Aborted):  # only a cancel raises it before ``abort`` is set
                raise Cancelled(CANCELLED) from None
            raise


def sweep_stale_partials(repo_id: str, cache: _Cache, older_than_s: float = STALE_PARTIAL_S) -> int:
    """Delete temporary files a killed download left in a repo's ``blobs/``; returns the bytes freed.

    huggingface_hub deletes its temporary file when a download fails or is cancelled, but not when the process
    is killed, and nothing ever reuses such a file; ``hf cache prune`` deletes them all, also those of a download
    still running. One untouched for ``older_than_s`` belongs to no live download.
    """
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    freed = 0
    now = time.time()
    for partial in cache.info.incomplete_files if cache.info is not None else ():
        path = partial.file_path
        try:
            if path.parent.parent.name == folder and now - path.stat().st_mtime > older_than_s:
                path.unlink()
                freed += partial.size_on_disk
        except OSError:
            pass
    return freed


def _plan(repo_id: str, first: str, folder: str | None = None) -> tuple[Path, list[_Entry]]:
    """The files of ``repo_id`` (under ``folder``) at the commit ``main`` points to, listed fresh by the Hub.

    ``first``, a small file of them, is fetched through snapshot_download, which also records ``refs/main``
    and the repo's listing in the cache: what finds the pair (and the models) offline later. It is looked up
    in the listing first, because a snapshot_download that matches nothing leaves a ref to a commit without a
    snapshot, a cache scan_cache_dir then reports as corrupt. Returns the snapshot folder and the files.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    api = _api()
    commit = api.model_info(repo_id, revision=REVISION).sha
    try:
        files = _entries(api.list_repo_tree(repo_id, path_in_repo=folder, recursive=True, revision=commit),
                         repo_id, commit)
    except RemoteEntryNotFoundError:
        files = []
    head = next((e for e in files if e.path == first), None)
    if head is None:
        raise _NotInRepo(first)
    snapshot = Path(snapshot_download(repo_id, revision=REVISION, allow_patterns=[first], cache_dir=cache_dir(),
                                      endpoint=endpoint(), tqdm_class=_quiet_class(), max_workers=1))
    if snapshot.name != commit:
        raise DownloadError(f"{repo_id} got a new commit while the download started; run the download again.")
    _verify(head, snapshot / first)  # fetched here, so not checked by _fetch_one
    return snapshot, files


def _plan_pair(name: str) -> tuple[Path, list[_Entry]]:
    try:
        snapshot, files = _plan(REPO_ID, f"{name}/{PAIR_CONFIG}", folder=name)
    except _NotInRepo:
        known = ", ".join(KNOWN_PAIRS)
        raise DownloadError(f"{REPO_ID} has no pair named {name!r}. `c2c fuser list` shows the pairs ({known}).") \
            from None
    return snapshot / name, files


def _plan_model(repo_id: str) -> list[_Entry]:
    try:
        _, files = _plan(repo_id, "config.json")
    except _NotInRepo:
        raise DownloadError(f"{repo_id} has no config.json; it is not a transformers model.") from None
    files = _select_model_files(files)
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
    stages: list[tuple[str, str, list[_Entry]]] = []
    try:
        folder, pair_files = _plan_pair(name)
        stages.append(("fuser", REPO_ID, pair_files))
        if with_models:
            models = _read_pair_models((folder / PAIR_CONFIG).read_text(errors="replace"))
            if models is None:
                raise DownloadError(f"{folder / PAIR_CONFIG} names no model.base_model / model.teacher_model; "
                                    "download the models yourself and pass --receiver and --sharer.")
            for stage, repo_id in zip(("receiver", "sharer"), models):
                try:
                    if repo_id not in {r for _, r, _ in stages}:  # a pair may name one model twice
                        stages.append((stage, repo_id, _plan_model(repo_id)))
                except (DownloadError, Cancelled):
                    raise
                except Exception as exc:  # noqa: BLE001 - named after the model, not the pair
                    raise _translate(exc, f"the {stage} {repo_id}", repo_id) from exc
    except (DownloadError, Cancelled):
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_connection_error(exc):
            cache = _Cache()
            found = _complete_pair(name, cache)
            if found is not None and (not with_models or _pair_models_cached(found, cache)):
                return found  # unreachable, but nothing is missing
        raise _translate(exc, f"{REPO_ID}/{name}", REPO_ID) from exc

    cache = _Cache()
    jobs = []
    for stage, repo_id, files in stages:
        sweep_stale_partials(repo_id, cache)
        present = cache.present(repo_id, files[0].commit) if files else set()
        jobs += [_Job(stage, e, e.path in present) for e in files]
    run = _Run(jobs, progress, cancel)
    check_disk_space(sum(j.entry.size for j in jobs if not j.present), cache_dir(), reserve_bytes)
    for stage, repo_id, _ in stages:
        if cancel.is_set():
            raise Cancelled(CANCELLED)
        run.emit_stage(stage, repo_id)
        _fetch(run, [j for j in jobs if j.stage == stage], max_workers)
    run.emit_stage(*stages[-1][:2], finished=True)
    found = local_pair_path(name)
    if found is None:  # pragma: no cover - every file was fetched and verified above
        raise DownloadError(f"{name} was downloaded but is not complete in {cache_dir()}; download it again.")
    return found


def _download_offline(name: str, with_models: bool) -> Path:
    cache = _Cache()
    found = _complete_pair(name, cache)
    if found is None:
        raise DownloadError(f"{name} is not downloaded and HF_HUB_OFFLINE is set: unset it (or go online) and "
                            "download the pair again.")
    if with_models:
        models = _read_pair_models((found / PAIR_CONFIG).read_text(errors="replace")) or ()
        missing = [m for m in models if not _model_cached(m, cache)]
        if missing:
            raise DownloadError(f"{' and '.join(missing)} not in the cache and HF_HUB_OFFLINE is set: go online to "
                                "download the models.")
    return found


# -- removing ---------------------------------------------------------------------------------------------

def cached_pair_folders(name: str) -> list[Path]:
    """Every folder of this pair in the cache (one per commit), complete or not."""
    _check_name(name)
    return _Cache().pair_folders(name)


def remove_pair(name: str) -> int:
    """Delete a downloaded pair from the cache (every commit of it). Returns the bytes freed; the models stay.

    The pairs of ``nics-efc/C2C_Fuser`` are folders of one repo, so they share its revisions, and the tiny ones
    share weight blobs too. ``delete_revisions`` would take every other pair of the revision with this one; so a
    revision that holds other files keeps them: ``delete_files`` unlinks this pair's snapshot entries and deletes
    only the blobs no other cached file links. A revision left with nothing but this pair goes whole through
    ``delete_revisions`` (its snapshot, its refs, its blobs no other revision links; with the repo's last
    revision, the repo folder). The cache is scanned again for each revision, so every plan sees the last one done.
    """
    _check_name(name)
    freed = 0
    for commit in [r.commit_hash for r in _Cache().revisions(REPO_ID) if (r.snapshot_path / name).is_dir()]:
        cache = _Cache()
        revision = next(r for r in cache.revisions(REPO_ID) if r.commit_hash == commit)
        folder = revision.snapshot_path / name
        ours = [f for f in revision.files if f.file_path.is_relative_to(folder)]
        if len(ours) == len(revision.files):
            plan = cache.info.delete_revisions(commit)
        else:
            plan = cache.info.delete_files(*ours)
        freed += plan.expected_freed_size
        plan.execute()
        shutil.rmtree(folder, ignore_errors=True)  # the folders delete_files leaves, empty
    return freed
