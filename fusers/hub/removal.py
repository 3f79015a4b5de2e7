"""Removing a downloaded pair from the cache, and no other pair's files with it."""

from __future__ import annotations

import shutil
from pathlib import Path

from .cache import CacheScan
from .environment import REPO_ID, check_name


def cached_pair_folders(name: str) -> list[Path]:
    """Every folder of this pair in the cache (one per commit), complete or not."""
    check_name(name)
    return CacheScan().pair_folders(name)


def remove_pair(name: str) -> int:
    """Delete a downloaded pair from the cache (every commit of it). Returns the bytes freed; the models stay.

    The pairs of ``nics-efc/C2C_Fuser`` are folders of one repo, so they share its revisions, and the tiny ones
    share weight blobs too. ``delete_revisions`` would take every other pair of the revision with this one; so a
    revision that holds other files keeps them: ``delete_files`` unlinks this pair's snapshot entries and deletes
    only the blobs no other cached file links. A revision left with nothing but this pair goes whole through
    ``delete_revisions`` (its snapshot, its refs, its blobs no other revision links; with the repo's last
    revision, the repo folder). The cache is scanned again for each revision, so every plan sees the last one done.
    """
    check_name(name)
    freed = 0
    for commit in [r.commit_hash for r in CacheScan().revisions(REPO_ID) if (r.snapshot_path / name).is_dir()]:
        cache = CacheScan()
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
