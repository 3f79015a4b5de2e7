"""``c2c-playground``: open the app; with ``--prompt``/``--screenshot``/``--exit`` it also runs headless.

    c2c-playground
    c2c-playground --pair demo --prompt "Why is the sky blue?" --screenshot shot.png --exit
    c2c-playground --receiver R --sharer S --fuser F --prompt TEXT --screenshot shot.png --exit

The window paints before torch is imported: models load on a worker thread after the first paint.
Exit codes: 0 done, 1 a missing or broken install, 2 bad input or a failed load or run, 3 no screenshot.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Sequence

_STARTED = time.perf_counter()

EXIT_OK, EXIT_INSTALL, EXIT_FAILED, EXIT_SCREENSHOT = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    # fusers' vocabulary and the CLI's option builders import neither torch nor Qt: the parser works where
    # PySide6 is broken, and every choice comes from the engine's declaration
    from fusers.commands.common import add_pair_options, add_settings_options
    from fusers.generation import GenerationSettings
    from fusers.vocabulary import DEFAULT_PANE_MODES, MAX_PANES, MIN_PANES, MODES

    p = argparse.ArgumentParser(
        prog="c2c-playground",
        description="Text relay and cache fusion between two LLMs, side by side, with live timing and a token diff. "
                    "With --prompt, --screenshot or --exit it runs a comparison by itself (offscreen too: set "
                    "QT_QPA_PLATFORM=offscreen).",
    )
    add_pair_options(p, presets=True, compile=True, per_model_quantize=False, keep_defaults=False,
                     notes={"default": "the set-up panel's."})
    run = p.add_argument_group("headless run")
    run.add_argument("--prompt", help="send this prompt to every pane once the pair is loaded")
    run.add_argument("--modes", help=f"comma-separated pane modes, {MIN_PANES} to {MAX_PANES} of {', '.join(MODES)} "
                                     f"(default {','.join(DEFAULT_PANE_MODES)}); with a team, a mode may name its "
                                     "sharers: fusion:A, fusion:A+B")
    lengths = ("max_new_tokens", "hint_max_new_tokens")
    add_settings_options(p, GenerationSettings, "answers in this run", names=lengths,
                         defaults=dict.fromkeys(lengths, "the set-up panel's."))
    run.add_argument("--concurrent", action="store_true", help="run the panes concurrently")
    run.add_argument("--screenshot", metavar="FILE.png", help="save a screenshot of the whole window when done")
    run.add_argument("--exit", action="store_true", help="quit when done (exit status 0 on success)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error on stderr")
    return p


def _say(message: str) -> None:
    print(f"c2c-playground: {message}", file=sys.stderr, flush=True)


def _no_qt(exc: BaseException) -> int:
    """PySide6 itself is missing or broken: no Qt dialog is possible, so try Tk, then the terminal."""
    _tell_without_qt(f"C2C Playground cannot start: Qt for Python (PySide6) does not load ({exc}).\n\n"
                     f"Install it with: {sys.executable} -m pip install PySide6-Essentials")
    return EXIT_INSTALL


def _tell_without_qt(text: str, dialog: bool = True) -> None:
    """The terminal, and a Tk dialog (it needs neither Qt nor the xcb libraries) for a launch from a menu."""
    _say(text)
    if not dialog:
        return
    try:
        import tkinter
        from tkinter import messagebox

        root = tkinter.Tk()
        root.withdraw()
        messagebox.showerror("C2C Playground", text)
        root.destroy()
    except Exception:  # noqa: BLE001 - no display or no Tk: the terminal message above is all we can do
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:  # the window's unexpected errors then log their traceback (c2c_playground.window)
        logging.getLogger("c2c_playground").setLevel(logging.DEBUG)
    headless = bool(args.prompt or args.screenshot or args.exit)
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError as exc:
        return _no_qt(exc)
    if QApplication.instance() is None:
        from .platform_check import problem

        # Qt aborts (a core dump) when its platform plugin does not load: find out first, and say why
        text = problem()
        if text is not None:
            _tell_without_qt(text, dialog=not args.exit and bool(os.environ.get("DISPLAY")))
            return EXIT_INSTALL
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "c2c-playground"])
    app.setApplicationName("c2c-playground")  # X11 WM_CLASS: StartupWMClass in the .desktop file
    app.setApplicationDisplayName("C2C Playground")
    app.setOrganizationName("c2c-playground")
    app.setDesktopFileName("io.github.c2c_playground.C2CPlayground")  # packaging/*.desktop: the app id

    from .crash import missing_dependencies, missing_message, show_startup_problem

    missing = missing_dependencies()
    if missing:
        _say(missing_message(missing))
        if not args.exit:
            show_startup_problem(missing_message(missing))
        return EXIT_INSTALL
    try:
        from . import bridge, theme
        from .crash import CrashHandler
        from .window import MainWindow
    except ImportError as exc:
        from .crash import broken_install_message

        _say(broken_install_message(exc))
        if not args.exit:
            show_startup_problem(broken_install_message(exc))
        return EXIT_INSTALL

    theme.apply(app)
    bridge.install(app)
    window = MainWindow(persist=not headless)
    crash = CrashHandler(window, post=bridge.on_qt_thread)
    crash.install()
    window.show()
    app.processEvents()  # paint now, before any background work (listing presets, loading) competes for the GIL
    if os.environ.get("C2C_PLAYGROUND_STARTUP_REPORT"):
        _say(f"first paint after {time.perf_counter() - _STARTED:.3f} s; torch imported: {'torch' in sys.modules}")
    try:
        if args.exit:
            code = bridge.run_until_complete(start(window, args))
            window.close()
            return code
        # Interactive: the window is usable at once; loading and any --prompt run as a task meanwhile.
        task = bridge.spawn(start(window, args))
        bridge.run_forever()
        bridge.finish_pending()  # closed while loading or answering: cancel that cleanly
        return task.result() if task.done() and not task.cancelled() else EXIT_OK
    finally:
        crash.uninstall()
        window.session.shutdown()
        bridge.uninstall()


async def start(window: Any, args: argparse.Namespace) -> int:
    """Pick and load the pair the options name (or the demo pair), then run the prompt and take the screenshot."""
    from fusers.presets import DEMO_NAME
    from fusers.vocabulary import MAX_PANES, MIN_PANES, pane_mode_ok, parse_modes

    from . import pair_flow

    presets = await window.refresh_presets()
    if args.modes:
        try:
            modes = parse_modes(args.modes, least=MIN_PANES, most=MAX_PANES, sharers=True)  # fusion:A: a team's
            bad = next((m for m in modes if not pane_mode_ok(m)), None)
            if bad is not None:
                raise ValueError(f"--modes: {bad!r} names no sharers a pane can use (receiver uses none; names are "
                                 "letters, digits, _ - . joined by +, e.g. fusion:A+B).")
        except ValueError as exc:
            _say(f"error: {exc}")
            return EXIT_FAILED
        pair_flow.set_pane_modes(window, modes)
    gen = window.generation.settings()
    if args.max_new_tokens is not None or args.hint_max_new_tokens is not None:
        from dataclasses import replace

        try:
            gen = replace(gen, **{k: v for k, v in (("max_new_tokens", args.max_new_tokens),
                                                   ("hint_max_new_tokens", args.hint_max_new_tokens)) if v is not None})
        except ValueError as exc:
            _say(f"error: {exc}")
            return EXIT_FAILED
        window.generation.set_settings(gen)
    if args.concurrent:
        window.generation.set_concurrent(True)

    if os.environ.get("C2C_PLAYGROUND_REPORT"):
        _report_on_stderr(window)

    panel = window.pair_panel
    explicit = any((args.pair, args.receiver, args.sharer, args.fuser, args.receiver_adapter, args.sharer_adapter))
    if args.pair:
        if (preset := panel.choose_preset(args.pair)) is not None and preset.panes and not args.modes:
            pair_flow.set_pane_modes(window, preset.panes)  # the panes that show what the preset is for
        elif preset is None:
            # not a preset: a fuser folder or a downloaded pair's name, its models named by the fuser
            panel.preset.setCurrentIndex(0)
            panel.sharers.set_rows([])
            for row in (panel.receiver, panel.sharer):
                row.source.clear()
                row.adapter.clear()
            panel.set_fuser(args.pair)  # a team folder fills in every sharer
    elif explicit:
        panel.preset.setCurrentIndex(0)
        panel.sharers.set_rows([])
        for row in (panel.receiver, panel.sharer):
            row.source.clear()
            row.adapter.clear()
        panel.fuser.clear()
    elif any(p.name == DEMO_NAME for p in presets) and window.settings.pair_form().get("preset") in (None, DEMO_NAME):
        # the demo pair is the default (unless the user set up another pair), and small enough to load at once
        panel.choose_preset(DEMO_NAME)
        explicit = True
    for value, field in ((args.receiver, panel.receiver.source), (args.sharer, panel.sharer.source),
                         (args.receiver_adapter, panel.receiver.adapter), (args.sharer_adapter, panel.sharer.adapter),
                         (args.fuser, panel.fuser)):
        if value:
            field.setText(value)
    for row in (panel.receiver, *panel.sharers.rows):
        if args.device:
            row.device.setCurrentText(args.device)
        if args.dtype:
            row.dtype.setCurrentText(args.dtype)
        if args.quantize:
            row.quantize.setCurrentIndex(max(row.quantize.findData(args.quantize), 0))
    if args.cuda_graphs is not None:
        panel.cuda_graphs.setChecked(args.cuda_graphs)
    if args.compile is not None:
        panel.compile.setChecked(args.compile)

    if not explicit:
        if args.prompt:
            _say("error: no pair to answer with: pass --pair, or --receiver/--sharer/--fuser")
            return EXIT_FAILED
        return await _screenshot(window, args)
    task = window.load_from_form()
    if task is None or not await task:
        _say(f"error: {window.banner.message() or 'the pair did not load'}")
        await _screenshot(window, args)
        return EXIT_FAILED
    if args.prompt:
        run = window.send(args.prompt)
        if run is None:
            _say(f"error: {window.banner.message() or 'the prompt was not sent'}")
            return EXIT_FAILED
        await run
        from .widgets.pane import TurnState

        failed = [p for p in window.panes if p.current is not None and p.current.state is TurnState.ERROR]
        await _settle(window)
        code = await _screenshot(window, args)
        if failed:
            _say(f"error: {window.banner.message()}")
            return EXIT_FAILED
        return code
    return await _screenshot(window, args)


def _report_on_stderr(window: Any) -> None:
    """C2C_PLAYGROUND_REPORT=1: say on stderr what a test driving the real window from outside cannot see:
    the pair loaded, a pane's answer streaming, a run's end with each pane's state."""
    streaming: set[int] = set()

    def loaded() -> None:
        _say(f"report: pair loaded: {window.session.loaded.receiver}" if window.session.loaded else "report: no pair")

    def tokens(pane: Any) -> None:
        if pane.number not in streaming:
            streaming.add(pane.number)
            _say(f"report: pane {pane.number} ({pane.key}) streaming")

    def finished() -> None:
        streaming.clear()
        states = [f"pane {p.number} {p.key} {p.current.state if p.current else 'idle'} "
                  f"{len(p.current.answer_tokens) if p.current else 0} tokens" for p in window.panes]
        _say(f"report: run finished: {'; '.join(states)}")

    window.pair_changed.connect(loaded)
    window.run_finished.connect(finished)
    for pane in window.panes:
        pane.tokens_changed.connect(tokens)


async def _settle(window: Any) -> None:
    """Let the diff and the charts catch up before a screenshot."""
    from . import bridge

    for _ in range(100):
        if window.diff_idle():
            break
        await bridge.sleep(0.02)


async def _screenshot(window: Any, args: argparse.Namespace) -> int:
    if not args.screenshot:
        return EXIT_OK
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    if not window.save_screenshot(args.screenshot):
        _say(f"error: could not write the screenshot {args.screenshot}")
        return EXIT_SCREENSHOT
    _say(f"screenshot saved to {args.screenshot}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
