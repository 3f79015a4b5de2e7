"""``c2c fuser list|download|remove``: the published pairs of ``nics-efc/C2C_Fuser`` in the local HF cache."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import asdict
from pathlib import PurePosixPath


def register(fsub: argparse._SubParsersAction) -> None:
    from ..hub import REPO_ID

    p = fsub.add_parser("list", help=f"list the published pairs in {REPO_ID} with size and local status",
                        description="List the published fuser pairs: name, receiver, sharer, size and whether the "
                        "pair is in the local Hugging Face cache (absent, partial or complete). Offline (HF_HUB_OFFLINE=1 "
                        "or no connection), the list comes from the cache and the known pairs.")
    p.add_argument("--offline", action="store_true", help="do not contact the Hub; list from the cache")
    p.add_argument("--json", action="store_true", help="one JSON object per pair")
    p.set_defaults(func=run_list)

    p = fsub.add_parser("download", help="download a published pair (and its models) into the HF cache",
                        description="Download one pair folder into the Hugging Face cache (HF_HOME), with a progress "
                        "bar. Interrupted downloads resume: finished files are kept and verified files are never "
                        "fetched again. Ctrl-C cancels cleanly.")
    p.add_argument("pair", metavar="PAIR", help="pair name, as `c2c fuser list` shows it")
    p.add_argument("--with-models", action="store_true",
                   help="also download the receiver and sharer the pair's config.json names")
    p.add_argument("--jobs", type=int, default=None, help="files fetched at once (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_download)

    p = fsub.add_parser("remove", help="delete a downloaded pair from the HF cache (its models stay)")
    p.add_argument("pair", metavar="PAIR", help="pair name")
    p.set_defaults(func=run_remove)


def run_list(args: argparse.Namespace) -> int:
    from ..hub import format_bytes, list_pairs

    pairs = list_pairs(offline=True if args.offline else None)
    if args.json:
        for pair in pairs:
            print(json.dumps(asdict(pair), sort_keys=True))
        return 0
    if pairs and not pairs[0].online:
        print("(offline: listed from the local cache and the known pairs)", file=sys.stderr)
    rows = [("PAIR", "RECEIVER", "SHARER", "SIZE", "STATUS")]
    rows += [(p.name, p.receiver, p.sharer, format_bytes(p.size_bytes), p.status) for p in pairs]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) if i < 4 else cell for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return 0


class _Bar:
    """One tqdm bar for the whole download; updated from download threads (calls arrive serialized)."""

    def __init__(self) -> None:
        self.bar = None
        self.lock = threading.Lock()

    def __call__(self, p) -> None:
        from tqdm import tqdm

        with self.lock:
            if self.bar is None:
                self.bar = tqdm(total=p.total, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                                dynamic_ncols=True, mininterval=0.2)
            bar = self.bar
            if bar.total != p.total:
                bar.total = p.total
            bar.update(p.done - bar.n)
            name = PurePosixPath(p.file).name if p.file else p.repo_id
            bar.set_description_str(f"{p.stage} {name}"[:40], refresh=False)
            bar.set_postfix_str(f"{p.files_done}/{p.files_total} files", refresh=False)

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()


def run_download(args: argparse.Namespace) -> int:
    from ..hub import MAX_WORKERS, download_pair

    bar = None if args.quiet else _Bar()
    cancel = threading.Event()
    try:
        path = download_pair(args.pair, with_models=args.with_models, progress=bar, cancel=cancel,
                             max_workers=args.jobs or MAX_WORKERS)
    finally:
        if bar is not None:
            bar.close()
    print(path)
    print(f"downloaded {args.pair}; use it with `c2c compare --fuser {args.pair} --prompt ...`", file=sys.stderr)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..hub import cached_pair_folders, format_bytes, remove_pair

    if not cached_pair_folders(args.pair):
        print(f"{args.pair} is not downloaded; nothing to remove")
        return 0
    freed = remove_pair(args.pair)
    print(f"removed {args.pair}, freed {format_bytes(freed)} (its receiver and sharer stay in the cache)")
    return 0
