"""The Hugging Face cache as ``scan_cache_dir`` sees it: which pairs and models are whole in it (never touching the
network), what a pair names as its models, and the temporary files a killed download left."""

from __future__ import annotations

import json
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ..errors import DownloadError
from .environment import KNOWN_PAIRS, PAIR_CONFIG, REPO_ID, REVISION, cache_dir, check_name
from .verification import RepoEntry, entries_of, folder_entries

# Files of a model repo that transformers needs; root level only, so ONNX exports, GGUF files and the
# original/ consolidated checkpoints (gigabytes each) are never fetched.
MODEL_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
MODEL_FALLBACK_PATTERNS = ("*.bin",)  # only for repos without safetensors weights
STALE_PARTIAL_S = 3600.0  # a temporary download file untouched this long was left by a killed process


class CacheScan:
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


def cached_tree(repo_id: str, commit: str) -> list[RepoEntry] | None:
    """The repo's file listing at ``commit`` as snapshot_download cached it, or None."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        files = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir())
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None
    return entries_of(files, repo_id, commit)


def layout_complete(folder: Path) -> bool:
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
        check_name(name)
    except DownloadError:
        return None
    return complete_pair(name, CacheScan())


def complete_pair(name: str, cache: CacheScan) -> Path | None:
    for revision in cache.revisions(REPO_ID):
        folder = revision.snapshot_path / name
        if not folder.is_dir():
            continue
        tree = cached_tree(REPO_ID, revision.commit_hash)
        files = folder_entries(tree, name) if tree is not None else None
        if files:
            if {e.path for e in files} <= cache.present(REPO_ID, revision.commit_hash):
                return folder
        elif tree is None and layout_complete(folder):
            return folder
    return None


def select_model_files(entries: list[RepoEntry]) -> list[RepoEntry]:
    root = [e for e in entries if "/" not in e.path]
    chosen = [e for e in root if any(fnmatch(e.path, p) for p in MODEL_PATTERNS)]
    if not any(e.path.endswith(".safetensors") for e in chosen):
        chosen += [e for e in root if any(fnmatch(e.path, p) for p in MODEL_FALLBACK_PATTERNS)]
    return chosen


def model_cached(repo_id: str, cache: CacheScan) -> bool:
    for revision in cache.revisions(repo_id):
        tree = cached_tree(repo_id, revision.commit_hash)
        if tree is not None:
            files = select_model_files(tree)
            return bool(files) and {e.path for e in files} <= cache.present(repo_id, revision.commit_hash)
        snapshot = revision.snapshot_path
        if (snapshot / "config.json").is_file() and any(snapshot.glob("*.safetensors")):
            return True  # fetched by another tool that kept no listing
    return False


def read_pair_models(config_text: str) -> tuple[str, str] | None:
    try:
        model = json.loads(config_text)["model"]
        return str(model["base_model"]), str(model["teacher_model"])
    except (ValueError, KeyError, TypeError):
        return None


def pair_models(name: str, cache: CacheScan) -> tuple[str, str] | None:
    """(receiver, sharer) from a cached copy of the pair's config.json, else the spec's table."""
    for revision in cache.revisions(REPO_ID):
        config = revision.snapshot_path / name / PAIR_CONFIG
        if config.is_file() and (found := read_pair_models(config.read_text(errors="replace"))):
            return found
    return KNOWN_PAIRS.get(name)


def pair_models_cached(folder: Path, cache: CacheScan) -> bool:
    models = read_pair_models((folder / PAIR_CONFIG).read_text(errors="replace"))
    return models is not None and all(model_cached(m, cache) for m in models)


def download_status(files: list[RepoEntry], present: set[str]) -> str:
    have = sum(e.path in present for e in files)
    return "absent" if have == 0 else "complete" if have == len(files) else "partial"


def local_bytes(files: list[RepoEntry], present: set[str]) -> int:
    return sum(e.size for e in files if e.path in present)


def sweep_stale_partials(repo_id: str, cache: CacheScan, older_than_s: float = STALE_PARTIAL_S) -> int:
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
