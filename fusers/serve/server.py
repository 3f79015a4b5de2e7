"""The OpenAI-compatible server: Starlette on uvicorn, in a thread of its own, answering through the engine.

Requests are answered one at a time on the models' thread (``submit``: by default a thread of the server's own;
the app passes its models' thread), queued, never refused. A streaming client that disconnects cancels its answer
at the next token; so does a stop string. Starlette and uvicorn are imported here only, when a server is made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from ..errors import C2CError, ServeError
from ..team import mode_names
from ..generation import GenerationSettings
from . import DEFAULT_HOST, DEFAULT_PORT, api

if TYPE_CHECKING:
    from ..engine import Answer, Engine, Event

Submit = Callable[[Callable[[], Any]], "concurrent.futures.Future[Any]"]
_END = object()  # posted after an answer's last text


def is_local(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (a loopback address, or localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, api_key: str | None) -> None:
    """Another host than this machine needs an API key."""
    if not is_local(host) and not api_key:
        raise ServeError(f"Serving on {host} lets other machines use the models: give an API key too "
                         "(--api-key KEY; clients send it as their OpenAI API key).")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), or a :class:`ServeError` saying what to change."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ServeError(f"--port must be in 0..65535 (0 takes a free port), got {port}.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServeError(f"Cannot serve on host {host!r}: {exc.strerror}. Give an address such as 127.0.0.1.") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"Cannot listen on {host}:{port}: {exc.strerror}. Another server may use the port; pick "
                         "another with --port (0 takes a free one).") from None
    return sock


class _Answering:
    """One request while its answer runs: the models' thread hands its text to the server's event loop.

    Text waits in a list. Only the first item since the loop last took them wakes the loop, so a loop that falls
    behind takes several tokens at one wake-up, and the stream sends them in one write.
    """

    def __init__(self, request: api.ChatRequest, loop: asyncio.AbstractEventLoop):
        self.request, self.loop = request, loop
        self.cancel = threading.Event()
        self.filter = api.StopFilter(request.stop)
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def post(self, item: Any) -> None:  # any thread
        with self._lock:
            self._items.append(item)
            if len(self._items) > 1:
                return  # a wake-up is on its way
        try:
            self.loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the server's loop closed first
            pass

    async def take(self) -> list[Any]:
        """What was posted since the last take (waits for something)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            with self._lock:
                items, self._items = self._items, []
            if items:
                return items

    def on_event(self, event: "Event") -> None:  # on the models' thread
        if getattr(event, "part", None) != "answer":
            return
        text = self.filter.push(event.text)
        if self.filter.hit:
            self.cancel.set()  # a stop string: the engine stops at the next token
        if text and self.request.stream:
            self.post(text)

    def ended(self, _future: Any) -> None:  # wherever the answer's future ended
        self.post(_END)


class ApiServer:
    """Serve ``engine``'s pair as OpenAI models ``NAME/MODE`` on ``host``:``port`` (0: a free port).

    ``defaults`` are the settings of a request that gives none (OpenAI's parameters override them). ``submit``
    runs a function on the thread that owns the models and returns a future; ``on_answer(model, answer)`` is
    called on that thread after each answer.
    """

    def __init__(self, engine: "Engine", name: str | None = None, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, api_key: str | None = None, defaults: GenerationSettings | None = None,
                 submit: Submit | None = None, on_answer: Callable[[str, "Answer"], None] | None = None):
        check_host(host, api_key)
        self.engine, self.host, self.api_key = engine, host, api_key or None
        self.name = name or api.pair_name(engine.pair)
        self.modes = mode_names(engine.pair)  # a team's: each sharer's own modes too
        self.defaults = defaults or GenerationSettings()
        self.on_answer = on_answer
        self.created = int(time.time())
        self._models = api.models(self.name, self.modes, engine.pair, self.created)
        self._own: concurrent.futures.ThreadPoolExecutor | None = None
        if submit is None:
            self._own = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="c2c-serve-models")
            submit = self._own.submit
        self._submit = submit
        self._closed = threading.Event()
        self._running: set[_Answering] = set()
        self._lock = threading.Lock()
        self._socket = bind(host, port)
        self.port = self._socket.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def model_ids(self) -> list[str]:
        return [m["id"] for m in self._models]

    @property
    def url(self) -> str:
        """The base URL clients take (the openai client's ``base_url``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # -- running ------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "ApiServer":
        """Start serving on a thread of its own; returns once the server accepts connections."""
        import uvicorn

        config = uvicorn.Config(self.asgi_app(), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, log_config=None)
        self._server = uvicorn.Server(config)
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                self._server.run(sockets=[self._socket])
            except BaseException as exc:  # noqa: BLE001 - handed to start() below, or logged once serving
                failed.append(exc)
                logging.getLogger(__name__).exception("the API server stopped")

        self._thread = threading.Thread(target=serve, name="c2c-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if failed or not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ServeError(f"The API server did not start on {self.url}"
                                 + (f": {failed[0]}" if failed else "."))
            time.sleep(0.005)
        return self

    def close(self) -> None:
        """Stop taking requests and cancel the answers running or queued; any thread, returns at once."""
        self._closed.set()
        with self._lock:
            running = list(self._running)
        for answering in running:
            answering.cancel.set()
        if self._server is not None:
            self._server.should_exit = True
        else:
            self._socket.close()
        if self._own is not None:
            self._own.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the server's thread has ended (after :meth:`close`); whether it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- the ASGI app -------------------------------------------------------------------------------------------
    def asgi_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        def failure(error: api.ApiError) -> Response:
            headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
            return JSONResponse(error.body(), status_code=error.status, headers=headers)

        async def http_error(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 500)
            said = {404: f"No such endpoint {request.url.path}: this server has GET /v1/models and POST "
                         "/v1/chat/completions.",
                    405: f"{request.method} is not allowed on {request.url.path}."}.get(status, str(exc))
            return failure(api.ApiError(status, said, code="not_found" if status == 404 else None))

        def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
            async def endpoint(request: Request) -> Response:
                try:
                    self._check_key(request.headers.get("authorization", ""))
                    return await handler(request)
                except api.ApiError as exc:
                    return failure(exc)
            return endpoint

        async def list_models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": self._models})

        async def get_model(request: Request) -> Response:
            wanted = request.path_params["model"]
            api.find_mode(wanted, self.name, self.modes)
            return JSONResponse(next(m for m in self._models if m["id"] == wanted))

        async def chat(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"null")
            except (ValueError, UnicodeDecodeError) as exc:
                raise api.ApiError(400, f"The request body is not valid JSON ({exc}).") from None
            return await self._chat(request, api.parse_chat(body, self.name, self.modes, self.defaults))

        return Starlette(routes=[
            Route("/v1/models", guarded(list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", guarded(get_model), methods=["GET"]),
            Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        ], exception_handlers={HTTPException: http_error})

    def _check_key(self, authorization: str) -> None:
        if self.api_key is None:
            return
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            raise api.ApiError(401, "Incorrect API key provided: send the key this server was started with as "
                               "'Authorization: Bearer KEY' (the openai client's api_key).", code="invalid_api_key")

    # -- answering ----------------------------------------------------------------------------------------------
    def _answer(self, answering: _Answering) -> "Answer | None":
        """On the models' thread: answer, unless the server closed or the client left while this waited."""
        if self._closed.is_set():
            raise ServeError("The server is stopping; it answers no more requests.")
        if answering.cancel.is_set():
            return None
        request = answering.request
        answer = self.engine.answer(request.mode, request.messages, request.settings,
                                    on_event=answering.on_event, cancel=answering.cancel)
        if self.on_answer is not None:
            self.on_answer(request.model, answer)
        return answer

    async def _chat(self, request: Any, chat: api.ChatRequest) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        if self._closed.is_set():
            raise api.error_for(ServeError("The server is stopping; it answers no more requests."))
        answering = _Answering(chat, asyncio.get_running_loop())
        with self._lock:
            self._running.add(answering)
        try:
            future = self._submit(lambda: self._answer(answering))
        except RuntimeError:  # the models' thread was shut down
            self._forget(answering)
            raise api.error_for(ServeError("The server is stopping; it answers no more requests.")) from None
        future.add_done_callback(answering.ended)
        left = asyncio.ensure_future(_disconnected(request))
        first: Any = None
        try:
            # Wait for the first text (or the end) before answering: an error until then gets its own status.
            waiter = asyncio.ensure_future(answering.take())
            done, _ = await asyncio.wait({waiter, left}, return_when=asyncio.FIRST_COMPLETED)
            if left in done:  # the client left: its answer is cancelled, whether it runs or waits
                waiter.cancel()
                answering.cancel.set()
                self._forget(answering)
                return JSONResponse({}, status_code=499)
            first = waiter.result()
        finally:
            left.cancel()
        if first[0] is _END:
            self._forget(answering)
            answer = _outcome(future, answering)
            if not chat.stream:
                text = answering.filter.cut(answer.text)
                return JSONResponse(api.completion(chat, answer, text, answering.filter.hit, api.new_id()))
        return StreamingResponse(self._stream(answering, future, first), media_type="text/event-stream")

    async def _stream(self, answering: _Answering, future: Any, items: list[Any]) -> AsyncIterator[bytes]:
        chat, rid, created = answering.request, api.new_id(), int(time.time())
        content = api.content_chunks(chat, rid, created)
        out = [api.sse(api.chunk(chat, rid, created, {"role": "assistant", "content": ""}))]
        try:
            while True:
                ended = _END in items
                if ended:  # the text a stop string might have begun, and none did
                    items = [t for t in items if t is not _END] + [answering.filter.flush()]
                out += [content(t) for t in items if t]
                if out:
                    yield b"".join(out)  # what came since the last write goes out in one (the first with the role)
                    out = []
                if ended:
                    break
                items = await answering.take()
            try:
                answer = _outcome(future, answering)
            except api.ApiError as exc:  # after the first token: a failure of the run itself, or the server stopped
                yield api.sse(exc.body()) + api.DONE
                return
            reason = api.finish_reason(answer, answering.filter.hit)
            last = api.chunk(chat, rid, created, {}, reason, stats=api.stats(answer))
            if chat.include_usage:
                last["usage"] = None
            tail = [api.sse(last)]
            if chat.include_usage:
                tail.append(api.sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                                     "model": chat.model, "system_fingerprint": None, "choices": [],
                                     "usage": api.usage(answer)}))
            yield b"".join(tail) + api.DONE
        finally:  # the client left mid-stream (this generator was cancelled) or the answer ended
            answering.cancel.set()
            self._forget(answering)

    def _forget(self, answering: _Answering) -> None:
        with self._lock:
            self._running.discard(answering)


def _outcome(future: "concurrent.futures.Future[Any]", answering: _Answering) -> "Answer":
    """The answer the future holds; its error, or a cancel that no stop string asked for (the client left or the
    server is stopping), as an ApiError."""
    try:
        answer = future.result()
    except concurrent.futures.CancelledError:
        answer = None
    except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error response
        if not isinstance(exc, C2CError):
            logging.getLogger(__name__).error("answering failed", exc_info=exc)
        raise api.error_for(exc) from None
    if answer is None or (answer.finish_reason == "cancelled" and not answering.filter.hit):
        raise api.error_for(ServeError("The answer was cancelled: the server is stopping, or the client left."))
    return answer


async def _disconnected(request: Any) -> None:
    """Returns when the client closes its connection (the request's body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
