"""The five answer modes: receiver alone, sharer alone, text relay, cache fusion, and relay + fusion.

Every mode streams through one callback (``on_event``) that the app and the CLI
share, can be cancelled between tokens with a ``threading.Event``, and returns
an :class:`Answer` with a :class:`~fusers.timing.Timing` record.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .alignment import TokenAligner
from .answers import Answer, Event, PhaseEvent, TokenEvent, stream  # noqa: F401  (re-exported from here too)
from .chat import check_fits, check_in_vocabulary, check_messages, encode, find_stop, user
from .devices import PeakMemory, overlapped
from .errors import ContextLengthError, ModeUnavailableError
from .generation import Detokenizer, GenerationSettings, Interrupted, decode, prefill, seeded
from .relay import RELAY_ANSWER_PROMPT, RELAY_CONTEXT_PROMPT, relay_turns as _relay_turns  # noqa: F401 (re-exported)
from .static_decode import StaticPrefix
from .timing import Recorder, decode_rate
from .vocabulary import MODE_LABELS, PREFILLS, Mode  # noqa: F401  (re-exported: fusers.engine.Mode)

if TYPE_CHECKING:
    import torch

    from .fuser import LayerFusion  # imports torch: kept out of the app's first paint
    from .pair import LoadedModel, Pair
    from .team import TeamMember


def draw_seed(settings: GenerationSettings) -> GenerationSettings:
    """``settings`` with a seed drawn when it samples and names none, so the answer records the seed and the run
    can be repeated: the one place a seed is drawn. Draw it once for runs that should sample alike (the app's
    panes of one send); :meth:`Engine.answer` draws for a caller that did not."""
    if settings.do_sample and settings.seed is None:
        return dataclasses.replace(settings, seed=random.randrange(2**31))
    return settings


class _Stop(Exception):
    """Internal: the run was cancelled between phases."""


class Engine:
    """Answers conversations with a loaded :class:`~fusers.pair.Pair`. Not thread-safe: one run at a time."""

    def __init__(self, pair: "Pair", prefills: str = "auto"):
        if prefills not in PREFILLS:
            raise ValueError(f"prefills must be one of {', '.join(PREFILLS)}, got {prefills!r}")
        self.pair = pair
        self.prefills = prefills
        self._aligner: TokenAligner | None = None
        self._aligners: dict[int, TokenAligner] = {}  # a team's, by fuser (fusers.team_run)

    def overlaps_prefills(self) -> bool:
        """Whether cache fusion runs the sharer's and the receiver's prefills at the same time: by default
        (``auto``) only where the two models sit on different devices, one of them a GPU. On one GPU, two
        Python threads feeding it fought over the GIL and the launch queue: measured on an H200, overlapped
        prefills were 1.77x slower to the first token than sequential ones. On a CPU they only share its cores."""
        if self.prefills != "auto":
            return self.prefills == "overlap"
        receiver, sharer = self.pair.receiver.device, self.pair.sharer.device
        return receiver != sharer and "cuda" in (receiver.type, sharer.type)

    def devices(self, mode: Mode | str) -> list["torch.device"]:
        """The devices a run of ``mode`` uses, the answering model's first (the fuser sits on the receiver's)."""
        from .team import parse_mode, team_devices

        if self.pair.members:  # a team: the sharers the mode names (fusers.team)
            return team_devices(self.pair, mode)
        mode = parse_mode(mode)[0]  # a pair's one sharer may be named too (fusion:sharer)
        receiver, sharer = self.pair.receiver.device, self.pair.sharer.device
        if mode in (Mode.RECEIVER, Mode.SHARER):  # one model alone
            return [getattr(self.pair, mode.answered_by).device]
        return [receiver] if sharer == receiver else [receiver, sharer]

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
        settings = draw_seed(settings or GenerationSettings())
        messages = check_messages(messages)
        if mode.needs_fuser and self.pair.fuser is None:
            raise ModeUnavailableError(f"{mode.label} needs a fuser: load one with the pair (--fuser or the app's "
                                       "Fuser box).")
        chosen = [] if mode is Mode.RECEIVER else select(self.pair, mode, names)
        self.check_fits(mode_key(mode, names), messages, settings)
        cancel = cancel or threading.Event()

        def emit(event: Event) -> None:
            if on_event is not None:
                on_event(event)

        devices = self.devices(mode_key(mode, names))
        rec = Recorder(devices, on_phase=lambda name, s, e, who="": emit(PhaseEvent(mode, name, s, e, who)))
        run = _AnswerInProgress(mode, settings, rec, emit, cancel)
        run.named, run.chosen = bool(self.pair.members), chosen
        with PeakMemory(*devices) as peak, seeded(settings, devices):
            try:
                if mode is Mode.RECEIVER:
                    self._alone(self.pair.receiver, messages, run)
                elif mode is Mode.SHARER:
                    run.sharer_name = chosen[0].name if run.named else ""
                    self._alone(chosen[0].sharer, messages, run)
                elif mode is Mode.RELAY:
                    self._alone(self.pair.receiver, self._write_hint(messages, run), run)
                elif mode is Mode.FUSION:
                    self._fused(messages, run)
                else:  # relay + fusion: relay's answer prompt, over a fused cache
                    self._fused(self._write_hint(messages, run), run)
            except (_Stop, Interrupted):
                run.finish_reason = "cancelled"
            finally:
                t = rec.finish(rec.elapsed())
        t.peak_memory_bytes = peak.peak_bytes
        t.peak_memory_by_device = peak.by_device
        t.tokens_out = len(run.answer_ids)
        if run.token_times:
            t.decode_tokens_per_s = decode_rate(len(run.token_times), run.token_times[0], run.token_times[-1])
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

    def check_fits(self, mode: Mode | str, messages: Sequence[dict[str, str]],
                   settings: GenerationSettings | None = None) -> None:
        """Raise :class:`ContextLengthError`, naming the mode, the token counts and the fix, when a run of ``mode``
        could outgrow a model's context: known from the prompt alone, before any model runs. Text relay's answer
        prompt counts the sharer's hint at its longest (``hint_max_new_tokens``); an answer itself stops where the
        context ends (finish reason "length")."""
        from .team import parse_mode, select

        mode, names = parse_mode(mode)
        settings = settings or GenerationSettings()
        receiver = self.pair.receiver
        # a team: every sharer the mode uses (each reads as the one sharer of a pair would)
        sharers = [m.sharer for m in select(self.pair, mode, names)] if self.pair.members and mode is not \
            Mode.RECEIVER else [self.pair.sharer]
        sharer = sharers[0]

        def tokens(model: "LoadedModel", conversation: list[dict[str, str]]) -> int:
            return len(encode(model.tokenizer, conversation, settings.thinking))

        messages = list(messages)
        if mode in (Mode.RECEIVER, Mode.SHARER):
            model = receiver if mode is Mode.RECEIVER else sharer
            _check_fits(mode, model, tokens(model, messages))
            return
        if mode is Mode.FUSION:  # both models read the receiver's tokens, or as many aligned sharer tokens
            for model in (receiver, *sharers):
                _check_fits(mode, model, tokens(receiver, messages))
            return
        hint_prompt, answer_prompt = _relay_turns(messages, hint="")
        for sharer in sharers:  # the sharer writes its hint: it stops at its context
            _check_fits(mode, sharer, tokens(sharer, hint_prompt))
        # the receiver answers after the hint; in relay + fusion the sharer reads the same, as many (aligned) tokens
        answer_tokens = tokens(receiver, answer_prompt)
        for model in (receiver,) if mode is Mode.RELAY else (receiver, *sharers):
            _check_fits(mode, model, answer_tokens, settings.hint_max_new_tokens * len(sharers))

    # -- modes --------------------------------------------------------------------------------------------

    def _alone(self, model: "LoadedModel", messages: list[dict[str, str]], run: "_AnswerInProgress") -> None:
        run.rec.start("tokenize")
        ids = encode(model.tokenizer, messages, run.settings.thinking)
        run.rec.end("tokenize")
        check_fits(model, len(ids))
        run.rec.timing.tokens_in = len(ids)
        run.generate(model, ids, part="answer", prefill_phase=f"{model.role}_prefill")

    def _write_hint(self, messages: list[dict[str, str]], run: "_AnswerInProgress") -> list[dict[str, str]]:
        """Text relay's first step: the sharer writes its hint. Returns the conversation the receiver then
        answers (the context question, the hint as the answer to it, and the question again), which text relay
        and relay + fusion both answer, so that the two differ only by the fused cache. A team's sharers each
        write one (fusers.team_run)."""
        if run.named:
            from .team_run import write_hints

            return write_hints(run, run.chosen, messages)
        sharer = self.pair.sharer
        run.rec.start("tokenize")
        hint_prompt = encode(sharer.tokenizer, _relay_turns(messages)[0], run.settings.thinking)
        run.rec.end("tokenize")
        check_fits(sharer, len(hint_prompt))
        run.generate(sharer, hint_prompt, part="hint", prefill_phase="sharer_prefill")
        run.check_cancel()
        return _relay_turns(messages, run.hint_text.strip())[1]

    def _fused(self, messages: list[dict[str, str]], run: "_AnswerInProgress") -> None:
        """Cache fusion over ``messages``: both models prefill them, the fuser fuses the receiver's cache from
        the sharer's, the receiver decodes. Relay + fusion calls it with text relay's answer conversation. A
        team's fusers each fuse their sharer's cache into the receiver's (fusers.team_run); a team never takes
        the GPU's fast path (:meth:`_static_fusion` fuses one sharer)."""
        import torch

        if run.named:
            from .team_run import fuse_team_run

            return fuse_team_run(self, messages, run, run.chosen)

        pair, fuser = self.pair, self.pair.fuser
        receiver, sharer = pair.receiver, pair.sharer
        run.rec.start("tokenize")
        if fuser.info.is_do_alignment:
            aligned = self._get_aligner().align_chat(messages, run.settings.thinking)
            r_ids, s_ids = aligned.receiver_ids, aligned.sharer_ids
        else:
            # the published Qwen pairs feed the receiver's ids, template included, to both models
            r_ids = encode(receiver.tokenizer, messages, run.settings.thinking)
            s_ids = r_ids
        run.rec.end("tokenize")
        check_fits(receiver, len(r_ids))
        check_fits(sharer, len(s_ids))
        check_in_vocabulary(sharer, s_ids)
        run.rec.timing.tokens_in = len(r_ids)
        run.check_cancel()

        # Both models prefill all but the last prompt token; the receiver feeds that token when decoding.
        s_input = torch.tensor([s_ids[:-1]], device=sharer.device)  # (1, N-1)
        r_input = torch.tensor([r_ids[:-1]], device=receiver.device)  # (1, N-1)
        static = self._static_fusion(r_input, s_input, run)
        if static is not None:
            run.generate(receiver, r_ids, part="answer", prefill_phase=None, cache=static)
            return
        run.rec.timing.prefills = "overlapped" if self.overlaps_prefills() else "sequential"
        if self.overlaps_prefills():  # independent until the fuse: TTFT nears the longer prefill, not the sum
            run.rec.start("sharer_prefill")
            run.rec.start("receiver_prefill")
            sharer_cache, sharer_end, receiver_cache, receiver_end = overlapped(
                lambda: prefill(sharer.model, s_input, run.cancel), sharer.device,
                lambda: prefill(receiver.model, r_input, run.cancel), receiver.device)
            run.rec.end("sharer_prefill", sharer_end - run.rec.t0)
            run.rec.end("receiver_prefill", receiver_end - run.rec.t0)
        else:
            run.rec.start("sharer_prefill")
            sharer_cache = prefill(sharer.model, s_input, run.cancel)
            run.rec.end("sharer_prefill")
            run.check_cancel()
            run.rec.start("receiver_prefill")
            receiver_cache = prefill(receiver.model, r_input, run.cancel)
            run.rec.end("receiver_prefill")
        run.check_cancel()
        run.rec.start("fuse")
        if len(r_ids) > 1:
            run.fusion = fuser.fuse_cache(receiver_cache, sharer_cache)
        else:
            run.fusion = []
        del sharer_cache
        run.rec.end("fuse")
        run.check_cancel()
        run.generate(receiver, r_ids, part="answer", prefill_phase=None, cache=receiver_cache)

    def _static_fusion(self, r_input: "torch.Tensor", s_input: "torch.Tensor", run: "_AnswerInProgress"
                       ) -> StaticPrefix | None:
        """Cache fusion's prefills and fuse on the GPU's fast path, or None (nothing done) where it cannot serve:
        both prefills replayed into the two models' static caches, one after the other (on one GPU, overlapping
        them was slower), and the fuser's captured pass fusing the receiver's cache in place. Returns the
        receiver's prefix, its decoder held until decoded."""
        pair, fuser = self.pair, self.pair.fuser
        r_dec, s_dec = pair.receiver.decoder, pair.sharer.decoder
        n = r_input.shape[-1]
        limit = max(run.settings.max_new_tokens, 1)
        if (self.prefills == "overlap" or r_dec is None or s_dec is None or fuser.graphs is None or s_input.shape[-1] != n
                or r_dec.bucket(n) is None or s_dec.bucket(n) is None or not r_dec.fits(n + 1 + limit)
                or not fuser.graphs.serves_static(n, r_dec, s_dec)):
            return None
        if not s_dec.lock.acquire(blocking=False):
            return None
        if not r_dec.lock.acquire(blocking=False):
            s_dec.lock.release()
            return None
        run.rec.timing.prefills = "sequential"
        r_prefix = None
        try:
            run.rec.start("sharer_prefill")
            s_prefix = s_dec.prefill(s_input, held=True)
            run.rec.end("sharer_prefill")
            run.check_cancel()
            run.rec.start("receiver_prefill")
            r_prefix = r_dec.prefill(r_input, held=True)
            run.rec.end("receiver_prefill")
            run.check_cancel()
            run.rec.start("fuse")
            run.fusion = fuser.fuse_static(r_prefix, s_prefix)
            run.rec.end("fuse")
            if run.fusion is None:
                raise RuntimeError("the fuser's captured pass refused caches it said it serves")
            return r_prefix
        except BaseException:
            if r_prefix is not None:
                r_prefix.release()
            else:
                r_dec.lock.release()
            raise
        finally:
            s_dec.lock.release()

    def _get_aligner(self) -> TokenAligner:
        if self._aligner is None:
            info = self.pair.fuser.info
            self._aligner = TokenAligner(self.pair.receiver.tokenizer, self.pair.sharer.tokenizer,
                                         info.alignment_strategy)
        return self._aligner


class _AnswerInProgress:
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
        self.chosen: list[TeamMember] = []  # the team's sharers this run uses
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
        who = self.sharer_name if model.role == "sharer" else ""
        if prefill_phase is not None:  # the prompt but its last token, as cache fusion prefills it
            self.rec.start(prefill_phase, who)
            prompt = torch.tensor([ids[:-1]], device=model.device)  # (1, N-1)
            # into the static cache by a captured prefill where one serves (it holds the decoder until decoded)
            static = model.decoder.prefill(prompt) if model.decoder is not None and model.decoder.fits(
                len(ids) + limit) else None
            cache = static or prefill(model.model, prompt, self.cancel)
            self.rec.end(prefill_phase, sharer=who)
        try:
            self._decode(model, ids, cache, is_hint, limit, who)
        finally:
            if isinstance(cache, StaticPrefix):  # cancelled or failed before decoding it: free the decoder
                cache.release()

    def _decode(self, model: "LoadedModel", ids: list[int], cache: Any, is_hint: bool, limit: int,
                who: str = "") -> None:
        import torch

        self.check_cancel()
        part = "hint" if is_hint else "answer"
        detok = Detokenizer(model.tokenizer)
        eos = set() if self.settings.ignore_eos else set(model.eos_token_ids)
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
    from .team import members

    engine = Engine(pair)
    settings = GenerationSettings(max_new_tokens=4, hint_max_new_tokens=4, ignore_eos=True)
    messages = user(WARM_UP_PROMPT)
    fusion = all(m.fuser is not None for m in members(pair))  # a team's fusion needs every sharer's fuser
    for mode in (Mode.RELAY, Mode.FUSION) if fusion else (Mode.RELAY,):
        if cancel is not None and cancel.is_set():
            return  # the caller sees the cancel: load_pair raises Cancelled
        engine.answer(mode, messages, settings, cancel=cancel)


def _check_fits(mode: Mode, model: "LoadedModel", prompt: int, hint: int = 0) -> None:
    """Refuse a run of ``mode`` whose ``model`` would read ``prompt`` tokens (and a hint of up to ``hint`` more)
    with no room left in its context for an answer."""
    total = prompt + hint
    if total < model.context_length:
        return
    said = (f"the prompt is {prompt} tokens" if not hint else
            f"the prompt with text relay's instructions is {prompt} tokens and the sharer's hint up to {hint} more "
            f"({total} in all)")
    fix = "shorten the prompt or clear the conversation" + (
        ", or lower the hint's max new tokens" if hint else "")
    raise ContextLengthError(f"{mode.label}: {said}, but the {model.role}'s context holds {model.context_length}; "
                             f"{fix}.")


