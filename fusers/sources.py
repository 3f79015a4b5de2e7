"""Where pairs and fusers come from: local folders, downloaded pairs and the bundled demo pair."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import FuserFormatError, ModelLoadError, OfflineModelError

HUB_PROBE_TIMEOUT_S = 5.0  # one look at the Hub before a load that needs it (its own client retries for ~50 s)


def resolve_fuser(ref: str | Path) -> Path:
    """A fuser folder for ``ref``: a path to a fuser folder, or the name of a downloaded pair."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    try:
        from . import hub
    except ImportError:  # downloads not available in this build
        hub = None  # type: ignore[assignment]
    if hub is not None:
        found = hub.local_pair_path(str(ref))
        if found is not None:
            return found
    raise FuserFormatError(
        f"No fuser folder or downloaded pair named {str(ref)!r}. Give a folder, or download a pair first "
        "(`c2c fuser list`, then `c2c fuser download PAIR`)."
    )


def default_pair() -> tuple[str, str, str]:
    """(receiver, sharer, fuser) of the bundled offline demo pair."""
    try:
        from .demo import pair_paths
    except ImportError as exc:
        raise ModelLoadError(
            "No pair given and the offline demo pair is not installed; pass --receiver and --sharer, or --fuser."
        ) from exc
    receiver, sharer, fuser = pair_paths()
    return str(receiver), str(sharer), str(fuser)


def bundled_model(name: str) -> Path | None:
    """The shipped folder or installed file that a bundled model's recorded name stands for, or None.

    The project's own fusers record their pair by names that stay the same wherever the package is installed
    (``c2c-demo/receiver``, ``c2c-specialist/adapter``, the real models' file names): a fuser folder alone then
    loads its pair. Published fusers name Hub ids, which this leaves alone.
    """
    from . import real_models

    try:
        from . import demo, specialist

        shipped = {
            demo.RECEIVER_NAME: demo.demo_root() / demo.RECEIVER_DIR,
            demo.SHARER_NAME: demo.demo_root() / demo.SHARER_DIR,
            specialist.SHARER_NAME: specialist.specialist_root() / specialist.ADAPTER_DIR,
        }
    except ModuleNotFoundError:  # a build without the resources package: only the real models' names are known
        shipped = {}
    if name in shipped:
        return shipped[name]
    return real_models.bundled(name)


def local_source(name: str) -> str:
    """``name`` as the path it stands for when it names a bundled model (see :func:`bundled_model`), else as it is.
    A file or folder of that name right here wins."""
    if not name or Path(name).expanduser().exists():
        return name
    found = bundled_model(name)
    return str(found) if found is not None else name


def check_hub_reachable(role: str, name: str) -> None:
    """Before asking the Hub for a model that is nowhere on this machine: fail at once, with the fix, where the
    Hub cannot be reached, instead of after the Hub client's retries. Offline mode asks nothing; otherwise one
    request, and any HTTP answer at all counts as reachable (the load then says what the Hub said)."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    fix = (f"download it while online (it is then kept in the Hugging Face cache), or give the {role} as a local "
           "folder or .gguf file")
    if constants.HF_HUB_OFFLINE:
        raise OfflineModelError(
            f"The {role} {name} is not on this machine (no such folder or file, and not in the Hugging Face cache), "
            f"and Hub downloads are off (HF_HUB_OFFLINE is set): unset HF_HUB_OFFLINE and {fix}.")
    try:
        request = urllib.request.Request(f"{endpoint}/api/models/{name}", method="HEAD")
        with urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # the Hub answered
    except (OSError, ValueError) as exc:  # DNS, refused, reset, timeout, a proxy that is down, a malformed endpoint
        reason = getattr(exc, "reason", None) or exc
        raise OfflineModelError(
            f"The {role} {name} is not on this machine (no such folder or file, and not in the Hugging Face cache), "
            f"and the Hub at {endpoint} cannot be reached ({reason}). Check the network connection (or the proxy: "
            f"HTTPS_PROXY) and {fix}.") from None
