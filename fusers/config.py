"""The config base every settings dataclass shares (peft style): help text on each field, one strict
``to_dict``/``from_dict`` pair."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigBase")


def option(default: Any, text: str, group: str | None = None, choices: tuple[str, ...] | None = None,
           aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with help text (the CLI builds its options from it), in an optional help group, the
    values it takes where they are a closed list (the CLI's choices, the app's menus), and older option names
    that still work."""
    metadata: dict[str, Any] = {"help": text}
    if group is not None:
        metadata["group"] = group
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if aliases:
        metadata["aliases"] = tuple(aliases)
    return dataclasses.field(default=default, metadata=metadata)


def required(text: str) -> Any:
    """A dataclass field without a default, with help text."""
    return dataclasses.field(metadata={"help": text})


class ConfigBase:
    """Mixin for ``@dataclass`` configs: ``from_dict`` rejects unknown keys, naming them; values are checked by
    each class's ``__post_init__``."""

    config_name: ClassVar[str] = "settings"  # how an error message names this config
    config_error: ClassVar[type[Exception]] = ValueError

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise cls.config_error(f"unknown {cls.config_name}: {', '.join(unknown)}.")
        return cls(**data)

    @classmethod
    def help_fields(cls) -> list[dataclasses.Field]:
        """The fields, for building CLI options from their help text."""
        return list(dataclasses.fields(cls))  # type: ignore[arg-type]
