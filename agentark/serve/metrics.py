"""Prometheus metrics of one server: requests by route and status, latency, time to first token,
tokens, and which path answered (the hybrid's fallback share).

Each app gets its own ``CollectorRegistry`` (not the process-global one), so two servers in one
process (tests, a student and a team side by side) never mix their counts. ``/metrics`` serves it in
Prometheus' text format, as vLLM's server does.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROUTES = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/metrics"})
"""Paths counted under their own name; any other path is "other" (labels must stay a bounded set)."""


class ServerMetrics:
    """The counters and histograms of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("agentark_requests", "HTTP requests by route and status code.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("agentark_request_latency_seconds", "End-to-end request latency.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("agentark_tokens", "Tokens processed, by kind (prompt or completion).", ["kind"],
                              registry=self.registry)
        self.ttft = Histogram("agentark_time_to_first_token_seconds", "Time to the first streamed token.",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.answers = Counter("agentark_answers", "Answers by the path that gave them (single, debate, "
                               "self_consistency; the hybrid's student or team).", ["path"], registry=self.registry)
        self.fallback_share = Gauge("agentark_hybrid_fallback_share", "Share of hybrid answers the team gave.",
                                    registry=self.registry)
        self._hybrid = {"student": 0, "team": 0}

    def record_usage(self, usage: dict[str, int]) -> None:
        """One response's OpenAI ``usage``."""
        self.tokens.labels("prompt").inc(usage["prompt_tokens"])
        self.tokens.labels("completion").inc(usage["completion_tokens"])

    def record_answer(self, path: str) -> None:
        """One answer, by the path that gave it; the hybrid's fallback share follows."""
        self.answers.labels(path).inc()
        if path in self._hybrid:
            self._hybrid[path] += 1
            self.fallback_share.set(self._hybrid["team"] / sum(self._hybrid.values()))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: count each HTTP request by route and final status (413s included), time it."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # a request whose handler dies before answering
        start = time.perf_counter()

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("path", "") if scope.get("path", "") in ROUTES else "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
