"""Every command in the README and the docs works as written.

Each command of a shell block (and each inline `c2c ...` span) is one test. How a command is checked is said
by a comment on the line before its block:

- ``<!-- test: run -->``: run for real, offline (HF_HUB_OFFLINE=1), with ``.venv/bin`` first on PATH (as an
  activated venv has it), in a scratch folder that links to the repository's files, so that relative paths
  work and what a command writes stays out of the checkout. Only quick ones: the demo pair and the app's
  headless mode answer in seconds. A ``python`` block marked so runs whole.
- ``<!-- test: dry -->`` (the default): checked without running. ``c2c`` and ``c2c-playground`` command lines
  are parsed by the real argument parsers, so every option, choice and required value must be as the code
  declares it; ``make`` targets must be rules of the Makefile; scripts (``python x.py``, ``bash x.sh``) must
  exist and compile; repository paths given as arguments must exist. A ``python`` block's imports run (every
  name it imports exists) and the rest compiles. This is how the long commands (a recipe of minutes, a
  download, the whole suite) are checked: what the user types is what the code takes.
- ``<!-- no-test: REASON -->``: not checkable here (a download, a GPU, sudo, a running server); the test is
  skipped with the reason, so ``pytest -rs`` lists them.

A line with ``...`` is a sketch (the options stand for the user's own), one with ``[--optional]`` parts or
``a | b`` alternatives is usage notation; both are skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
MARK = re.compile(r"^<!--\s*(?:test:\s*(run|dry)|no-test:\s*(.+?))\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
# commands that only a person at a connected machine (or a GPU, or root) can check: their blocks say no-test
UNCHECKABLE = {"pip", "pip3", "curl", "sudo", "apt-get", "dnf", "lm_eval", "pyinstaller", "hf", "git", "source"}
REPO_DIRS = ("resources/", "docs/", "packaging/", "benchmarks/", "tests/", "fusers/", "app/", ".ci/")
RUN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    kind: str  # "sh" (one command), "python" (a block), "inline" (an inline c2c span)
    how: str  # "run", "dry" or "skip"
    text: str
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _commands(body: list[str], first_line: int) -> list[tuple[int, str]]:
    """(line, command) of a shell block: continuation lines joined, comments and blank lines left out."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for offset, raw in enumerate(body):
        line = raw.rstrip()
        if not pending:
            start = first_line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            out.append((start, command))
    return out


def snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        lines = page.read_text().splitlines()
        mark: tuple[str, str] | None = None
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            if (m := MARK.match(line)) is not None:
                mark = ("run", "") if m.group(1) == "run" else ("dry", "") if m.group(1) else ("skip", m.group(2))
                i += 1
                continue
            fence = FENCE.match(line)
            if fence is None:
                if line and not line.startswith("<!--"):
                    mark = None  # a marker is for the block right after it
                    for span in re.findall(r"`(c2c(?:-playground)? [^`]+)`", lines[i]):
                        found.append(Snippet(name, i + 1, "inline", "dry", span))
                i += 1
                continue
            lang = fence.group(1)
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            body = lines[i + 1:end]
            how, reason = mark or ("dry", "")
            if lang in SHELL:
                for at, command in _commands(body, i + 2):
                    found.append(Snippet(name, at, "sh", how, command, reason))
            elif lang == "python":
                found.append(Snippet(name, i + 2, "python", how, "\n".join(body), reason))
            mark = None
            i = end + 1
    return found


SNIPPETS = snippets()


def _words(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)  # VAR=value before the command
    return words


def _parse(parser_of: str, argv: list[str], mention: bool = False) -> None:
    """Parse ``argv`` with the real parser; a parse error fails the test with the parser's own message. A
    ``mention`` (a command named in a sentence) may leave out required options; what it gives must hold."""
    import contextlib
    import io

    if parser_of == "c2c":
        from fusers.cli import build_parser
    else:
        from c2c_playground.main import build_parser
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as stop:
        message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
        if mention and "the following arguments are required" in message:
            return
        assert stop.code == 0, f"{parser_of} {shlex.join(argv)}: {message}"


def _check_paths(words: list[str]) -> None:
    for word in words:
        for value in (word, word.split("=", 1)[-1]):
            if value.startswith(REPO_DIRS) and not any(c in value for c in "*{}<>"):
                assert (ROOT / value).exists(), f"{value} does not exist in the repository"


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*):", (ROOT / "Makefile").read_text(), re.M))


def _check_script(path: str) -> None:
    script = ROOT / path
    assert script.is_file(), f"{path} does not exist"
    if script.suffix == ".py":
        compile(script.read_text(), str(script), "exec")
    elif script.suffix == ".sh":
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr


def dry(command: str, mention: bool = False) -> str | None:
    """Check a command without running it; returns a reason to skip it, or None when checked."""
    words = _words(command)
    if not words:
        return "no command"
    if any("..." in w and not w.startswith(("http", "/")) for w in words):
        return f"a sketch: '...' stands for the user's own options ({command})"
    if "|" in words or any(w.startswith("[") for w in words):
        return f"usage notation: [optional] parts or a | b alternatives ({command})"
    program = Path(words[0]).name
    _check_paths(words[1:])
    if program in ("c2c", "c2c-playground"):
        _parse(program, words[1:], mention)
    elif program == "make":
        targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        missing = set(targets) - _makefile_targets()
        assert not missing, f"make has no target {sorted(missing)}"
    elif program in ("bash", "sh"):
        _check_script(words[1])
    elif re.fullmatch(r"python(3(\.\d+)?)?", program):
        args = words[1:]
        if args[:1] == ["-c"]:
            compile(args[1], "<-c>", "exec")
        elif args[:2] == ["-m", "fusers.cli"]:
            _parse("c2c", args[2:])
        elif args[:2] == ["-m", "pytest"]:
            _check_paths([a for a in args[2:] if not a.startswith("-")])
        elif args[:2] == ["-m", "venv"]:
            pass  # the standard library's venv: nothing of ours to check
        elif args[:1] == ["-m"]:
            import importlib.util

            assert importlib.util.find_spec(args[1]) is not None, f"no module {args[1]}"
        else:
            _check_script(args[0])
    elif program in ("torchrun", "accelerate"):
        module = words.index("-m") if "-m" in words else None
        assert module is not None and words[module + 1] == "fusers.cli", command
        _parse("c2c", words[module + 2:])
    else:
        raise AssertionError(f"no way to check {program!r} here: run it (<!-- test: run -->) or say why not "
                             "(<!-- no-test: REASON -->) on the line before its block")
    return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder that links to the repository's files, and the environment of an activated venv, offline."""
    folder = tmp_path_factory.mktemp("docs-run")
    for entry in ROOT.iterdir():
        if entry.name not in (".git",):
            (folder / entry.name).symlink_to(entry)
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]), HF_HUB_OFFLINE="1",
               QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(folder / "config"), VIRTUAL_ENV=str(Path(bin_dir).parent))
    return folder, env


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_the_documented_command_works_as_written(snippet: Snippet, scratch: tuple[Path, dict[str, str]]) -> None:
    if snippet.how == "skip":
        pytest.skip(f"{snippet.text.splitlines()[0][:80]}: {snippet.reason}")
    if snippet.kind == "python":
        if snippet.how == "run":
            folder, env = scratch
            proc = subprocess.run([sys.executable, "-c", snippet.text], cwd=folder, env=env, capture_output=True,
                                  text=True, timeout=RUN_TIMEOUT_S)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return
        imports = "\n".join(line for line in snippet.text.splitlines() if line.startswith(("import ", "from ")))
        exec(compile(imports, snippet.id, "exec"), {})
        compile(snippet.text, snippet.id, "exec")
        return
    if snippet.how == "dry":
        reason = dry(snippet.text, mention=snippet.kind == "inline")
        if reason is not None:
            pytest.skip(reason)
        return
    folder, env = scratch
    proc = subprocess.run(snippet.text, shell=True, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, f"{snippet.text}\n{proc.stdout}\n{proc.stderr}"


def test_every_page_is_found_and_the_markers_are_used():
    """The collection itself: pages exist, and each kind of check has commands (a parse bug would find none)."""
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 5
    hows = {s.how for s in SNIPPETS}
    assert {"run", "dry", "skip"} <= hows
    assert any(s.kind == "inline" for s in SNIPPETS) and any(s.kind == "python" for s in SNIPPETS)
