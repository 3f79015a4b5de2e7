"""Downloading a pair (and its models) into the cache: one ``hf_hub_download`` per file in a small thread pool,
each file verified, progress per pair, a cancel that stops every transfer at its next chunk.

Not ``snapshot_download`` for the files: it hands every file the same aggregate progress bar (which file is
arriving and how far it is, which the app and the CLI show, is lost there), and a failure or Ctrl-C does not stop
the transfers still running. It fetches a pair's (or a model's) first small file, which records ``refs/main``
and the repo's listing in the cache: what finds the pair offline later.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..errors import Cancelled, DownloadError
from .cache import (CacheScan, complete_pair, local_pair_path, model_cached, pair_models_cached, read_pair_models,
                    select_model_files, sweep_stale_partials)
from .environment import (KNOWN_PAIRS, PAIR_CONFIG, REPO_ID, REVISION, cache_dir, check_name, endpoint, hub_api,
                          is_offline)
from .errors import is_connection_error, translate
from .progress import DownloadTracker, FileJob, ProgressCallback, TransferStopped
from .verification import DISK_RESERVE_BYTES, RepoEntry, check_disk_space, entries_of, verify

MAX_WORKERS = 4
CANCELLED = "Download cancelled; finished files stay in the cache and are not fetched again."


class _NotInRepo(Exception):
    """The file a plan starts from is not in the repo (at the commit ``main`` points to)."""


def quiet_bar_class() -> type:
    """A tqdm that shows nothing (huggingface_hub's own bars would print over the app's and the CLI's)."""
    from tqdm.auto import tqdm

    class Quiet(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub names its own bars; plain tqdm refuses the keyword
            super().__init__(*args, **{**kwargs, "disable": True})

    return Quiet


def _file_bar_class(run: DownloadTracker, job: FileJob) -> type:
    """The ``tqdm_class`` of one file's ``hf_hub_download``: its byte counts go to the run, and a cancel stops it.

    ``update_transfer`` and ``set_transfer_postfix_str`` are the two methods huggingface_hub adds to a progress
    bar it may share (snapshot_download's aggregate bar has them too): with them, a Xet download counts its bytes
    once, through ``update``, instead of opening a second bar for the network bytes.
    """

    class FileBar(quiet_bar_class()):  # type: ignore[misc]
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


def _fetch_one(run: DownloadTracker, job: FileJob) -> None:
    from huggingface_hub import hf_hub_download

    run.check()
    run.begin(job)
    ok = False
    try:
        path = hf_hub_download(
            job.entry.repo_id, job.entry.path, revision=job.entry.commit, cache_dir=cache_dir(),
            endpoint=endpoint(), tqdm_class=_file_bar_class(run, job),
        )
        verify(job.entry, Path(path))
        ok = True
    except (TransferStopped, DownloadError):
        raise
    except Exception as exc:  # noqa: BLE001 - typed with a fix for the user
        raise translate(exc, f"{job.entry.repo_id}/{job.entry.path}", job.entry.repo_id) from exc
    finally:
        run.end(job, ok)


def _fetch(run: DownloadTracker, jobs: list[FileJob], max_workers: int) -> None:
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
            if isinstance(exc, TransferStopped):  # only a cancel raises it before ``abort`` is set
                raise Cancelled(CANCELLED) from None
            raise


def _plan(repo_id: str, first: str, folder: str | None = None) -> tuple[Path, list[RepoEntry]]:
    """The files of ``repo_id`` (under ``folder``) at the commit ``main`` points to, listed fresh by the Hub.

    ``first``, a small file of them, is fetched through snapshot_download, which also records ``refs/main``
    and the repo's listing in the cache: what finds the pair (and the models) offline later. It is looked up
    in the listing first, because a snapshot_download that matches nothing leaves a ref to a commit without a
    snapshot, a cache scan_cache_dir then reports as corrupt. Returns the snapshot folder and the files.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    api = hub_api()
    commit = api.model_info(repo_id, revision=REVISION).sha
    try:
        files = entries_of(api.list_repo_tree(repo_id, path_in_repo=folder, recursive=True, revision=commit),
                         repo_id, commit)
    except RemoteEntryNotFoundError:
        files = []
    head = next((e for e in files if e.path == first), None)
    if head is None:
        raise _NotInRepo(first)
    snapshot = Path(snapshot_download(repo_id, revision=REVISION, allow_patterns=[first], cache_dir=cache_dir(),
                                      endpoint=endpoint(), tqdm_class=quiet_bar_class(), max_workers=1))
    if snapshot.name != commit:
        raise DownloadError(f"{repo_id} got a new commit while the download started; run the download again.")
    verify(head, snapshot / first)  # fetched here, so not checked by _fetch_one
    return snapshot, files


def _plan_pair(name: str) -> tuple[Path, list[RepoEntry]]:
    try:
        snapshot, files = _plan(REPO_ID, f"{name}/{PAIR_CONFIG}", folder=name)
    except _NotInRepo:
        known = ", ".join(KNOWN_PAIRS)
        raise DownloadError(f"{REPO_ID} has no pair named {name!r}. `c2c fuser list` shows the pairs ({known}).") \
            from None
    return snapshot / name, files


def _plan_model(repo_id: str) -> list[RepoEntry]:
    try:
        _, files = _plan(repo_id, "config.json")
    except _NotInRepo:
        raise DownloadError(f"{repo_id} has no config.json; it is not a transformers model.") from None
    files = select_model_files(files)
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
    check_name(name)
    cancel = cancel or threading.Event()
    if is_offline():
        return _download_offline(name, with_models)
    stages: list[tuple[str, str, list[RepoEntry]]] = []
    try:
        folder, pair_files = _plan_pair(name)
        stages.append(("fuser", REPO_ID, pair_files))
        if with_models:
            models = read_pair_models((folder / PAIR_CONFIG).read_text(errors="replace"))
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
                    raise translate(exc, f"the {stage} {repo_id}", repo_id) from exc
    except (DownloadError, Cancelled):
        raise
    except Exception as exc:  # noqa: BLE001
        if is_connection_error(exc):
            cache = CacheScan()
            found = complete_pair(name, cache)
            if found is not None and (not with_models or pair_models_cached(found, cache)):
                return found  # unreachable, but nothing is missing
        raise translate(exc, f"{REPO_ID}/{name}", REPO_ID) from exc

    cache = CacheScan()
    jobs = []
    for stage, repo_id, files in stages:
        sweep_stale_partials(repo_id, cache)
        present = cache.present(repo_id, files[0].commit) if files else set()
        jobs += [FileJob(stage, e, e.path in present) for e in files]
    run = DownloadTracker(jobs, progress, cancel)
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
    cache = CacheScan()
    found = complete_pair(name, cache)
    if found is None:
        raise DownloadError(f"{name} is not downloaded and HF_HUB_OFFLINE is set: unset it (or go online) and "
                            "download the pair again.")
    if with_models:
        models = read_pair_models((found / PAIR_CONFIG).read_text(errors="replace")) or ()
        missing = [m for m in models if not model_cached(m, cache)]
        if missing:
            raise DownloadError(f"{' and '.join(missing)} not in the cache and HF_HUB_OFFLINE is set: go online to "
                                "download the models.")
    return found
