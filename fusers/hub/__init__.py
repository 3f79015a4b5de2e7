"""Published fusers on the Hub: list the pairs of ``nics-efc/C2C_Fuser``, download one (and its models), remove it.

Everything lives in the standard Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), so a pair
downloaded here is also what ``huggingface_hub`` and ``transformers`` find, and the reverse. ``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read when a function is called, not at import.

``huggingface_hub`` does the work; this package adds thin steps around it:

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

The package, by concern: ``environment`` (where the Hub and the cache are), ``verification`` (each file against
the listing, disk space), ``errors`` (what went wrong, and the fix), ``cache`` (what is whole locally),
``listing``, ``download`` (with ``progress``) and ``removal``. It never imports torch: ``c2c fuser list`` stays
fast.
"""

from __future__ import annotations

from ..errors import AuthError, Cancelled, DiskSpaceError, DownloadError
from .cache import MODEL_FALLBACK_PATTERNS, MODEL_PATTERNS, STALE_PARTIAL_S, local_pair_path, sweep_stale_partials
from .download import CANCELLED, MAX_WORKERS, download_pair
from .environment import KNOWN_PAIRS, PAIR_CONFIG, REPO_ID, REVISION, cache_dir, endpoint, is_offline
from .format import format_bytes, format_duration
from .listing import CONFIG_FETCH_LIMIT, PairListing, list_pairs
from .progress import PROGRESS_INTERVAL_S, DownloadProgress, FileProgress, ProgressCallback
from .removal import cached_pair_folders, remove_pair
from .verification import DISK_RESERVE_BYTES, check_disk_space

__all__ = [
    "AuthError", "CANCELLED", "CONFIG_FETCH_LIMIT", "Cancelled", "DISK_RESERVE_BYTES", "DiskSpaceError",
    "DownloadError", "DownloadProgress", "FileProgress", "KNOWN_PAIRS", "MAX_WORKERS", "MODEL_FALLBACK_PATTERNS",
    "MODEL_PATTERNS", "PAIR_CONFIG", "PROGRESS_INTERVAL_S", "PairListing", "ProgressCallback", "REPO_ID", "REVISION",
    "STALE_PARTIAL_S", "cache_dir", "cached_pair_folders", "check_disk_space", "download_pair", "endpoint",
    "format_bytes", "format_duration", "is_offline", "list_pairs", "local_pair_path", "remove_pair",
    "sweep_stale_partials",
]
