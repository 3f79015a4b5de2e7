"""Where the Hub and the cache are, read from the environment when a function is called (``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``), and the fuser repo's names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DownloadError

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


def hub_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())  # token: HF_TOKEN or the saved login, looked up per request


def check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in {".", ".."} or name.startswith("."):
        raise DownloadError(f"{name!r} is not a pair name; `c2c fuser list` shows the pairs (e.g. "
                            f"{next(iter(KNOWN_PAIRS))}).")
    return name
