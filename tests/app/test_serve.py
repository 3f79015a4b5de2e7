"""Pair ▸ Serve on localhost…: the app serves its loaded pair to the openai client, on its models' thread, in turn
with the panes, and stops the server on request or when the pair goes."""

from __future__ import annotations

import threading

import openai
import pytest
from openai import OpenAI

from c2c_playground import bridge
from fusers.chat import user
from fusers.engine import Mode
from fusers.generation import GenerationSettings
from fusers.presets import DEMO_NAME
from playground_helpers import ModelProbe, run

QUESTION = user("What is the national animal of Mavar?")


def _serve_action(window):
    return next(a for a in window.pair_menu.actions() if a.text().replace("&", "").startswith("Serve on localhost"))


def _ask(loop, client, **kwargs):
    """Call the server from another thread, as a client would, while Qt and asyncio keep running."""
    return run(loop, loop.run_in_executor(None, lambda: client.chat.completions.create(**kwargs)))


def test_the_menu_serves_the_loaded_pair_to_the_openai_client_and_stops(window, loop, qtbot):
    run(loop, window.refresh_presets())
    assert window.pair_panel.choose_preset(DEMO_NAME) is not None
    assert run(loop, window.load_from_form()), window.banner.message()
    _serve_action(window).trigger()
    dialog = window.serving.dialog
    assert dialog.isVisible() and dialog.start_button.text() == "Start"
    dialog.port.setValue(0)  # any free port
    window.generation.set_settings(GenerationSettings(max_new_tokens=5))  # a request's defaults
    dialog.start_button.click()
    assert dialog._task is not None and run(loop, dialog._task), dialog.error.text()
    server = window.session.server
    assert dialog.address.text() == server.url and server.url.startswith("http://127.0.0.1:")
    assert window.serving.label.text() == f"API: {server.url}"
    assert dialog.start_button.text() == "Stop"

    settings = GenerationSettings(max_new_tokens=16)
    in_app = run(loop, window.session.answer(Mode.FUSION, QUESTION, settings, on_event=lambda e: None,
                                             cancel=threading.Event()))
    panes_before = [p.current for p in window.panes]
    with OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as client:
        assert [m.id for m in client.models.list().data] == [f"demo/{m.value}" for m in Mode]
        with ModelProbe(window.session.engine.pair) as probe:
            reply = _ask(loop, client, model="demo/fusion", messages=QUESTION, max_tokens=16, temperature=0)
        assert reply.choices[0].message.content == in_app.text and in_app.text
        # the answer ran where the panes' do: on the app's one models' thread
        assert {t.name.split("_")[0] for _, t in probe.threads} == {"c2c-models"}
        assert [p.current for p in window.panes] == panes_before  # no pane shows it
        short = _ask(loop, client, model="demo/sharer", messages=QUESTION)
        assert short.usage.completion_tokens == 5 and short.choices[0].finish_reason == "length"
        assert dialog.error.text() == ""
        qtbot.waitUntil(lambda: "2 answers given" in dialog.activity.text())

        job = dialog.stop()
        run(loop, job)
        assert window.session.server is None and not dialog.serving
        assert window.serving.label.text() == "" and dialog.start_button.text() == "Start"
        with pytest.raises(openai.APIConnectionError):
            client.models.list()


def test_unloading_the_pair_stops_its_server(window, loop, qtbot):
    run(loop, window.refresh_presets())
    window.pair_panel.choose_preset(DEMO_NAME)
    assert run(loop, window.load_from_form()), window.banner.message()
    dialog = window.serving.open()
    dialog.port.setValue(0)
    assert run(loop, dialog.start()), dialog.error.text()
    server = window.session.server
    run(loop, window.unload())
    assert window.session.server is None and server.closed
    assert run(loop, loop.run_in_executor(None, server.join, 30))
    assert "The pair changed, so the server stopped" in dialog.error.text()
    assert window.serving.label.text() == "" and not dialog.start_button.isEnabled()  # nothing loaded to serve


def test_an_api_answer_never_runs_while_a_concurrent_pane_run_does(loop, qtbot):
    models = bridge.ModelThread()
    order: list[str] = []
    pane_inside, pane_may_end = threading.Event(), threading.Event()

    def pane_run() -> None:
        pane_inside.set()
        pane_may_end.wait(60)
        order.append("pane run ends")

    try:
        pane = models.call_concurrently(pane_run)
        assert pane_inside.wait(60)
        api = models.submit_alone(lambda: order.append("API answer begins"))
        qtbot.waitUntil(lambda: models._turns._waiting == 1)  # at the gate, not running
        pane_may_end.set()
        run(loop, pane)
        api.result(60)
        assert order == ["pane run ends", "API answer begins"]

        # and the other way round: a concurrent pane run waits for the API answer
        api_inside, api_may_end = threading.Event(), threading.Event()
        api = models.submit_alone(lambda: (api_inside.set(), api_may_end.wait(60), order.append("API answer ends")))
        assert api_inside.wait(60)
        pane = models.call_concurrently(lambda: order.append("pane run begins"))
        qtbot.waitUntil(lambda: models._turns._waiting_shared == 1)  # at the gate, not running
        api_may_end.set()
        run(loop, pane)
        assert order[2:] == ["API answer ends", "pane run begins"]
    finally:
        pane_may_end.set()
        models.shutdown(wait=True)
