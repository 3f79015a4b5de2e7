"""OpenAI's chat-completions format: a request into the engine's terms, an answer into a response or chunks.

Plain data in, plain data out: no HTTP here (:mod:`fusers.serve.server` serves it) and no torch. Every answer
mode of a pair is one model, ``PAIR/MODE`` (``demo/fusion``); the mode names come from :class:`~fusers.engine.Mode`,
and a team's (fusers.team) add each sharer's own (``team/fusion:A``, ``team/sharer:B``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..chat import check_messages, find_stop
from ..engine import Mode
from ..errors import C2CError, ContextLengthError, PromptError, ServeError, SettingsError, describe
from ..generation import GenerationSettings

if TYPE_CHECKING:
    from ..engine import Answer
    from ..pair import Pair

# OpenAI's names for the engine's settings (max_tokens is the older name of max_completion_tokens)
OPENAI_SETTINGS = {"max_completion_tokens": "max_new_tokens", "max_tokens": "max_new_tokens",
                   "temperature": "temperature", "top_p": "top_p", "seed": "seed"}
# Settings OpenAI has no name for: a request gives them by the engine's own names (the openai client's extra_body).
# do_sample is not one: a temperature of 0 decodes greedily, above 0 samples.
EXTRA_SETTINGS = tuple(f.name for f in GenerationSettings.help_fields()
                       if f.name not in set(OPENAI_SETTINGS.values()) | {"do_sample"})
MAX_STOPS = 4  # as OpenAI
ROLE_ALIASES = {"developer": "system"}  # newer OpenAI clients send the system prompt as "developer"


class ApiError(C2CError):
    """A request the server answers with an error: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def error_for(exc: BaseException) -> ApiError:
    """The response to an exception raised while answering: bad input is the client's (4xx), the rest ours."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextLengthError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, PromptError):
        return ApiError(400, str(exc), param="messages")
    if isinstance(exc, SettingsError):
        return ApiError(400, str(exc))
    if isinstance(exc, ServeError):
        return ApiError(503, str(exc), kind="server_error", code="unavailable")
    return ApiError(500, describe(exc), kind="server_error")


# -- models -----------------------------------------------------------------------------------------------------
def pair_name(pair: "Pair") -> str:
    """What a pair's models are called: its fuser's folder (the parent's for a folder called ``fuser``, as the
    demo's ``demo/fuser``), or, without a fuser, the receiver's and the sharer's names. A team: the folder that
    holds every fuser (a team folder), else its sharers' names joined by ``+``."""
    if len(pair.members) > 1:
        sources = [m.fuser.info.source if m.fuser is not None else "" for m in pair.members]
        parents = {Path(s).resolve().parent for s in sources if s}
        if len(parents) == 1 and all(sources):
            return parents.pop().name
        return "+".join(m.name for m in pair.members)
    if pair.fuser is not None and pair.fuser.info.source:
        path = Path(pair.fuser.info.source).resolve()
        return path.parent.name if path.name.lower() == "fuser" else path.name
    return f"{Path(pair.receiver.name).name}+{Path(pair.sharer.name).name}"


def model_id(name: str, mode: "Mode | str") -> str:
    return f"{name}/{mode.value if isinstance(mode, Mode) else mode}"


def models(name: str, modes: Sequence[str], pair: "Pair", created: int) -> list[dict[str, Any]]:
    """``GET /v1/models``: one model per answer mode (as :func:`fusers.team.mode_names` names them), with the
    pair's details; a team's say which sharers each uses."""
    from ..team import parse_mode, select

    details = pair.describe()
    out = []
    for key in modes:
        mode, names = parse_mode(key)
        chosen = select(pair, mode, names)
        answering = [m.sharer for m in chosen] if mode is Mode.SHARER else [pair.receiver] \
            if mode is Mode.RECEIVER else [pair.receiver, *(m.sharer for m in chosen)]
        entry = {
            "id": model_id(name, key), "object": "model", "created": created, "owned_by": "c2c-playground",
            "mode": key, "label": mode.label + (f" ({', '.join(names)})" if names else ""), "pair": name,
            "receiver": pair.receiver.name, "sharer": pair.sharer.name,
            "fuser": pair.fuser.info.source if pair.fuser is not None else None,
        }
        if pair.members:  # a team: the sharers this mode uses, and their fusers
            entry["sharers"] = [] if mode is Mode.RECEIVER else [m.name for m in chosen]
            entry["fusers"] = {m.name: m.fuser.info.source for m in chosen
                               if m.fuser is not None and mode is not Mode.RECEIVER}
        out.append({
            **entry,
            "context_length": min(m.context_length for m in answering), "details": details,
        })
    return out


def find_mode(model: Any, name: str, modes: Sequence[str]) -> str:
    """The mode a request's ``model`` names, as :meth:`fusers.engine.Engine.answer` takes it."""
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required: one of " + ", ".join(model_id(name, m) for m in modes) + ".",
                       param="model")
    for mode in modes:
        if model == model_id(name, mode):
            return mode
    served = ", ".join(model_id(name, m) for m in modes)
    wanted = next((m for m in Mode if model.partition(":")[0] == model_id(name, m)), None)
    why = (f"; {wanted.label.lower()} needs a fuser, and this pair has none"
           if wanted is not None and wanted.needs_fuser and wanted.value not in modes else "")
    raise ApiError(404, f"The model {model!r} does not exist{why}. This server has: {served} (GET /v1/models).",
                   param="model", code="model_not_found")


# -- requests ---------------------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    model: str
    mode: str  # as the engine takes it: "fusion", or a team's "fusion:A"
    messages: list[dict[str, str]]
    settings: GenerationSettings
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts
    stop: tuple[str, ...] = ()


def _unsupported(key: str, value: Any) -> bool:
    """Whether ``value`` of the OpenAI parameter ``key`` asks for something the engine does not do."""
    if value is None:
        return False
    if key == "n":
        return value != 1
    if key in ("frequency_penalty", "presence_penalty"):
        return value != 0
    if key == "response_format":
        return not (isinstance(value, dict) and value.get("type") == "text")
    if key == "tool_choice":
        return value != "none"
    return bool(value)  # logprobs, top_logprobs, logit_bias, tools, functions, function_call, audio, modalities...


UNSUPPORTED = ("n", "logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "tools",
               "tool_choice", "functions", "function_call", "response_format", "audio", "prediction")


def parse_chat(body: Any, name: str, modes: Sequence[str], defaults: GenerationSettings) -> ChatRequest:
    """Check a ``POST /v1/chat/completions`` body; an :class:`ApiError` names the field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    mode = find_mode(body.get("model"), name, modes)
    for key in UNSUPPORTED:
        if key in body and _unsupported(key, body[key]):
            raise ApiError(400, f"{key}={body[key]!r} is not supported by this server (cache fusion answers once, "
                           "as text, without log-probabilities, penalties or tools); leave it out.", param=key)
    messages = _messages(body.get("messages"))
    settings = _settings(body, defaults)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {stream!r}.", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object such as {\"include_usage\": true}.",
                       param="stream_options")
    return ChatRequest(body["model"], mode, messages, settings, bool(stream), bool(options.get("include_usage")),
                       _stops(body.get("stop")))


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list of {\"role\": ..., \"content\": ...} objects.",
                       param="messages")
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object with a role and a content.", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                               "are supported.", param="messages")
            content = "".join(p["text"] for p in content)
        role = message.get("role")
        out.append({"role": ROLE_ALIASES.get(role, role), "content": content})
    try:
        return check_messages(out)
    except PromptError as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from None


def _settings(body: dict[str, Any], defaults: GenerationSettings) -> GenerationSettings:
    settings = defaults
    given = [(key, field, body[key]) for key, field in OPENAI_SETTINGS.items() if body.get(key) is not None]
    given = [g for g in given if not (g[0] == "max_tokens" and body.get("max_completion_tokens") is not None)]
    given += [(key, key, body[key]) for key in EXTRA_SETTINGS if body.get(key) is not None]
    for key, field, value in given:
        if key == "temperature":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ApiError(400, f"temperature must be a number >= 0 (0 decodes greedily), got {value!r}.",
                               param=key)
            if value == 0:
                settings = dataclasses.replace(settings, do_sample=False)
                continue
            settings = dataclasses.replace(settings, do_sample=True)
        try:
            settings = dataclasses.replace(settings, **{field: value})
        except SettingsError as exc:
            said = str(exc).replace(field, key, 1)
            raise ApiError(400, f"{said}.", param=key) from None
    return settings


def _stops(raw: Any) -> tuple[str, ...]:
    stops = [raw] if isinstance(raw, str) else raw
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them, got {raw!r}.",
                       param="stop")
    return tuple(stops)


class StopFilter:
    """Streams an answer's text up to the first stop string, holding back text that may begin one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.text = ""
        self.sent = 0  # how much of text has been let through
        self.hit = False

    def push(self, delta: str) -> str:
        """The text ``delta`` lets through now ("" once a stop string was seen)."""
        if self.hit:
            return ""
        self.text += delta
        if not self.stops:
            self.sent = len(self.text)
            return delta
        at, held = find_stop(self.text[self.sent:], self.stops)  # nothing before sent can begin a stop string
        end = self.sent + at if at is not None else len(self.text) - held
        self.hit = at is not None
        out, self.sent = self.text[self.sent:end], end
        return out

    def flush(self) -> str:
        """At the answer's end: the text held back that no stop string followed."""
        out = "" if self.hit else self.text[self.sent:]
        self.sent = len(self.text)
        return out

    def cut(self, text: str) -> str:
        """``text`` ended before its first stop string."""
        if not self.stops:
            return text
        at, _ = find_stop(text, self.stops)
        return text if at is None else text[:at]


# -- responses --------------------------------------------------------------------------------------------------
def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(answer: "Answer", stopped: bool) -> str:
    """OpenAI's finish_reason: "stop" at an end of sequence or a stop string, "length" at max_tokens."""
    return "stop" if stopped or answer.finish_reason == "eos" else "length"


def usage(answer: "Answer") -> dict[str, int]:
    """Token counts: the answering model's prompt (text relay's includes the hint) and its answer."""
    prompt, completion = answer.timing.tokens_in, len(answer.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def stats(answer: "Answer") -> dict[str, Any]:
    """The timing record, as LM Studio's ``stats``: its summary keys, then everything the engine measured."""
    t = answer.timing
    out: dict[str, Any] = {
        "mode": answer.mode_key or answer.mode.value, "time_to_first_token": t.ttft, "tokens_per_second": t.decode_tokens_per_s,
        "total_time": t.total, "stop_reason": answer.finish_reason, "token_ids": list(answer.token_ids),
        "timing": t.to_dict(), "settings": answer.settings,
    }
    if answer.hint is not None:
        out["hint"] = answer.hint
        out["hint_tokens"] = len(answer.hint_token_ids or [])
    return out


def completion(request: ChatRequest, answer: "Answer", text: str, stopped: bool, rid: str) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": request.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason(answer, stopped)}],
        "usage": usage(answer), "stats": stats(answer),
    }


def chunk(request: ChatRequest, rid: str, created: int, delta: dict[str, Any], reason: str | None = None,
          **extra: Any) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}], **extra}


def content_chunks(request: ChatRequest, rid: str, created: int) -> Callable[[str], bytes]:
    """A function from answer text to its chunk's event, each made from one template: a stream sends one per
    token, so only the text is encoded each time."""
    marker = "\x00"
    head, tail = json.dumps(chunk(request, rid, created, {"content": marker}), ensure_ascii=False,
                            separators=(",", ":")).split(json.dumps(marker))
    start, end = f"data: {head}".encode(), f"{tail}\n\n".encode()
    return lambda text: start + json.dumps(text, ensure_ascii=False).encode() + end


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


DONE = sse("[DONE]")
