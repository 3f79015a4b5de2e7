"""Fuzzing the app's saved settings: whatever the settings file holds, the window opens, with valid values."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings, strategies as st
from PySide6.QtCore import QSettings

from fusers.generation import GenerationSettings

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
big = st.sampled_from([2**31, 2**40, 2**62, -1, 0, 1e300])  # past what Qt's spin boxes hold
generation = st.dictionaries(st.sampled_from(sorted(GenerationSettings.__dataclass_fields__)), big, max_size=2) | \
    st.fixed_dictionaries({}, optional={k: big | values for k in GenerationSettings.__dataclass_fields__})
form = st.fixed_dictionaries({}, optional={"preset": values, "fuser": values,
                                           "receiver": values | st.fixed_dictionaries({}, optional={
                                               k: values for k in ("source", "device", "dtype", "quantize")}),
                                           "sharer": values, "team": values,
                                           "sharers": values | st.lists(st.fixed_dictionaries({}, optional={
                                               k: values for k in ("name", "source", "fuser", "device")}),
                                               max_size=3)})
KEYS = {"generation/settings": generation | values, "generation/concurrent": values, "layout/pane_modes": values,
        "pair/form": form | values, "layout/panes": values, "layout/main": values}


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=KEYS), st.booleans())
@example({"generation/settings": {"seed": 2**40, "top_k": 2**33}}, False)  # found by this test: Qt's spin boxes overflowed
@example({"pair/form": {"sharer": [None]}}, False)  # found by this test: the set-up panel expected an object
@example({"pair/form": {"sharers": [{"name": "A", "fuser": "nowhere"}, {}]},
          "layout/pane_modes": ["fusion:A", "sharer:B+C"]}, False)  # a team's
def test_the_window_opens_on_any_saved_settings(qtbot, loop, stored, as_raw_text) -> None:
    from c2c_playground.app_settings import AppSettings
    from c2c_playground.window import MainWindow

    path = Path(tempfile.mkdtemp(prefix="fuzz-settings-")) / "settings.ini"
    store = QSettings(str(path), QSettings.Format.IniFormat)
    for key, value in stored.items():
        store.setValue(key, json.dumps(value) if not as_raw_text else str(value))
    store.sync()
    window = MainWindow(AppSettings(QSettings(str(path), QSettings.Format.IniFormat)), persist=False)
    qtbot.addWidget(window)
    s = window.generation.settings()
    assert GenerationSettings.from_dict(s.to_dict()) == s
    assert 2 <= len(window.panes) <= 4
    form = window.pair_panel.form()
    assert all(isinstance(form[k], str) for k in ("preset", "fuser"))
    assert all(isinstance(v, str) for part in ("receiver", "sharer") for v in form[part].values())
    window.close()
