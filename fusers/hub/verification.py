"""Checks around a download: each file against the repo's tree listing (size, and sha256 for LFS files or the git
blob sha1 for others; huggingface_hub checks only the byte count), and free disk space before it starts."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import DiskSpaceError, DownloadError
from .environment import PAIR_CONFIG, endpoint
from .format import format_bytes

DISK_RESERVE_BYTES = 256 * 2**20  # kept free after a download, so the cache never fills the disk to the byte


@dataclass(frozen=True)
class RepoEntry:
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


def entries_of(files: Iterable[Any], repo_id: str, commit: str) -> list[RepoEntry]:
    from huggingface_hub.hf_api import RepoFile

    return [RepoEntry(repo_id, commit, f.path, int(f.size), str(f.blob_id), f.lfs.sha256 if f.lfs is not None else None)
            for f in files if isinstance(f, RepoFile)]


def folder_entries(entries: Iterable[RepoEntry], name: str) -> list[RepoEntry]:
    return [e for e in entries if e.path.startswith(name + "/")]


def pair_names(entries: Iterable[RepoEntry]) -> set[str]:
    """The pair folders of a listing of the fuser repo: top-level folders with a config.json."""
    return {e.path.split("/", 1)[0] for e in entries if e.path.count("/") == 1 and e.path.endswith("/" + PAIR_CONFIG)}


def hash_file(path: Path, entry: RepoEntry) -> tuple[str, str]:
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


def verify(entry: RepoEntry, path: Path) -> None:
    """Reject a downloaded file that differs from the tree listing; a rejected file leaves the cache."""
    problem = None
    size = path.stat().st_size
    if size != entry.size:
        problem = f"it has {size} bytes, the repo listing says {entry.size}"
    else:
        algorithm, digest = hash_file(path, entry)
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


def free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk_space(needed: int, where: Path, reserve: int = DISK_RESERVE_BYTES) -> None:
    """Raise :class:`DiskSpaceError` unless ``needed`` bytes fit at ``where`` with ``reserve`` bytes left over."""
    free = free_bytes(where)
    if needed + reserve > free:
        short = needed + reserve - free
        raise DiskSpaceError(
            f"Not enough disk space in {where}: the download needs {format_bytes(needed)} and "
            f"{format_bytes(reserve)} must stay free, but only {format_bytes(free)} is free "
            f"({format_bytes(short)} short). Free some space, or point HF_HOME (or HF_HUB_CACHE) at a bigger disk."
        )
