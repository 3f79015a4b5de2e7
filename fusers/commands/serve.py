"""``c2c serve``: every answer mode of a pair as a model of a local OpenAI-compatible server (docs/serve.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..engine import Mode
from ..generation import GenerationSettings
from .common import add_pair_options, add_settings_options, pair_from_args, print_load_progress, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from ..serve import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser(
        "serve",
        help="serve every answer mode of a pair as an OpenAI-compatible API (GET /v1/models, POST "
             "/v1/chat/completions)",
        description="Load a pair once and serve each answer mode it allows as a model ("
        + ", ".join(f"PAIR/{mode.value}" for mode in Mode) + "; a team adds each sharer's own, PAIR/fusion:A, "
        "PAIR/sharer:A) on an OpenAI-compatible endpoint: the openai "
        "client, curl and evaluation harnesses call it. Requests are answered one at a time, in order. With no pair given, the offline demo pair "
        "is served. Stop with Ctrl-C.",
    )
    add_pair_options(p, presets=True, team=True)
    server = p.add_argument_group("server")
    server.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}, this "
                        "machine only; any other needs --api-key)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 takes a "
                        "free one)")
    server.add_argument("--api-key", help="the key clients must send (Authorization: Bearer KEY); without it any "
                        "key is taken")
    server.add_argument("--name", help="the pair's name in model ids, NAME/fusion (default: the --pair name, or "
                        "the fuser's folder)")
    add_settings_options(p, GenerationSettings, "answers (defaults of a request that does not set them)",
                         {"seed": "none: a sampled answer draws its own, which its stats record."})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine import Engine
    from ..serve.server import ApiServer, bind, check_host

    given = settings_from_args(args, GenerationSettings)
    given.setdefault("seed", None)  # a sampled answer without a seed of its own draws one (it is in its stats)
    defaults = GenerationSettings(**given)
    check_host(args.host, args.api_key)  # fails before minutes of loading
    bind(args.host, args.port).close()  # so does a port in use

    pair = pair_from_args(args, print_load_progress(), warm_up=True)
    name = args.name or (args.pair if args.pair and "/" not in args.pair and "\\" not in args.pair else None)
    if name is None and args.receiver is None and args.sharer is None and args.fuser is None:
        from ..presets import DEMO_NAME

        name = DEMO_NAME
    server = ApiServer(Engine(pair), name, host=args.host, port=args.port, api_key=args.api_key,
                       defaults=defaults, on_answer=_log_answer)
    for line in pair.describe():
        print(f"  {line}", file=sys.stderr)
    server.start()
    print(f"Serving {server.name} on {server.url}", flush=True)
    print("models: " + ", ".join(server.model_ids), flush=True)
    print("Ctrl-C stops the server.", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        while not server.join(0.5):
            pass
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr, flush=True)
    finally:
        server.close()
        server.join(10)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _log_answer(model: str, answer: Any) -> None:
    t = answer.timing
    print(f"{model}: {len(answer.token_ids)} tokens ({answer.finish_reason}), TTFT {t.ttft:.3f} s, "
          f"{t.decode_tokens_per_s:.1f} tokens/s, total {t.total:.3f} s", file=sys.stderr, flush=True)
