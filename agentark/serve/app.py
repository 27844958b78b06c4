"""An OpenAI-compatible HTTP server over any :class:`~agentark.engines.base.Engine`.

Any OpenAI client (including :class:`~agentark.engines.openai.OpenAIEngine`) can then use a
distilled student. Engines are fastest on batches, while HTTP users arrive one request at a time,
so a :class:`MicroBatcher` merges requests that arrive within a few milliseconds into one
``engine.generate`` call, run in a worker thread so the event loop keeps accepting requests.

The request -> completions path is one swappable function, ``app.state.complete`` (see
:data:`CompleteFn`): it defaults to the micro-batcher, and a router (student first, multi-agent
fallback) can replace it without touching the HTTP layer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentark.engines.base import Completion, Conversation, Engine, SamplingParams
from agentark.engines.openai import is_loopback_host
from agentark.serve.metrics import MetricsMiddleware, ServerMetrics

logger = logging.getLogger(__name__)

CompleteFn = Callable[[list[Conversation], SamplingParams], Awaitable[list[Completion]]]
"""Conversations + sampling -> one completion each, in order: what a chat request is served by."""

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
    ignore_eos: bool = False  # vLLM extension, sent by OpenAIEngine for benchmarks

    def conversation(self) -> Conversation:
        return [{"role": message.role, "content": message.text()} for message in self.messages]

    def sampling(self) -> SamplingParams:
        """OpenAI defaults (temperature 1, top_p 1) where the request leaves a field out."""
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_new_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )


def completion_response(model: str, completions: list[Completion]) -> dict:
    """The ``chat.completion`` object; the prompt is counted once, as OpenAI does for ``n > 1``."""
    prompt_tokens = completions[0].prompt_tokens
    completion_tokens = sum(c.completion_tokens for c in completions)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            for i, c in enumerate(completions)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


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


@dataclass
class _Pending:
    conversations: list[Conversation]
    sampling: SamplingParams
    future: asyncio.Future[list[Completion]]


class MicroBatcher:
    """Merges concurrent requests into few ``engine.generate`` calls.

    One background task takes the first waiting request, waits ``max_batch_wait_ms`` for others,
    then runs everything collected (up to ``max_batch_size`` conversations) as one engine call per
    distinct sampling setting. The engine is called by this task only, one call at a time, so
    requests that arrive while it is busy queue up and form the next batch; and the engine (an HF
    model is not thread-safe) never runs twice at once.

    Requests that differ only in ``seed`` share a call, seeded with the first one's seed: engines
    seed per batch (HFEngine) and OpenAIEngine sends a distinct seed per request, so grouping by
    seed would leave every seeded request in a batch of one.
    """

    def __init__(self, engine: Engine, max_batch_wait_ms: float = 10.0, max_batch_size: int = 32):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.engine = engine
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        self.max_batch_size = max_batch_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: _Pending | None = None  # taken from the queue, but did not fit the last batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agentark-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
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

    async def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        """A :data:`CompleteFn`: queue the request and wait for its share of a batch."""
        if self._task is None:
            raise RuntimeError("MicroBatcher is not running: start() it (create_app does, in its lifespan)")
        future: asyncio.Future[list[Completion]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(conversations, sampling, future))
        return await future

    async def _run(self) -> None:
        while True:
            groups: dict[SamplingParams, list[_Pending]] = {}
            for item in await self._next_batch():
                groups.setdefault(replace(item.sampling, seed=None), []).append(item)
            for items in groups.values():
                await self._run_group(items)

    async def _next_batch(self) -> list[_Pending]:
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

    async def _run_group(self, items: list[_Pending]) -> None:
        conversations = [c for item in items for c in item.conversations]
        logger.debug("engine batch: %d requests, %d conversations", len(items), len(conversations))
        try:
            completions = await asyncio.to_thread(self.engine.generate, conversations, items[0].sampling)
            if len(completions) != len(conversations):
                raise RuntimeError(f"engine returned {len(completions)} completions for {len(conversations)} conversations")
        except Exception as exc:
            logger.exception("engine.generate failed for a batch of %d requests", len(items))
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        offset = 0
        for item in items:
            if not item.future.done():
                item.future.set_result(completions[offset : offset + len(item.conversations)])
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
    engine: Engine,
    api_key: str | None = None,
    served_model_name: str | None = None,
    max_batch_wait_ms: float = 10.0,
    max_batch_size: int = 32,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """Serve ``engine`` as ``served_model_name`` (default: its ``model_id``) on ``/v1``.

    With ``api_key``, every ``/v1`` route requires ``Authorization: Bearer <api_key>``; ``/health``
    and ``/metrics`` (Prometheus) stay open for load balancers and scrapers. ``limits`` bound each
    request's body, prompt and ``max_tokens``.
    """
    limits = limits or RequestLimits()
    model_name = served_model_name or engine.model_id
    batcher = MicroBatcher(engine, max_batch_wait_ms=max_batch_wait_ms, max_batch_size=max_batch_size)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="agentark", summary=f"OpenAI-compatible API serving {model_name}", lifespan=lifespan)
    app.state.engine = engine
    app.state.api_key_required = api_key is not None
    app.state.complete = batcher.generate  # CompleteFn; replace to route requests elsewhere
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    metrics = app.state.metrics = ServerMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: 413s are counted too
    auth = [Depends(_bearer_auth(api_key))] if api_key is not None else []

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/metrics")
    async def prometheus() -> Response:
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "agentark"}]}

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> dict:
        if body.stream:
            raise APIError(400, "stream=true is not supported by this server; send stream=false", code="unsupported_parameter")
        if body.model != model_name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves {model_name!r}",
                           code="model_not_found")
        conversation = body.conversation()
        prompt_chars = sum(len(m["content"]) for m in conversation)
        if prompt_chars > limits.max_prompt_chars:
            raise APIError(400, f"the messages hold {prompt_chars} characters; this server accepts at most "
                           f"{limits.max_prompt_chars}", code="context_length_exceeded")
        sampling = body.sampling()
        if sampling.max_new_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens={sampling.max_new_tokens} exceeds this server's limit of "
                           f"{limits.max_tokens}", code="invalid_max_tokens")
        complete: CompleteFn = request.app.state.complete
        try:
            completions = await complete([conversation] * body.n, sampling)
        except APIError:
            raise
        except Exception as exc:
            raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error") from exc
        response = completion_response(model_name, completions)
        metrics.record_usage(response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"])
        return response

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
