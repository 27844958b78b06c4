"""Real HTTP servers for tests: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import threading

from agentark.engines.base import Completion, Conversation, Engine, SamplingParams
from agentark.serve import background_server as running_server  # noqa: F401  (the tests' name for it)


class CountingEngine:
    """Engine decorator that records the size of every ``generate`` call it forwards."""

    def __init__(self, inner: Engine):
        self.inner = inner
        self.model_id = inner.model_id
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        with self._lock:
            self.calls.append(len(conversations))
        return self.inner.generate(conversations, sampling)
