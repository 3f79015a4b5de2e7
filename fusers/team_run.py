"""A team's runs of text relay and cache fusion (fusers.team): every chosen sharer writes its hint, or prefills
the prompt for its fuser, whose residuals all add to the receiver's cache. The engine (fusers.engine) hands a
team's runs here; a one-sharer pair keeps the engine's own path, the GPU's fast path included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .alignment import TokenAligner
from .chat import check_fits, check_in_vocabulary, encode
from .devices import overlapped
from .generation import prefill
from .relay import relay_turns
from .team import check_same_receiver_ids, fuse_team

if TYPE_CHECKING:
    import torch

    from .team import TeamMember

def write_hints(run: Any, chosen: "list[TeamMember]", messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Text relay's first step for a team: each chosen sharer writes a hint, in turn; returns the conversation the
    receiver answers, the hints read one after another as the answer to the context question."""
    hint_ids: list[int] = []
    for member in chosen:
        sharer = member.sharer
        run.sharer_name = member.name
        run.hint_ids, run.hint_text = [], ""
        run.rec.start("tokenize")
        hint_prompt = encode(sharer.tokenizer, relay_turns(messages)[0], run.settings.thinking)
        run.rec.end("tokenize")
        check_fits(sharer, len(hint_prompt))
        run.generate(sharer, hint_prompt, part="hint", prefill_phase="sharer_prefill")
        run.check_cancel()
        run.hints[member.name] = run.hint_text.strip()
        hint_ids += run.hint_ids
    run.sharer_name = ""
    if len(chosen) > 1:
        run.hint_ids, run.hint_text = hint_ids, " ".join(h for h in run.hints.values() if h)
    return relay_turns(messages, run.hint_text.strip())[1]


def fuse_team_run(engine: Any, messages: list[dict[str, str]], run: Any, chosen: "list[TeamMember]") -> None:
    """Cache fusion over ``messages`` for a team: the receiver and every chosen sharer prefill them, each sharer's
    fuser fuses the receiver's cache from its sharer's (every fuser's residual is added), the receiver decodes."""
    import torch

    receiver = engine.pair.receiver
    run.rec.start("tokenize")
    r_ids: list[int] | None = None
    sharer_ids = []
    for member in chosen:
        if member.fuser.info.is_do_alignment:
            aligned = member_aligner(engine, member).align_chat(messages, run.settings.thinking)
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
    check_fits(receiver, len(r_ids))
    for member, s_ids in zip(chosen, sharer_ids):
        check_fits(member.sharer, len(s_ids))
        check_in_vocabulary(member.sharer, s_ids, member.name)
    run.rec.timing.tokens_in = len(r_ids)
    run.check_cancel()

    # Every model prefills all but the last prompt token; the receiver feeds that token when decoding.
    jobs = [(member.name, member.sharer, torch.tensor([s_ids[:-1]], device=member.sharer.device))  # (1, N-1)
            for member, s_ids in zip(chosen, sharer_ids)]
    r_input = torch.tensor([r_ids[:-1]], device=receiver.device)  # (1, N-1)
    overlap = _overlaps(engine, [m.sharer for m in chosen])
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
            lambda: _prefill_lane(away, run), away[0][1].device,
            lambda: _prefill_lane(home, run) + [(
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
        run.rec.start("fuse", name) if begins else run.rec.end("fuse", sharer=name)

    if len(r_ids) > 1:
        parts = [(member, caches[who]) for member, (who, _, _) in zip(chosen, jobs)]
        run.fusion = fuse_team(receiver_cache, parts, named=True, on_fuse=bracket)
    else:
        run.rec.start("fuse")
        run.fusion = []
        run.rec.end("fuse")
    del caches
    run.check_cancel()
    run.generate(receiver, r_ids, part="answer", prefill_phase=None, cache=receiver_cache)


def _overlaps(engine: Any, sharers: list[Any]) -> bool:
    """:meth:`fusers.engine.Engine.overlaps_prefills` for a team: where any sharer sits on another device than the
    receiver, one of them a GPU (or always, or never, as ``engine.prefills`` says)."""
    if engine.prefills != "auto":
        return engine.prefills == "overlap"
    receiver = engine.pair.receiver.device
    return any(s.device != receiver and "cuda" in (receiver.type, s.device.type) for s in sharers)


def _prefill_lane(jobs: list, run: Any) -> list[tuple[str, Any, float]]:
    """Prefill ``jobs`` (name, sharer, ids) one after another: [(name, cache, the clock when it was done)]."""
    return [(who, prefill(sharer.model, ids, run.cancel), _lane_clock(sharer.device)) for who, sharer, ids in jobs]


def member_aligner(engine: Any, member: "TeamMember") -> TokenAligner:
    key = id(member.fuser)
    if key not in engine._aligners:
        engine._aligners[key] = TokenAligner(engine.pair.receiver.tokenizer, member.sharer.tokenizer,
                                             member.fuser.info.alignment_strategy)
    return engine._aligners[key]


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


