"""A load generator that measures what a user of an OpenAI-compatible server sees.

Questions are sent as chat requests either at a fixed concurrency (``concurrency`` requests in flight,
a new one as soon as one returns) or as a Poisson process (``rate`` requests per second, exponential
gaps, each sent whether or not earlier ones returned: an open loop, which is how real traffic
arrives and what exposes queueing). The run is bounded by ``n`` requests and ``max_duration_s``.
Latency is end to end per request (send to last byte); with ``stream`` requests, time to first token
is the time to the first content chunk. Offline batch timings are throughput, not latency: this is
the number a latency gate should read.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from pydantic import BaseModel

from agentark.defaults import DEFAULT_BATCH_SIZE
from agentark.engines.base import Conversation
from agentark.evaluate.stats import percentiles
from agentark.serve.app import background_server, create_app
from agentark.serve.systems import ROUTE_HEADER


class LoadResult(BaseModel):
    """What a load test measured; latencies in seconds."""

    mode: str
    concurrency: int | None
    rate_per_s: float | None
    sent: int
    ok: int
    errors: int
    error_rate: float
    wall_s: float
    throughput_rps: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    completion_tokens: int
    routes: dict[str, int] = {}  # answers by the server's X-AgentArk-Route header (e.g. hybrid student/team)


@dataclass
class _Outcome:
    ok: bool
    latency_s: float
    ttft_s: float | None
    completion_tokens: int
    route: str | None = None


async def _one(client: httpx.AsyncClient, url: str, body: dict) -> _Outcome:
    start = time.perf_counter()
    try:
        if body.get("stream"):
            ttft, tokens = None, 0
            async with client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    return _Outcome(False, time.perf_counter() - start, None, 0)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if usage := chunk.get("usage"):
                        tokens = int(usage.get("completion_tokens", tokens))
                    for choice in chunk.get("choices") or []:  # the usage chunk has none
                        if choice.get("delta", {}).get("content") and ttft is None:
                            ttft = time.perf_counter() - start
                return _Outcome(True, time.perf_counter() - start, ttft, tokens, response.headers.get(ROUTE_HEADER))
        response = await client.post(url, json=body)
        latency = time.perf_counter() - start
        if response.status_code != 200:
            return _Outcome(False, latency, None, 0)
        usage = response.json().get("usage") or {}
        return _Outcome(
            True, latency, latency, int(usage.get("completion_tokens", 0)), response.headers.get(ROUTE_HEADER)
        )
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, IndexError):
        return _Outcome(False, time.perf_counter() - start, None, 0)


def _pct(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    p = percentiles(values, (50, 95, 99))
    return p[50], p[95], p[99]


async def run_load(base_url: str, model: str, conversations: Sequence[Conversation], *, n: int,
                   concurrency: int | None = None, rate: float | None = None, max_tokens: int = 256,
                   temperature: float | None = 0.0, stream: bool = False, max_duration_s: float = 600.0,
                   api_key: str | None = None, timeout_s: float = 300.0, seed: int = 0) -> LoadResult:
    """Send ``n`` requests (questions cycled in order) to ``base_url``/chat/completions; see the module doc.

    ``temperature=None`` leaves it out of the requests, so the server's system default applies (a
    voting team samples); streamed requests ask for the usage chunk, so tokens are counted exactly.
    """
    if (concurrency is None) == (rate is None):
        raise ValueError("give exactly one of concurrency (closed loop) or rate (Poisson arrivals)")
    if concurrency is not None and concurrency < 1 or rate is not None and rate <= 0 or n < 1:
        raise ValueError("n and concurrency must be >= 1, rate > 0")
    if not conversations:
        raise ValueError("no questions to send")
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    extra = ({} if temperature is None else {"temperature": temperature}) | (
        {"stream": True, "stream_options": {"include_usage": True}} if stream else {})
    bodies = [{"model": model, "messages": conversations[i % len(conversations)], "max_tokens": max_tokens, **extra}
              for i in range(n)]
    deadline = time.perf_counter() + max_duration_s
    outcomes: list[_Outcome] = []
    limits = httpx.Limits(max_connections=max(concurrency or 0, 256))
    start = time.perf_counter()
    async with httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits) as client:
        if concurrency is not None:
            queue = iter(bodies)

            async def worker() -> None:
                for body in queue:  # a shared iterator: each body is taken by exactly one worker
                    if time.perf_counter() > deadline:
                        return
                    outcomes.append(await _one(client, url, body))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            rng, tasks = random.Random(seed), []
            for body in bodies:
                if time.perf_counter() > deadline:
                    break
                tasks.append(asyncio.create_task(_one(client, url, body)))
                await asyncio.sleep(rng.expovariate(rate))
            outcomes.extend(await asyncio.gather(*tasks))
    wall = time.perf_counter() - start
    good = [o for o in outcomes if o.ok]
    lat = _pct([o.latency_s for o in good])
    ttft = _pct([o.ttft_s for o in good if o.ttft_s is not None])
    sent = len(outcomes)
    return LoadResult(
        mode="concurrency" if concurrency is not None else "poisson", concurrency=concurrency, rate_per_s=rate,
        sent=sent, ok=len(good), errors=sent - len(good), error_rate=(sent - len(good)) / sent if sent else 0.0,
        wall_s=wall, throughput_rps=len(good) / wall if wall > 0 else float(np.inf),
        latency_p50_s=lat[0], latency_p95_s=lat[1], latency_p99_s=lat[2],
        ttft_p50_s=ttft[0], ttft_p95_s=ttft[1], ttft_p99_s=ttft[2],
        completion_tokens=sum(o.completion_tokens for o in good),
        routes=dict(Counter(o.route for o in good if o.route)),
    )


def measure_served(system, conversations: Sequence[Conversation], *, n: int, concurrency: int | None = None,
                   rate: float | None = None, max_tokens: int = 256, temperature: float | None = 0.0,
                   stream: bool = False, max_duration_s: float = 600.0, max_batch_size: int = DEFAULT_BATCH_SIZE,
                   seed: int = 0) -> LoadResult:
    """Serve ``system`` (a :class:`~agentark.serve.systems.ServedSystem` or an engine) on a loopback
    port of this machine for the duration of one load test, and measure it as a client would."""
    with background_server(create_app(system, served_model_name="served", max_batch_size=max_batch_size)) as base:
        return asyncio.run(run_load(f"{base}/v1", "served", conversations, n=n, concurrency=concurrency, rate=rate,
                                    max_tokens=max_tokens, temperature=temperature, stream=stream,
                                    max_duration_s=max_duration_s, seed=seed))


def load_label(concurrency: int | None, rate: float | None) -> str:
    """How a load is named in reports: ``concurrency 4`` or ``Poisson 0.5/s``."""
    return f"concurrency {concurrency}" if concurrency is not None else f"Poisson {rate:g}/s"
