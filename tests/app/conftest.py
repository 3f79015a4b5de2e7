"""App tests: offscreen Qt, settings in a temporary folder, a qasync loop per test, and no unexpected Qt warnings."""

from __future__ import annotations

import atexit
import gc
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
# PySide6 and pytest-qt are required: a broken install must fail these tests, not skip them
import pytestqt  # noqa: F401
from PySide6.QtCore import QSettings, QtMsgType, qInstallMessageHandler

# QSettings never touches the real home: every INI-format user setting goes to a private folder.
_SETTINGS_DIR = Path(tempfile.mkdtemp(prefix="c2c-app-settings-"))
atexit.register(shutil.rmtree, _SETTINGS_DIR, ignore_errors=True)  # not one folder left behind per run
QSettings.setDefaultFormat(QSettings.Format.IniFormat)
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(_SETTINGS_DIR))

# Qt messages known to be harmless here; anything else at warning level or above fails the test.
ALLOWED_QT_MESSAGES = [
    re.compile(r"This plugin does not support propagateSizeHints\(\)"),  # the offscreen platform plugin
    re.compile(r"This plugin does not support raise\(\)"),
    re.compile(r"This plugin does not support grabbing the keyboard"),
]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """On 2 shared cores, torch's thread pool would compete with the Qt thread the stall tests measure."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def collect_on_the_qt_thread():
    """Free the previous test's windows here, on the Qt thread: a collection that happens to run on a worker
    thread would delete their Qt objects from there, which Qt warns about."""
    gc.collect()


@pytest.fixture(autouse=True)
def fail_on_qt_warnings(collect_on_the_qt_thread):
    """qutebrowser's rule: a Qt warning nobody expected is a bug, so it fails the test that caused it."""
    unexpected: list[str] = []

    def handler(mode: QtMsgType, context: Any, message: str) -> None:
        if mode in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg) and not any(
                p.search(message) for p in ALLOWED_QT_MESSAGES):
            unexpected.append(f"{mode.name}: {message}")
        if previous is not None:
            previous(mode, context, message)

    previous = qInstallMessageHandler(handler)
    yield unexpected
    qInstallMessageHandler(previous)
    assert not unexpected, "unexpected Qt messages:\n" + "\n".join(unexpected)


@pytest.fixture
def loop(qapp):
    """The app's qasync loop on the Qt thread (bridge.install), closed after the test."""
    from c2c_playground import bridge, theme

    theme.apply(qapp)
    made = bridge.install(qapp)
    yield made
    bridge.uninstall()


@pytest.fixture
def app_settings(tmp_path: Path):
    """A settings file of this test's own."""
    from c2c_playground.app_settings import AppSettings

    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def window(qtbot, loop, app_settings):
    from c2c_playground.window import MainWindow

    made = MainWindow(app_settings, persist=False)
    qtbot.addWidget(made)
    made.show()
    qtbot.waitExposed(made)
    yield made
    made.close()
