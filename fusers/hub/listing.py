"""The pairs of the fuser repo with their size and local status: from the Hub, or from the cache when offline or
when the Hub cannot be reached."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DownloadError
from .cache import (CacheScan, cached_tree, complete_pair, download_status, local_bytes, pair_models,
                    read_pair_models)
from .environment import KNOWN_PAIRS, PAIR_CONFIG, REPO_ID, REVISION, endpoint, hub_api, is_offline
from .errors import is_connection_error, translate
from .verification import RepoEntry, entries_of, folder_entries, pair_names

CONFIG_FETCH_LIMIT = 1 << 20  # listing reads a pair's config.json over HTTP only when it is this small


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



def list_pairs(offline: bool | None = None) -> list[PairListing]:
    """The pairs in ``nics-efc/C2C_Fuser`` with size and local status; from the cache when offline or unreachable."""
    cache = CacheScan()
    if not is_offline(offline):
        try:
            return _list_online(cache)
        except Exception as exc:  # noqa: BLE001 - only an unreachable Hub falls back, anything else is raised typed
            if not is_connection_error(exc):
                if isinstance(exc, DownloadError):
                    raise
                raise translate(exc, REPO_ID, REPO_ID) from exc
    return _list_cached(cache)


def _list_online(cache: CacheScan) -> list[PairListing]:
    api = hub_api()
    commit = api.model_info(REPO_ID, revision=REVISION).sha
    entries = entries_of(api.list_repo_tree(REPO_ID, recursive=True, revision=commit), REPO_ID, commit)
    present = cache.present(REPO_ID, commit)
    out = []
    for name in sorted(pair_names(entries)):
        files = folder_entries(entries, name)
        receiver, sharer = pair_models(name, cache) or _fetch_pair_models(name, files) or ("?", "?")
        out.append(PairListing(name, receiver, sharer, sum(e.size for e in files), len(files),
                               download_status(files, present), local_bytes=local_bytes(files, present)))
    return out


def _fetch_pair_models(name: str, files: list[RepoEntry]) -> tuple[str, str] | None:
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
        return read_pair_models(response.text)
    except Exception:  # noqa: BLE001 - the names are a nicety; the listing goes on with "?"
        return None


def _list_cached(cache: CacheScan) -> list[PairListing]:
    out: dict[str, PairListing] = {}
    revisions = cache.revisions(REPO_ID)
    for revision in reversed(revisions):  # the newest listing wins
        tree = cached_tree(REPO_ID, revision.commit_hash)
        present = cache.present(REPO_ID, revision.commit_hash)
        for name in pair_names(tree or ()):
            files = folder_entries(tree, name)
            receiver, sharer = pair_models(name, cache) or ("?", "?")
            # an older complete copy counts offline
            state = "complete" if complete_pair(name, cache) else download_status(files, present)
            out[name] = PairListing(name, receiver, sharer, sum(e.size for e in files), len(files), state,
                                    online=False, local_bytes=local_bytes(files, present))
    for name, (receiver, sharer) in KNOWN_PAIRS.items():
        out.setdefault(name, PairListing(name, receiver, sharer, None, None, "absent", online=False))
    for revision in revisions:  # pairs fetched by other tools, without a cached listing
        for folder in sorted(p for p in revision.snapshot_path.iterdir() if (p / PAIR_CONFIG).is_file()):
            known = out.get(folder.name)
            if known is not None and known.size_bytes is not None:
                continue
            status = "complete" if complete_pair(folder.name, cache) else "partial"
            receiver, sharer = pair_models(folder.name, cache) or ("?", "?")
            out[folder.name] = PairListing(folder.name, receiver, sharer, None, None, status, online=False)
    return sorted(out.values(), key=lambda p: p.name)
