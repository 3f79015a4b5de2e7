"""Where pairs and fusers come from: local folders, downloaded pairs and the bundled demo pair."""

from __future__ import annotations

from pathlib import Path

from .errors import FuserFormatError, ModelLoadError


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
