"""An OpenAI-compatible HTTP server over any served system: one model, a team, or the hybrid.

Any OpenAI client (including :class:`~agentark.engines.openai.OpenAIEngine`) can then use a
distilled student, the multi-agent team it came from, or the student-first hybrid
(:mod:`agentark.serve.systems`). Engines are fastest on batches, while HTTP users arrive one request
at a time, so a :class:`MicroBatcher` merges requests that arrive within a few milliseconds into one
call, run in a worker thread so the event loop keeps accepting requests.

Each response says which path served it (``X-AgentArk-Route`` header and an ``agentark`` field);
``stream=true`` answers with server-sent events in OpenAI's chunk format, token by token where the
engine streams (llama.cpp) and as one chunk once the answer is complete otherwise (a team's answer
exists only when the debate ends).

The request -> replies path is one swappable function, ``app.state.complete`` (see
:data:`CompleteFn`): it defaults to the micro-batcher over the served system.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentark.defaults import DEFAULT_BATCH_SIZE
from agentark.engines.base import Completion, Conversation, Engine, EngineRequestError, SamplingParams, StreamingEngine
from agentark.engines.openai import is_loopback_host
from agentark.serve.metrics import MetricsMiddleware, ServerMetrics
from agentark.serve.systems import ROUTE_HEADER, Reply, ServedSystem, SingleModel

logger = logging.getLogger(__name__)

CompleteFn = Callable[[list[Conversation], SamplingParams], Awaitable[list[Reply]]]
"""Conversations + sampling -> one reply each, in order: what a chat request is served by."""


DEFAULT_MAX_TOKENS = SamplingParams().max_new_tokens
MAX_N = 64


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server, so a single request cannot take it down (measured: one
    5 MB prompt grew the server to 12.5 GB and starved every other request). Over a limit: 413 for
    the body, 400 for the rest, before the engine sees anything."""

    max_body_bytes: int = 1_000_000
    max_prompt_chars: int = 64_000  # ~16k tokens of English; the engine's own context check still applies
    max_tokens: int = 4096


# --- request / response schema (the subset of the OpenAI chat API an Engine can honour) -----------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """Unknown fields are ignored (pydantic's default), as OpenAI clients send optional extras."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None  # OpenAI: up to 4 stop strings
    ignore_eos: bool = False  # vLLM extension, sent by OpenAIEngine for benchmarks

    def conversation(self) -> Conversation:
        return [{"role": message.role, "content": message.text()} for message in self.messages]

    def sampling(self, default_temperature: float = 1.0) -> SamplingParams:
        """The request's settings; where it leaves one out, OpenAI's default (top_p 1) or the served
        system's temperature (OpenAI's 1 for a model, a sampling temperature for a voting team)."""
        return SamplingParams(
            temperature=default_temperature if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_new_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
            stop=tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop or []) if s),
        )


def usage(completions: list[Completion]) -> dict[str, int]:
    """OpenAI's ``usage``; the prompt is counted once, as OpenAI does for ``n > 1``."""
    prompt_tokens = completions[0].prompt_tokens
    completion_tokens = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def route_info(replies: list[Reply]) -> dict[str, Any]:
    """The ``agentark`` field of a response: which path answered, and what it concluded."""
    first = replies[0]
    info = {"route": first.route, "answer": first.answer, "confidence": first.confidence}
    if first.fallback_error is not None:
        info["fallback_error"] = first.fallback_error
    return info


def completion_response(model: str, replies: list[Reply]) -> dict:
    """The ``chat.completion`` object, plus the ``agentark`` route field."""
    completions = [r.completion for r in replies]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            for i, c in enumerate(completions)
        ],
        "usage": usage(completions),
        "agentark": route_info(replies),
    }


def sse(data: dict | str) -> bytes:
    """One server-sent event, as OpenAI streams them."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class ChunkWriter:
    """``chat.completion.chunk`` objects of one streamed response (one id and timestamp for all)."""

    def __init__(self, model: str):
        self.base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model}

    def delta(self, index: int, delta: dict, finish_reason: str | None = None) -> bytes:
        return sse({**self.base, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]})

    def tail(self, completions: list[Completion], include_usage: bool) -> list[bytes]:
        """The last events: the usage chunk when asked for (OpenAI's ``stream_options``), ``[DONE]``."""
        events = [sse({**self.base, "choices": [], "usage": usage(completions)})] if include_usage else []
        return [*events, sse("[DONE]")]

    def whole(self, completions: list[Completion], include_usage: bool) -> list[bytes]:
        """A finished answer as a stream: role, the text, the finish reason, per choice."""
        events = []
        for i, c in enumerate(completions):
            events += [self.delta(i, {"role": "assistant", "content": ""}), self.delta(i, {"content": c.text}),
                       self.delta(i, {}, c.finish_reason)]
        return events + self.tail(completions, include_usage)


# --- errors in OpenAI's shape, so clients raise their usual typed exceptions -----------------------


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers malformed requests with 400, not FastAPI's default 422.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p != 'body')}: {err['msg']}" for err in exc.errors()
        )
        return APIError(400, f"invalid request: {problems}").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail)).response()


def _bearer_auth(api_key: str) -> Callable[[str | None], Awaitable[None]]:
    async def check(authorization: str | None = Header(default=None)) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        # Constant-time comparison, so response timing does not leak the key prefix by prefix.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    return check


# --- micro-batching -----------------------------------------------------------------------------

R = TypeVar("R")


@dataclass
class _Pending(Generic[R]):
    conversations: list[Conversation]
    sampling: SamplingParams
    future: asyncio.Future[list[R]]


class MicroBatcher(Generic[R]):
    """Merges concurrent requests into few calls of ``run`` (an engine's ``generate``, a system's ``answer``).

    One background task takes the first waiting request, waits ``max_batch_wait_ms`` for others,
    then runs everything collected (up to ``max_batch_size`` conversations) as one call per
    distinct sampling setting, in a worker thread so the event loop keeps accepting requests.

    ``max_in_flight`` is how many such calls may run at once. An in-process transformers model is
    not thread-safe and gets 1: requests that arrive while it is busy form the next batch. llama.cpp's
    server engine (and a remote OpenAI server) batch concurrent calls step by step themselves, so
    there a request that arrives mid-batch is sent at once and joins the next decode step
    (continuous batching) instead of waiting for the whole batch to finish.

    Requests that differ only in ``seed`` share a call, seeded with the first one's seed: engines
    seed per batch (HFEngine) and OpenAIEngine sends a distinct seed per request, so grouping by
    seed would leave every seeded request in a batch of one.
    """

    def __init__(self, run: Callable[[list[Conversation], SamplingParams], list[R]], max_batch_wait_ms: float = 10.0,
                 max_batch_size: int = DEFAULT_BATCH_SIZE, max_in_flight: int = 1):
        if max_batch_size < 1 or max_in_flight < 1:
            raise ValueError(f"max_batch_size and max_in_flight must be >= 1, got {max_batch_size}, {max_in_flight}")
        self.run = run
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        self.max_batch_size = max_batch_size
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: asyncio.Queue[_Pending[R]] = asyncio.Queue()
        self._carry: _Pending[R] | None = None  # taken from the queue, but did not fit the last batch
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="agentark-micro-batcher")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._calls) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._task = None
        leftovers = [self._carry] if self._carry else []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is shutting down"))
        self._carry = None

    async def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[R]:
        """Queue the request and wait for its share of a batch."""
        if self._task is None:
            raise RuntimeError("MicroBatcher is not running: start() it (create_app does, in its lifespan)")
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(conversations, sampling, future))
        return await future

    async def _loop(self) -> None:
        while True:
            groups: dict[SamplingParams, list[_Pending[R]]] = {}
            for item in await self._next_batch():
                groups.setdefault(replace(item.sampling, seed=None), []).append(item)
            for items in groups.values():
                await self._slots.acquire()  # with max_in_flight 1: the previous call has finished
                call = asyncio.create_task(self._run_group(items))
                self._calls.add(call)
                call.add_done_callback(self._finished)

    def _finished(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._slots.release()

    async def _next_batch(self) -> list[_Pending[R]]:
        if self._carry is not None:
            first, self._carry = self._carry, None
        else:
            first = await self._queue.get()
        if self.max_batch_wait_s > 0:
            await asyncio.sleep(self.max_batch_wait_s)  # let concurrent requests join
        batch, size = [first], len(first.conversations)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if size + len(item.conversations) > self.max_batch_size:
                self._carry = item
                break
            batch.append(item)
            size += len(item.conversations)
        # Requests whose client went away meanwhile are not worth generating for.
        return [item for item in batch if not item.future.done()]

    async def _run_group(self, items: list[_Pending[R]]) -> None:
        conversations = [c for item in items for c in item.conversations]
        logger.debug("batch: %d requests, %d conversations", len(items), len(conversations))
        try:
            results = await asyncio.to_thread(self.run, conversations, items[0].sampling)
            if len(results) != len(conversations):
                raise RuntimeError(f"{len(results)} results for {len(conversations)} conversations")
        except Exception as exc:
            logger.exception("a batch of %d requests failed", len(items))
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        offset = 0
        for item in items:
            if not item.future.done():
                item.future.set_result(results[offset : offset + len(item.conversations)])
            offset += len(item.conversations)


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before it is read into memory,
    whether it declares its length or streams chunks."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        received, over, replied = 0, False, False

        async def limited_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _BodyTooLarge  # stops reading; the framework's own error reply is replaced below
            return message

        async def guarded_send(message):
            nonlocal replied
            if not over:
                await send(message)
            elif not replied:
                replied = True
                await self._too_large(send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not replied:
                await self._too_large(send)

    async def _too_large(self, send) -> None:
        response = APIError(413, f"request body over {self.max_bytes} bytes", code="request_too_large").response()
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _BodyTooLarge(Exception):
    pass


# --- the app ------------------------------------------------------------------------------------


def create_app(
    system: ServedSystem | Engine,
    api_key: str | None = None,
    served_model_name: str | None = None,
    max_batch_wait_ms: float = 10.0,
    max_batch_size: int = DEFAULT_BATCH_SIZE,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """Serve ``system`` (an engine is served as a single model) as ``served_model_name`` on ``/v1``.

    With ``api_key``, every ``/v1`` route requires ``Authorization: Bearer <api_key>``; ``/health``
    and ``/metrics`` (Prometheus) stay open for load balancers and scrapers. ``limits`` bound each
    request's body, prompt and ``max_tokens``.
    """
    if not hasattr(system, "answer"):
        system = SingleModel(system)  # type: ignore[arg-type]
    limits = limits or RequestLimits()
    model_name = served_model_name or system.model_id
    batcher: MicroBatcher[Reply] = MicroBatcher(system.answer, max_batch_wait_ms=max_batch_wait_ms,
                                                max_batch_size=max_batch_size,
                                                max_in_flight=max_batch_size if system.thread_safe else 1)
    # Token by token only where one model answers and its engine streams; otherwise the whole answer
    # is sent as one chunk when it is ready (a team's answer exists only once the debate ends).
    streamer = system.engine if isinstance(system, SingleModel) and isinstance(system.engine, StreamingEngine) else None
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="agentark", summary=f"OpenAI-compatible API serving {model_name} ({system.name})", lifespan=lifespan
    )
    app.state.system = system
    app.state.api_key_required = api_key is not None
    app.state.complete = batcher.generate  # CompleteFn; replace to route requests elsewhere
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    metrics = app.state.metrics = ServerMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: 413s are counted too
    auth = [Depends(_bearer_auth(api_key))] if api_key is not None else []

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "system": system.name}

    @app.get("/metrics")
    async def prometheus() -> Response:
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "agentark"}],
        }

    def validated(body: ChatCompletionRequest) -> tuple[Conversation, SamplingParams]:
        if body.model != model_name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves {model_name!r}",
                           code="model_not_found")
        if body.n > 1 and not isinstance(system, SingleModel):
            raise APIError(400, f"n={body.n}: the {system.name} system gives one answer per request; send n=1",
                           code="unsupported_parameter")
        conversation = body.conversation()
        prompt_chars = sum(len(m["content"]) for m in conversation)
        if prompt_chars > limits.max_prompt_chars:
            raise APIError(400, f"the messages hold {prompt_chars} characters; this server accepts at most "
                           f"{limits.max_prompt_chars}", code="context_length_exceeded")
        sampling = body.sampling(system.default_temperature)
        if sampling.max_new_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens={sampling.max_new_tokens} exceeds this server's limit of "
                           f"{limits.max_tokens}", code="invalid_max_tokens")
        return conversation, sampling

    async def replies_for(conversations: list[Conversation], sampling: SamplingParams) -> list[Reply]:
        complete: CompleteFn = app.state.complete
        try:
            replies = await complete(conversations, sampling)
        except APIError:
            raise
        except EngineRequestError as exc:
            raise APIError(400, str(exc), code="context_length_exceeded") from exc
        except Exception as exc:
            raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error") from exc
        for reply in replies:
            metrics.record_answer(reply.route)
        metrics.record_usage(usage([r.completion for r in replies]))  # the prompt once, as in the response
        return replies

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        conversation, sampling = validated(body)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.stream and streamer is not None and body.n == 1:
            return await token_stream(conversation, sampling, include_usage)
        start = time.perf_counter()
        replies = await replies_for([conversation] * body.n, sampling)
        headers = {ROUTE_HEADER: replies[0].route}
        if body.stream:
            metrics.ttft.observe(time.perf_counter() - start)
            events = ChunkWriter(model_name).whole([r.completion for r in replies], include_usage)
            return StreamingResponse(iter(events), media_type="text/event-stream", headers=headers)
        return JSONResponse(completion_response(model_name, replies), headers=headers)

    async def token_stream(conversation: Conversation, sampling: SamplingParams, include_usage: bool) -> Response:
        """Tokens as llama.cpp decodes them. The first token is awaited before answering, so a request
        the engine refuses still gets its 4xx status instead of a broken 200 stream."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        gone = False  # the client disconnected: tell llama.cpp to stop decoding for it

        def sink(text: str) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, ("text", text))
            return gone

        async def produce() -> None:
            try:
                completion = await asyncio.to_thread(streamer.stream, conversation, sampling, sink)
                queue.put_nowait(("done", completion))
            except Exception as exc:  # delivered to the consumer below
                queue.put_nowait(("error", exc))

        start = time.perf_counter()
        producer = asyncio.create_task(produce())
        kind, value = await queue.get()
        if kind == "error":
            if isinstance(value, EngineRequestError):
                raise APIError(400, str(value), code="context_length_exceeded")
            raise APIError(500, f"generation failed: {type(value).__name__}: {value}", type="server_error")
        metrics.ttft.observe(time.perf_counter() - start)
        writer = ChunkWriter(model_name)

        async def events() -> AsyncIterator[bytes]:
            nonlocal gone
            kind_, value_ = kind, value
            try:
                yield writer.delta(0, {"role": "assistant", "content": ""})
                while True:
                    if kind_ == "text":
                        yield writer.delta(0, {"content": value_})
                    elif kind_ == "done":  # after all text: both reach the queue through the loop, in order
                        metrics.record_answer(SingleModel.name)
                        metrics.record_usage(usage([value_]))
                        yield writer.delta(0, {}, value_.finish_reason)
                        for event in writer.tail([value_], include_usage):
                            yield event
                        return
                    else:  # failed mid-stream: the status is sent already, so say it in the stream
                        yield sse({"error": {"message": f"generation failed: {value_}", "type": "server_error"}})
                        return
                    kind_, value_ = await queue.get()
            finally:
                gone = True
                await producer

        return StreamingResponse(events(), media_type="text/event-stream", headers={ROUTE_HEADER: SingleModel.name})

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted.

    Loopback by default: exposing a model on the network should be a deliberate choice, and then
    with an API key, which is why an open non-loopback bind is warned about.
    """
    import uvicorn

    if not is_loopback_host(host) and not getattr(app.state, "api_key_required", False):
        logger.warning("serving on %s without an API key: anyone who can reach this port can use the model", host)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextmanager
def background_server(app: FastAPI, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread until the block exits; yields its
    base URL (``http://127.0.0.1:PORT``). For notebooks, benchmarks and tests.

    The socket is bound here and handed to uvicorn, so there is no window in which another process
    could take a port we picked.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
