"""The five answer modes: receiver alone, sharer alone, text relay, cache fusion, and relay + fusion.

Every mode streams through one callback (``on_event``) that the app and the CLI
share, can be cancelled between tokens with a ``threading.Event``, and returns
an :class:`Answer` with a :class:`~fusers.timing.Timing` record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import random
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union

from .alignment import TokenAligner
from .chat import check_messages, encode, find_stop, user
from .devices import PeakMemory, overlapped
from .errors import ContextLengthError, ModeUnavailableError, PairMismatchError
from .generation import Detokenizer, GenerationSettings, Interrupted, decode, prefill
from .timing import Recorder, Timing

if TYPE_CHECKING:
    import torch

    from .fuser import LayerFusion  # imports torch: kept out of the app's first paint
    from .pair import LoadedModel, Pair
    from .team import TeamMember


class Mode(str, Enum):
    RECEIVER = "receiver"
    SHARER = "sharer"
    RELAY = "relay"
    FUSION = "fusion"
    HYBRID = "hybrid"  # text relay's hint and cache fusion's fused cache together

    @property
    def label(self) -> str:
        return MODE_LABELS[self]

    @property
    def writes_hint(self) -> bool:
        """The sharer writes a hint that the receiver reads in its prompt (the answer carries it)."""
        return self in (Mode.RELAY, Mode.HYBRID)

    @property
    def needs_fuser(self) -> bool:
        """The receiver's cache is fused from the sharer's: unavailable without a fuser."""
        return self in (Mode.FUSION, Mode.HYBRID)


# how cache fusion runs its two prefills: at the same time where a GPU takes part, or always, or one by one
PREFILLS = ("auto", "overlap", "sequential")

MODE_LABELS = {
    Mode.RECEIVER: "Receiver alone",
    Mode.SHARER: "Sharer alone",
    Mode.RELAY: "Text relay",
    Mode.FUSION: "Cache fusion",
    Mode.HYBRID: "Relay + fusion",
}

# The reference's text-relay prompts (the paper's "T2T" baseline).
RELAY_CONTEXT_PROMPT = (
    "In one clear sentence, describe the most essential background knowledge needed to answer the question:"
    "\n\n{question}\n\nDo NOT directly solve or give answer to the question."
)
RELAY_ANSWER_PROMPT = "Based on the background, accurately answer the question:\n\n{question}"


@dataclass(frozen=True)
class TokenEvent:
    mode: Mode
    part: str  # "hint" (the sharer's, in text relay and relay + fusion) or "answer"
    token_id: int
    text: str  # the text this token adds
    elapsed: float  # seconds since the run began
    sharer: str = ""  # a team's hint tokens: which sharer writes them (fusers.team); else ""


@dataclass(frozen=True)
class PhaseEvent:
    mode: Mode
    phase: str  # one of fusers.timing.PHASES
    start: float
    end: float | None  # None when the phase begins
    sharer: str = ""  # a team's sharer phases (prefill, hint, fuse): which sharer's; else ""


Event = Union[TokenEvent, PhaseEvent]


@dataclass
class Answer:
    mode: Mode
    text: str
    token_ids: list[int]  # generated ids only, final end-of-sequence excluded
    timing: Timing
    finish_reason: str  # "eos", "length" or "cancelled"
    hint: str | None = None  # text relay and relay + fusion: the sharer's hint
    hint_token_ids: list[int] | None = None
    fusion: list[LayerFusion] | None = None  # cache fusion and relay + fusion: what each receiver layer took
    settings: dict[str, Any] = field(default_factory=dict)
    # a team (fusers.team): the mode as asked ("fusion:A+B"), the sharers that took part, each one's hint
    mode_key: str = ""
    sharers: list[str] | None = None
    hints: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode_key or self.mode.value,
            "text": self.text,
            "token_ids": list(self.token_ids),
            "timing": self.timing.to_dict(),
            "finish_reason": self.finish_reason,
        }
        if self.hint is not None:
            out["hint"] = self.hint
            out["hint_token_ids"] = list(self.hint_token_ids or [])
        if self.fusion is not None:
            out["fusion"] = [vars(f) for f in self.fusion]
        if self.sharers is not None:
            out["sharers"] = list(self.sharers)
        if self.hints is not None:
            out["hints"] = dict(self.hints)
        return out


class _Stop(Exception):
    """Internal: the run was cancelled between phases."""


class Engine:
    """Answers conversations with a loaded :class:`~fusers.pair.Pair`. Not thread-safe: one run at a time."""

    def __init__(self, pair: "Pair", prefills: str = "auto"):
        if prefills not in PREFILLS:
            raise ValueError(f"prefills must be one of {', '.join(PREFILLS)}, got {prefills!r}")
        self.pair = pair
        self.prefills = prefills
        self._aligners: dict[int, TokenAligner] = {}  # per fuser (a team has one per sharer)

    def overlaps_prefills(self) -> bool:
        """Whether cache fusion runs the sharer's and the receiver's prefills at the same time: by default
        (``auto``) only where the two models sit on different devices, one of them a GPU. On one GPU, two
        Python threads feeding it fought over the GIL and the launch queue: measured on an H200, overlapped
        prefills were 1.77x slower to the first token than sequential ones. On a CPU they only share its cores."""
        return self._overlaps([self.pair.sharer])

    def _overlaps(self, sharers: "Sequence[LoadedModel]") -> bool:
        if self.prefills != "auto":
            return self.prefills == "overlap"
        receiver = self.pair.receiver.device
        return any(s.device != receiver and "cuda" in (receiver.type, s.device.type) for s in sharers)

    def devices(self, mode: Mode | str) -> list["torch.device"]:
        """The devices a run of ``mode`` uses, the answering model's first (the fuser sits on the receiver's)."""
        from .team import devices, members, parse_mode, select

        mode, names = parse_mode(mode)
        if mode is Mode.RECEIVER:
            return [self.pair.receiver.device]
        try:
            chosen = select(self.pair, mode, names)
        except ModeUnavailableError:  # a mode this pair cannot run (answer says why): the devices it would use
            chosen = members(self.pair)
        if mode is Mode.SHARER:
            return [chosen[0].sharer.device]
        return devices(self.pair, chosen)

    def available_modes(self) -> list[Mode]:
        return [m for m in Mode if not m.needs_fuser or self.pair.fuser is not None]

    def answer(
        self,
        mode: Mode | str,
        messages: Sequence[dict[str, str]],
        settings: GenerationSettings | None = None,
        *,
        on_event: Callable[[Event], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        from .team import mode_key, parse_mode, select

        mode, names = parse_mode(mode)  # "fusion:A+B": a team's sharers A and B
        settings = settings or GenerationSettings()
        if settings.do_sample and settings.seed is None:
            # draw the seed here, so the answer records it and the run can be repeated
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        messages = check_messages(messages)
        if mode.needs_fuser and self.pair.fuser is None:
            raise ModeUnavailableError(f"{mode.label} needs a fuser: load one with the pair (--fuser or the app's "
                                       "Fuser box).")
        chosen = [] if mode is Mode.RECEIVER else select(self.pair, mode, names)
        cancel = cancel or threading.Event()

        def emit(event: Event) -> None:
            if on_event is not None:
                on_event(event)

        devices = self.devices(mode_key(mode, names))
        rec = Recorder(devices, on_phase=lambda name, s, e, who="": emit(PhaseEvent(mode, name, s, e, who)))
        run = _Run(mode, settings, rec, emit, cancel)
        run.named = bool(self.pair.members)
        with PeakMemory(*devices) as peak, _seeded(settings, devices):
            try:
                if mode is Mode.RECEIVER:
                    self._alone(self.pair.receiver, messages, run)
                elif mode is Mode.SHARER:
                    run.sharer_name = chosen[0].name if run.named else ""
                    self._alone(chosen[0].sharer, messages, run)
                elif mode is Mode.RELAY:
                    self._alone(self.pair.receiver, self._write_hint(messages, run, chosen), run)
                elif mode is Mode.FUSION:
                    self._fused(messages, run, chosen)
                else:  # relay + fusion: relay's answer prompt, over a fused cache
                    self._fused(self._write_hint(messages, run, chosen), run, chosen)
            except (_Stop, Interrupted):
                run.finish_reason = "cancelled"
            finally:
                end = rec.elapsed()
                rec.close_open(end)
        t = rec.timing
        t.total = end
        t.peak_memory_bytes = peak.peak_bytes
        t.peak_memory_by_device = peak.by_device
        t.tokens_out = len(run.answer_ids)
        if len(run.token_times) > 1:
            t.decode_tokens_per_s = (len(run.token_times) - 1) / max(run.token_times[-1] - run.token_times[0], 1e-9)
        return Answer(
            mode=mode,
            text=run.answer_text,
            token_ids=run.answer_ids,
            timing=t,
            finish_reason=run.finish_reason,
            hint=run.hint_text if mode.writes_hint else None,
            hint_token_ids=run.hint_ids if mode.writes_hint else None,
            fusion=run.fusion,
            settings=settings.to_dict(),
            mode_key=mode_key(mode, names) if names is not None else "",
            sharers=[m.name for m in chosen] if run.named else None,
            hints=run.hints if run.named and mode.writes_hint else None,
        )

    # -- modes --------------------------------------------------------------------------------------------

    def _alone(self, model: "LoadedModel", messages: list[dict[str, str]], run: "_Run") -> None:
        run.rec.start("tokenize")
        ids = encode(model.tokenizer, messages, run.settings.thinking)
        run.rec.end("tokenize")
        _check_length(model, len(ids))
        run.rec.timing.tokens_in = len(ids)
        run.generate(model, ids, part="answer", prefill_phase=f"{model.role}_prefill")

    def _write_hint(self, messages: list[dict[str, str]], run: "_Run", chosen: "list[TeamMember]"
                    ) -> list[dict[str, str]]:
        """Text relay's first step: the sharer writes its hint. Returns the conversation the receiver then
        answers (the context question, the hint as the answer to it, and the question again), which text relay
        and relay + fusion both answer, so that the two differ only by the fused cache. A team's sharers each
        write one, in turn; the receiver reads them one after another as the answer to the context question."""
        history, question = messages[:-1], messages[-1]["content"]
        context_turn = {"role": "user", "content": RELAY_CONTEXT_PROMPT.format(question=question)}
        hint_ids: list[int] = []
        for member in chosen:
            sharer = member.sharer
            run.sharer_name = member.name if run.named else ""
            run.hint_ids, run.hint_text = [], ""
            run.rec.start("tokenize")
            hint_prompt = encode(sharer.tokenizer, history + [context_turn], run.settings.thinking)
            run.rec.end("tokenize")
            _check_length(sharer, len(hint_prompt))
            run.generate(sharer, hint_prompt, part="hint", prefill_phase="sharer_prefill")
            run.check_cancel()
            run.hints[member.name] = run.hint_text.strip()
            hint_ids += run.hint_ids
        run.sharer_name = ""
        if len(chosen) > 1:
            run.hint_ids, run.hint_text = hint_ids, " ".join(h for h in run.hints.values() if h)
        return history + [
            context_turn,
            {"role": "assistant", "content": run.hint_text.strip()},
            {"role": "user", "content": RELAY_ANSWER_PROMPT.format(question=question)},
        ]

    def _fused(self, messages: list[dict[str, str]], run: "_Run", chosen: "list[TeamMember]") -> None:
        """Cache fusion over ``messages``: the receiver and every chosen sharer prefill them, each sharer's fuser
        fuses the receiver's cache from its sharer's (fusers.team: every fuser's residual is added), the receiver
        decodes. Relay + fusion calls it with text relay's answer conversation."""
        import torch

        from .team import check_same_receiver_ids, fuse_team

        receiver = self.pair.receiver
        run.rec.start("tokenize")
        r_ids: list[int] | None = None
        sharer_ids = []
        for member in chosen:
            if member.fuser.info.is_do_alignment:
                aligned = self._get_aligner(member).align_chat(messages, run.settings.thinking)
                m_r, m_s = aligned.receiver_ids, aligned.sharer_ids
            else:
                # the published Qwen pairs feed the receiver's ids, template included, to both models
                m_r = encode(receiver.tokenizer, messages, run.settings.thinking)
                m_s = m_r
            if r_ids is None:
                r_ids = m_r
            else:
                check_same_receiver_ids(r_ids, m_r, member.name)
            sharer_ids.append(m_s)
        run.rec.end("tokenize")
        _check_length(receiver, len(r_ids))
        for member, s_ids in zip(chosen, sharer_ids):
            _check_length(member.sharer, len(s_ids))
            vocab = member.sharer.model.get_input_embeddings().num_embeddings
            if max(s_ids) >= vocab:
                which = f"sharer {member.name}'s" if run.named else "sharer's"
                raise PairMismatchError(
                    f"The receiver's token ids reach {max(s_ids)}, past the {which} vocabulary of {vocab}: these "
                    "tokenizers differ, but the fuser does not align tokens. Use a fuser made with token alignment."
                )
        run.rec.timing.tokens_in = len(r_ids)
        run.check_cancel()

        # Every model prefills all but the last prompt token; the receiver feeds that token when decoding.
        jobs = [(member.name if run.named else "", member.sharer,
                 torch.tensor([s_ids[:-1]], device=member.sharer.device))  # (1, N-1)
                for member, s_ids in zip(chosen, sharer_ids)]
        r_input = torch.tensor([r_ids[:-1]], device=receiver.device)  # (1, N-1)
        overlap = self._overlaps([m.sharer for m in chosen])
        run.rec.timing.prefills = "overlapped" if overlap else "sequential"
        if overlap:  # independent until the fuse: TTFT nears the longer prefill, not the sum
            # sharers on another device than the receiver prefill in a worker thread, one after another; the
            # receiver and the sharers on its device on this thread
            away = [j for j in jobs if j[1].device != receiver.device]
            home = [j for j in jobs if j[1].device == receiver.device]
            if not away:  # overlap asked for on one device: the sharers in the worker, the receiver here
                away, home = home, []
            for who, _, _ in jobs:
                run.rec.start("sharer_prefill", who)
            run.rec.start("receiver_prefill")
            away_out, _, home_out, _ = overlapped(
                lambda: self._prefill_lane(away, run), away[0][1].device,
                lambda: self._prefill_lane(home, run) + [(
                    "", prefill(receiver.model, r_input, run.cancel), _lane_clock(receiver.device))],
                receiver.device)
            receiver_cache, receiver_end = home_out.pop()[1:]
            caches = dict((who, cache) for who, cache, _ in away_out + home_out)
            for who, _, end in away_out + home_out:
                run.rec.end("sharer_prefill", end - run.rec.t0, sharer=who)
            run.rec.end("receiver_prefill", receiver_end - run.rec.t0)
        else:
            caches = {}
            for who, sharer, s_input in jobs:
                run.rec.start("sharer_prefill", who)
                caches[who] = prefill(sharer.model, s_input, run.cancel)
                run.rec.end("sharer_prefill", sharer=who)
                run.check_cancel()
            run.rec.start("receiver_prefill")
            receiver_cache = prefill(receiver.model, r_input, run.cancel)
            run.rec.end("receiver_prefill")
        run.check_cancel()

        def bracket(name: str, begins: bool) -> None:
            who = name if run.named else ""
            run.rec.start("fuse", who) if begins else run.rec.end("fuse", sharer=who)

        if len(r_ids) > 1:
            parts = [(member, caches[who]) for member, (who, _, _) in zip(chosen, jobs)]
            run.fusion = fuse_team(receiver_cache, parts, named=run.named, on_fuse=bracket)
        else:
            run.rec.start("fuse")
            run.fusion = []
            run.rec.end("fuse")
        del caches
        run.check_cancel()
        run.generate(receiver, r_ids, part="answer", prefill_phase=None, cache=receiver_cache)

    @staticmethod
    def _prefill_lane(jobs: list, run: "_Run") -> list[tuple[str, Any, float]]:
        """Prefill ``jobs`` (name, sharer, ids) one after another: [(name, cache, the clock when it was done)]."""
        return [(who, prefill(sharer.model, ids, run.cancel), _lane_clock(sharer.device)) for who, sharer, ids in jobs]

    def _get_aligner(self, member: "TeamMember") -> TokenAligner:
        key = id(member.fuser)
        if key not in self._aligners:
            self._aligners[key] = TokenAligner(self.pair.receiver.tokenizer, member.sharer.tokenizer,
                                               member.fuser.info.alignment_strategy)
        return self._aligners[key]


def _lane_clock(device: "torch.device") -> float:
    """``time.perf_counter()`` once ``device``'s current stream is done (not the whole device: the other lane of
    overlapped prefills runs on it)."""
    import time

    import torch

    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


class _Run:
    """State of one answer as it streams."""

    def __init__(self, mode: Mode, settings: GenerationSettings, rec: Recorder, emit: Callable[[Event], None],
                 cancel: threading.Event):
        self.mode, self.settings, self.rec, self.emit, self.cancel = mode, settings, rec, emit, cancel
        self.answer_ids: list[int] = []
        self.answer_text = ""
        self.hint_ids: list[int] = []
        self.hint_text = ""
        self.token_times: list[float] = []
        self.finish_reason = "length"
        self.fusion: list[LayerFusion] | None = None
        self.named = False  # a team's run: phases, hint tokens and gates name their sharer
        self.sharer_name = ""  # the sharer now prefilling or writing its hint (a team's)
        self.hints: dict[str, str] = {}  # each sharer's hint (text relay, relay + fusion)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise _Stop

    def _record_path(self, path: str) -> None:
        paths = self.rec.timing.decode_path
        self.rec.timing.decode_path = path if paths in ("", path) else f"{paths}, {path}"  # relay: hint, answer

    def generate(self, model: "LoadedModel", ids: list[int], *, part: str, prefill_phase: str | None,
                 cache: Any = None) -> None:
        import torch

        self.check_cancel()
        is_hint = part == "hint"
        limit = self.settings.hint_max_new_tokens if is_hint else self.settings.max_new_tokens
        limit = max(1, min(limit, model.context_length - len(ids)))
        detok = Detokenizer(model.tokenizer)
        eos = set() if self.settings.ignore_eos else set(model.eos_token_ids)
        who = self.sharer_name if model.role == "sharer" else ""
        if prefill_phase is not None:  # the prompt but its last token, as cache fusion prefills it
            self.rec.start(prefill_phase, who)
            cache = prefill(model.model, torch.tensor([ids[:-1]], device=model.device), self.cancel)  # (1, N-1)
            self.rec.end(prefill_phase, sharer=who)
            self.check_cancel()
        self.rec.start("hint" if is_hint else "decode", who)  # from the last prompt token on, the first step included
        first = True
        hit_eos = False
        stop = threading.Event()
        shown = ""  # the text streamed so far: text that may begin a stop string waits

        def on_token(token: int) -> None:
            nonlocal first, hit_eos, shown
            at = self.rec.elapsed()
            if first:
                first = False
                if not is_hint:
                    self.rec.timing.ttft = at
            if token in eos:
                hit_eos = True
                return  # end of sequence: not part of the answer
            delta = detok.push(token)
            out = self.hint_ids if is_hint else self.answer_ids
            out.append(token)
            text = detok.text
            if model.stop_strings:
                text = text.lstrip()  # plain turns: the answer follows "Answer:" after a space or a line break
                at_stop, held = find_stop(text, model.stop_strings)
                if at_stop is not None:  # the model began a new turn: the answer ends before it
                    stop.set()
                    hit_eos = True
                    text = text[:at_stop].rstrip()
                    while out and len(model.tokenizer.decode(out, skip_special_tokens=True).rstrip()) > len(text):
                        out.pop()  # the stop string's tokens are not part of the answer
                else:
                    text = text[:len(text) - held]
                delta = text[len(shown):] if text.startswith(shown) else ("" if shown.startswith(text) else delta)
                shown = text
            if is_hint:
                self.hint_text = text
            else:
                self.answer_text = text
                self.token_times.append(at)
            self.emit(TokenEvent(self.mode, part, token, delta, at, who))

        input_ids = torch.tensor([ids], device=model.device)  # (1, N)
        decode(
            model.model, input_ids, self.settings, max_new_tokens=limit, eos_token_ids=model.eos_token_ids,
            pad_token_id=model.tokenizer.pad_token_id, cache=cache, on_token=on_token, cancel=self.cancel,
            stop=stop, static=model.decoder, on_path=self._record_path,
        )
        if model.stop_strings and not stop.is_set():  # ended without a new turn: the text held back is answer
            if is_hint:
                self.hint_text = detok.text.strip()
            else:
                self.answer_text = detok.text.strip()
        self.rec.close_open(self.rec.elapsed())
        if self.cancel.is_set():
            raise _Stop
        if not is_hint:
            self.finish_reason = "eos" if hit_eos else "length"


WARM_UP_PROMPT = "Hello! Who are you?"


def warm_up(pair: "Pair", cancel: threading.Event | None = None) -> None:
    """Answer a short prompt once in each mode of ``pair``, a few tokens each, and forget the answers.

    A process's first run pays one-time costs (the allocator's first blocks, kernel selection and caches,
    the tokenizers' and chat templates' first calls): the first pane to run looked twice as slow as it is.
    Text relay runs both models' prefill and decode, cache fusion the fuser too; the modes of one model
    alone use the same steps.
    """
    engine = Engine(pair)
    settings = GenerationSettings(max_new_tokens=4, hint_max_new_tokens=4, ignore_eos=True)
    messages = user(WARM_UP_PROMPT)
    for mode in (Mode.RELAY, Mode.FUSION) if pair.fuser is not None else (Mode.RELAY,):
        if cancel is not None and cancel.is_set():
            return  # the caller sees the cancel: load_pair raises Cancelled
        engine.answer(mode, messages, settings, cancel=cancel)


def _check_length(model: "LoadedModel", n_tokens: int) -> None:
    if n_tokens >= model.context_length:
        raise ContextLengthError(
            f"The prompt is {n_tokens} tokens, but the {model.role}'s context holds {model.context_length}; "
            "shorten the prompt or clear the conversation."
        )


# torch's sampling RNG is process-wide: runs that sample take turns, so concurrent runs stay reproducible
_SAMPLING_LOCK = threading.Lock()


@contextlib.contextmanager
def _seeded(settings: GenerationSettings, devices: "list[torch.device]") -> Iterator[None]:
    """Sampling draws from a private RNG state seeded per run; greedy runs leave RNG alone."""
    if not settings.do_sample:
        yield
        return
    import torch

    gpus = [d.index for d in devices if d.type == "cuda"]
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=gpus):
        torch.manual_seed(settings.seed)
        yield


_DONE = object()


def stream(
    engine: Engine,
    mode: Mode | str,
    messages: Sequence[dict[str, str]],
    settings: GenerationSettings | None = None,
) -> Iterator[Event | Answer]:
    """Iterate a run's events, then its :class:`Answer`. Closing the iterator early cancels the run."""
    events: "queue.Queue[Any]" = queue.Queue()
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["answer"] = engine.answer(mode, messages, settings, on_event=events.put, cancel=cancel)
        except BaseException as exc:  # handed to the consumer's thread below
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=work, name="c2c-stream", daemon=True)
    thread.start()
    try:
        while (item := events.get()) is not _DONE:
            yield item
    finally:
        cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["answer"]
