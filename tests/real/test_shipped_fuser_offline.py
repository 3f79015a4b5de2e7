"""The specialist's fuser folder alone loads its pair, as the README says, online and asking the Hub nothing: it
records its receiver by the bundled SmolLM2 file's name and its sharer as c2c-specialist/adapter, names the engine
maps to the installed file and the shipped adapter folder (whose base, the bundled Gemma, it names the same way)."""

from __future__ import annotations

import json

CLI = "import sys; from fusers.cli import main; sys.exit(main(sys.argv[1:]))"  # `c2c ...`, as its entry point runs it


def test_the_specialist_fuser_alone_answers_from_the_cli_with_no_hub_request(real_paths, counting_hub):
    from fusers.specialist import pair_paths

    fuser = str(pair_paths()[2])
    out = counting_hub.run_child(CLI, "compare", "--fuser", fuser, "--prompt", "Which office does Alex Price work in?",
                                 "--modes", "fusion", "--max-new-tokens", "16", "--device", "cpu", "--json")
    answer = json.loads(out.splitlines()[-1])
    assert answer["mode"] == "fusion" and "Lyon" in answer["text"]  # what only the specialist sharer knows
    assert counting_hub.requests == []
