"""OpenAI-compatible HTTP engine: the same debate against OpenAI, vLLM, or ``agentark serve``.

One ``generate`` call fans its conversations out as concurrent chat-completion requests (bounded
by ``concurrency``) on a fresh event loop, so callers stay synchronous like every other engine.
Secrets come only from the environment variable named by ``api_key_env``; they are never passed
as arguments, so they cannot end up in configs, manifests or logs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from agentark.engines.base import Completion, Conversation, SamplingParams

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# What vLLM users pass when their local server checks no key; the client refuses an empty one.
PLACEHOLDER_API_KEY = "EMPTY"
MAX_RETRY_DELAY_S = 60.0


class OpenAIEngineError(RuntimeError):
    """A request failed for good: a non-retryable status (bad key, bad request) or retries exhausted."""


class OpenAIEngine:
    """Generate through any server speaking the OpenAI chat-completions API."""

    thread_safe = True  # each call has its own client and event loop: concurrent calls are independent

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        retry_base_s: float = 0.5,
    ):
        """``retry_base_s`` is the first backoff delay; it doubles per retry (capped at 60 s)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model_id = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s
        self._api_key = _resolve_api_key(base_url, api_key_env)

    @property
    def server(self) -> str:
        """The URL requests go to, for error messages and logs."""
        return self.base_url or OPENAI_BASE_URL

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        """One completion per conversation, in input order; raises :class:`OpenAIEngineError` on failure.

        ``latency_s`` is each request's own time, retries included, waiting for a concurrency slot not.
        """
        if not conversations:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._generate_all(conversations, sampling))
        # Called synchronously from inside a running loop (a notebook, an async app): asyncio.run
        # refuses to nest, so run our own loop in a worker thread. The caller's loop is blocked
        # meanwhile, exactly as with any other synchronous engine.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._generate_all(conversations, sampling)).result()

    async def _generate_all(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        from openai import AsyncOpenAI

        semaphore = asyncio.Semaphore(self.concurrency)
        # A client per call: its connection pool belongs to the event loop asyncio.run made for this
        # call and must not outlive it. max_retries=0 because _complete retries itself (see there).
        async with AsyncOpenAI(
            # base_url explicit: never let $OPENAI_BASE_URL silently redirect requests elsewhere.
            api_key=self._api_key, base_url=self.server, timeout=self.timeout_s, max_retries=0
        ) as client:
            tasks = [
                asyncio.create_task(self._complete(client, semaphore, i, conversation, sampling))
                for i, conversation in enumerate(conversations)
            ]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # Fail fast: one request failed for good, so stop paying for the others.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _complete(
        self,
        client: AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        index: int,
        conversation: Conversation,
        sampling: SamplingParams,
    ) -> Completion:
        """Send one request, retrying only what can succeed on a second try.

        Our own loop rather than the client's ``max_retries``: the client also retries 408/409,
        whereas only rate limits (429), server errors (5xx) and connection errors/timeouts are
        transient here; and our loop logs each retry and ends in an error naming the server.
        The backoff sleeps while holding the semaphore on purpose, so a rate-limited server sees
        the whole batch slow down instead of the other requests taking the freed slot.
        """
        import openai

        request = self._request(conversation, sampling, index)
        async with semaphore:
            start = time.perf_counter()
            attempt = 0
            while True:
                try:
                    response = await client.chat.completions.create(**request)
                except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                    if attempt == self.max_retries:
                        raise OpenAIEngineError(
                            f"request {index} to {self.server} failed after {attempt + 1} attempts: {_describe(exc)}"
                        ) from exc
                    delay = self._backoff(attempt, exc)
                    attempt += 1
                    logger.warning(
                        "request %d to %s: %s; retry %d/%d in %.2fs",
                        index, self.server, _describe(exc), attempt, self.max_retries, delay,
                    )
                    await asyncio.sleep(delay)
                except openai.APIStatusError as exc:
                    hint = f" (check the key in ${self.api_key_env})" if exc.status_code in (401, 403) else ""
                    raise OpenAIEngineError(
                        f"request {index} to {self.server} was rejected: {_describe(exc)}{hint}"
                    ) from exc
                else:
                    return self._to_completion(response, time.perf_counter() - start, index)

    def _request(self, conversation: Conversation, sampling: SamplingParams, index: int) -> dict[str, Any]:
        request: dict[str, Any] = dict(
            model=self.model_id,
            messages=conversation,
            temperature=max(sampling.temperature, 0.0),
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            n=1,
        )
        if sampling.seed is not None:
            # A seed is per request on the server, so one seed for all would make identical
            # conversations (every agent's first debate turn, self-consistency samples) identical
            # answers. Offsetting by position keeps the batch reproducible and the samples diverse.
            request["seed"] = sampling.seed + index
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        if sampling.ignore_eos:
            request["extra_body"] = {"ignore_eos": True}  # vLLM / agentark serve extension
        return request

    def _backoff(self, attempt: int, exc: Exception) -> float:
        """Exponential backoff with jitter (so parallel requests do not retry in lockstep); a
        server's ``Retry-After`` wins when it asks for longer."""
        delay = min(MAX_RETRY_DELAY_S, self.retry_base_s * 2**attempt) * random.uniform(0.5, 1.0)
        retry_after = _retry_after_s(exc)
        return max(delay, min(MAX_RETRY_DELAY_S, retry_after)) if retry_after is not None else delay

    def _to_completion(self, response: ChatCompletion, latency_s: float, index: int) -> Completion:
        if not response.choices:
            raise OpenAIEngineError(f"request {index} to {self.server} returned no choices")
        choice = response.choices[0]
        usage = response.usage
        if usage is None:
            logger.warning("%s returned no usage for request %d; counting 0 tokens", self.server, index)
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency_s,
            finish_reason=choice.finish_reason or "stop",
            # OpenAI, vLLM and llama.cpp servers report the prompt tokens their prefix cache served here.
            cached_prompt_tokens=(usage.prompt_tokens_details.cached_tokens or 0)
            if usage and usage.prompt_tokens_details else 0,
        )


def _resolve_api_key(base_url: str | None, api_key_env: str) -> str:
    """The key from ``$api_key_env``; a placeholder for a loopback server, which usually checks none."""
    key = os.environ.get(api_key_env)
    if key:
        return key
    if base_url is not None and is_loopback_host(urlparse(base_url).hostname or ""):
        return PLACEHOLDER_API_KEY
    raise ValueError(
        f"no API key for {base_url or OPENAI_BASE_URL}: set the environment variable {api_key_env} "
        f"(for a server that checks no key, set it to {PLACEHOLDER_API_KEY!r})"
    )


def is_loopback_host(host: str) -> bool:
    """Only this machine can reach ``host``: ``localhost`` or a loopback address. ``0.0.0.0`` is not:
    as a bind address it means every interface, so the server and the client share this one rule."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after_s(exc: Exception) -> float | None:
    """``Retry-After`` in seconds, when the error response has one in that form (not an HTTP date)."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _describe(exc: Exception) -> str:
    """A short, key-free description of a client error for messages and logs."""
    status = getattr(exc, "status_code", None)
    if status is None:
        return f"{type(exc).__name__}: {exc}"
    # The server's own message when it sent OpenAI's error shape, else the client's summary.
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {status}: {message or getattr(exc, 'message', exc)}"
