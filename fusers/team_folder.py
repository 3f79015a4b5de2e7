"""A team's folder (:data:`TEAM_MANIFEST`): the receiver, and each sharer by name with its fuser folder (and its
adapter); paths relative to the folder are allowed, so a team folder can be moved or shipped whole. fusers.team
loads one as a pair."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import TeamFormatError
from .vocabulary import MODE_SEPARATOR, NAMES_SEPARATOR, SHARER_NAME

if TYPE_CHECKING:
    from .fuser import Fuser

TEAM_MANIFEST = "team.json"
TEAM_FORMAT = "c2c-playground-team"
TEAM_VERSION = 1
_NAME = SHARER_NAME


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TeamFormatError(f"{where}: a sharer's name is 1-40 letters, digits, '_', '-' or '.', got {name!r} "
                              f"(modes name sharers as fusion{MODE_SEPARATOR}NAME{NAMES_SEPARATOR}NAME).")
    return name


# -- the team folder --------------------------------------------------------------------------------------------

@dataclass
class SharerEntry:
    """One sharer of a team manifest: its name, its model and its fuser folder."""

    name: str
    sharer: str  # Hub id, folder or .gguf file (relative: to the team folder)
    fuser: str  # its fuser folder (relative: to the team folder)
    adapter: str = ""  # a PEFT adapter folder on the sharer (relative: to the team folder)

    FIELDS: ClassVar[tuple[str, ...]] = ("name", "sharer", "fuser", "adapter")


@dataclass
class TeamManifest:
    """``team.json``: the receiver, and every sharer with its fuser folder."""

    receiver: str
    sharers: list[SharerEntry]
    receiver_adapter: str = ""
    extra: dict[str, Any] | None = None  # free-form (a recipe's notes); kept as it is

    FIELDS: ClassVar[tuple[str, ...]] = ("format", "format_version", "receiver", "receiver_adapter", "sharers",
                                         "extra")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": TEAM_FORMAT, "format_version": TEAM_VERSION, "receiver": self.receiver,
            "sharers": [{k: getattr(s, k) for k in SharerEntry.FIELDS if k != "adapter" or s.adapter}
                        for s in self.sharers],
        }
        if self.receiver_adapter:
            out["receiver_adapter"] = self.receiver_adapter
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = TEAM_MANIFEST) -> "TeamManifest":
        """Strict: unknown keys, wrong types, duplicate or malformed names are :class:`TeamFormatError`."""
        if not isinstance(data, dict):
            raise TeamFormatError(f"{where} must hold a JSON object, got {type(data).__name__}.")
        if data.get("format") != TEAM_FORMAT:
            raise TeamFormatError(f"{where} is not a {TEAM_FORMAT} manifest (format={data.get('format')!r}).")
        if data.get("format_version") != TEAM_VERSION:
            raise TeamFormatError(f"{where} has format version {data.get('format_version')!r}; this C2C Playground "
                                  f"reads version {TEAM_VERSION}. Upgrade c2c-playground.")
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise TeamFormatError(f"{where} has unknown field {unknown[0]!r}; the fields are {', '.join(cls.FIELDS)}.")
        receiver = _text(data, "receiver", where, required=True)
        sharers = data.get("sharers")
        if not isinstance(sharers, list) or not sharers:
            raise TeamFormatError(f"{where}: 'sharers' must be a non-empty list of {{\"name\", \"sharer\", "
                                  "\"fuser\"} objects.")
        entries, seen = [], set()
        for i, raw in enumerate(sharers, start=1):
            at = f"{where} sharer {i}"
            if not isinstance(raw, dict):
                raise TeamFormatError(f"{at} must be an object with name, sharer and fuser, got {type(raw).__name__}.")
            extra_keys = sorted(set(raw) - set(SharerEntry.FIELDS))
            if extra_keys:
                raise TeamFormatError(f"{at} has unknown field {extra_keys[0]!r}; the fields are "
                                      f"{', '.join(SharerEntry.FIELDS)}.")
            name = check_name(raw.get("name"), at)
            if name in seen:
                raise TeamFormatError(f"{at}: the name {name!r} is used twice; each sharer needs its own name.")
            seen.add(name)
            entries.append(SharerEntry(name, _text(raw, "sharer", at, required=True), _text(raw, "fuser", at,
                                       required=True), _text(raw, "adapter", at)))
        extra = data.get("extra")
        if extra is not None and not isinstance(extra, dict):
            raise TeamFormatError(f"{where}: 'extra' must be an object, got {type(extra).__name__}.")
        return cls(receiver, entries, _text(data, "receiver_adapter", where), extra or None)


def _text(data: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise TeamFormatError(f"{where}: {key!r} must be a non-empty string, got {value!r}." if required else
                              f"{where}: {key!r} must be a string, got {value!r}.")
    return value


def is_team(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / TEAM_MANIFEST).is_file()


def read_team(folder: str | Path) -> TeamManifest:
    """The manifest of a team folder, with relative paths resolved against the folder."""
    folder = Path(folder)
    path = folder / TEAM_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TeamFormatError(f"{folder} holds no {TEAM_MANIFEST}; a team folder names its receiver and sharers "
                              "there.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeamFormatError(f"{path} cannot be read as JSON ({exc}).") from None
    manifest = TeamManifest.from_dict(data, str(path))
    manifest.receiver = _local(folder, manifest.receiver, path, "receiver")
    manifest.receiver_adapter = _local(folder, manifest.receiver_adapter, path, "receiver_adapter")
    for s in manifest.sharers:
        s.sharer = _local(folder, s.sharer, path, f"sharer {s.name}")
        s.adapter = _local(folder, s.adapter, path, f"sharer {s.name} adapter")
        s.fuser = _local(folder, s.fuser, path, f"sharer {s.name} fuser", must_exist=True)
    return manifest


def _local(folder: Path, value: str, where: Path, what: str, must_exist: bool = False) -> str:
    """A path relative to the team folder, made absolute; a Hub id stays as it is."""
    if not value:
        return value
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = folder / candidate
    if candidate.exists():
        return str(candidate.resolve())
    if must_exist or value.startswith((".", "/", "~")):
        raise TeamFormatError(f"{where}: the {what} {value} does not exist (relative paths are read from "
                              f"{folder}).")
    return value


def write_team(folder: str | Path, manifest: TeamManifest) -> Path:
    """Write ``team.json``; paths inside ``folder`` are stored relative to it, so the folder moves whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def rel(value: str) -> str:
        path = Path(value)
        if value and path.is_absolute() and path.exists():
            try:
                return path.resolve().relative_to(folder.resolve()).as_posix()
            except ValueError:
                return value
        return value

    stored = TeamManifest(
        rel(manifest.receiver), [SharerEntry(s.name, rel(s.sharer), rel(s.fuser), rel(s.adapter))
                                 for s in manifest.sharers],
        rel(manifest.receiver_adapter), manifest.extra)
    TeamManifest.from_dict(stored.to_dict())  # what is written reads back
    (folder / TEAM_MANIFEST).write_text(json.dumps(stored.to_dict(), indent=2, sort_keys=True) + "\n")
    return folder


def save_team(folder: str | Path, receiver: str, fusers: "dict[str, Fuser]", sharers: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None, fuser_extra: dict[str, Any] | None = None) -> Path:
    """Write a team folder: each fuser into ``fuser-NAME/`` and the manifest naming them (the sharers are the
    fusers' own records of their sharer unless ``sharers`` names them)."""
    from .checkpoint import save_fuser

    folder = Path(folder)
    entries = []
    for name, fuser in fusers.items():
        check_name(name, str(folder))
        path = save_fuser(fuser, folder / f"fuser-{name}", extra=fuser_extra)
        entries.append(SharerEntry(name, (sharers or {}).get(name, fuser.info.sharer), str(path.resolve())))
    return write_team(folder, TeamManifest(receiver, entries, extra=extra))


def load_team_fusers(folder: str | Path) -> "tuple[TeamManifest, dict[str, Fuser]]":
    from .checkpoint import load_fuser

    manifest = read_team(folder)
    return manifest, {s.name: load_fuser(s.fuser) for s in manifest.sharers}
