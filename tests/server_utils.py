"""Real HTTP servers for tests: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import threading
import time

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


class OverlapEngine:
    """Records the most ``generate`` calls that ever ran at once (``most``); each call takes ``delay_s``
    and answers from the conversation alone, so any schedule of calls gives the same outputs."""

    model_id = "overlap"

    def __init__(self, thread_safe: bool, delay_s: float):
        self.thread_safe, self.delay_s = thread_safe, delay_s
        self.in_flight, self.most, self._lock = 0, 0, threading.Lock()

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.delay_s)
        with self._lock:
            self.in_flight -= 1
        return [
            Completion(f"The answer is {len(c[-1]['content']) % 7}.", len(c), 5, self.delay_s) for c in conversations
        ]
