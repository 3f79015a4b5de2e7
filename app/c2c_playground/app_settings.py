"""What the app remembers between runs, in QSettings (an INI file under the user's config folder).

Tests point QSettings at a temporary folder (``QSettings.setPath``), so they never touch the real home.
Bad or old values fall back to defaults: a settings file must never stop the app from starting.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from fusers.generation import GenerationSettings
from fusers.vocabulary import DEFAULT_PANE_MODES, valid_pane_modes

ORGANIZATION = "c2c-playground"
APPLICATION = "c2c-playground"
FORMAT_VERSION = 1


def open_store() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


class AppSettings:
    def __init__(self, store: QSettings | None = None):
        self.store = store if store is not None else open_store()

    def _json(self, key: str, default: Any) -> Any:
        raw = self.store.value(key, None)
        if raw is None:
            return default
        try:
            return json.loads(str(raw))
        except ValueError:
            return default

    def _set_json(self, key: str, value: Any) -> None:
        self.store.setValue(key, json.dumps(value, sort_keys=True))

    # generation settings
    def generation(self) -> GenerationSettings:
        # Every version so far (format 1) wrote exactly GenerationSettings' fields, so there is no old key to
        # migrate: a key it does not know is a SettingsError like any bad value, and the defaults are used.
        data = self._json("generation/settings", None)
        if isinstance(data, dict):
            try:
                return GenerationSettings.from_dict(data)
            except (TypeError, ValueError):
                pass
        return GenerationSettings()

    def set_generation(self, settings: GenerationSettings) -> None:
        self._set_json("generation/settings", settings.to_dict())

    def concurrent(self) -> bool:
        return bool(self._json("generation/concurrent", False))

    def set_concurrent(self, value: bool) -> None:
        self._set_json("generation/concurrent", bool(value))

    # panes
    def pane_modes(self) -> list[str]:
        modes = self._json("layout/pane_modes", list(DEFAULT_PANE_MODES))
        return modes if valid_pane_modes(modes) else list(DEFAULT_PANE_MODES)

    def set_pane_modes(self, modes: list[str]) -> None:
        self._set_json("layout/pane_modes", list(modes))

    # the pair form: sources and placement of each model
    def pair_form(self) -> dict[str, Any]:
        form = self._json("pair/form", {})
        if not isinstance(form, dict):
            return {}
        # only text where the form has text: a hand-edited or old file must not break the set-up panel
        out: dict[str, Any] = {k: form[k] for k in ("preset", "fuser", "team") if isinstance(form.get(k), str)}
        for part in ("receiver", "sharer"):
            if isinstance(form.get(part), dict):
                out[part] = _texts(form[part])
        if isinstance(form.get("sharers"), list):  # a team's other sharers
            out["sharers"] = [_texts(row) for row in form["sharers"] if isinstance(row, dict)]
        return out

    def set_pair_form(self, form: dict[str, Any]) -> None:
        self._set_json("pair/form", form)

    # window layout (Qt's own opaque blobs)
    def blob(self, key: str) -> QByteArray | None:
        value = self.store.value(f"layout/{key}", None)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_blob(self, key: str, value: QByteArray) -> None:
        self.store.setValue(f"layout/{key}", value)

    def sizes(self, key: str) -> list[int] | None:
        sizes = self._json(f"layout/{key}", None)
        if isinstance(sizes, list) and sizes and all(isinstance(s, int) and s >= 0 for s in sizes):
            return sizes
        return None

    def set_sizes(self, key: str, sizes: list[int]) -> None:
        self._set_json(f"layout/{key}", [int(s) for s in sizes])

    def sync(self) -> None:
        self.store.setValue("format_version", FORMAT_VERSION)
        self.store.sync()


def _texts(part: dict[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in part.items() if isinstance(k, str) and isinstance(v, str)}
