"""Real HTTP servers for tests: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from agentark.engines.base import Completion, Conversation, Engine, SamplingParams


@contextmanager
def running_server(app, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` until the block exits; yields its base URL (``http://127.0.0.1:PORT``).

    The socket is bound here and handed to uvicorn, so there is no window in which another process
    could take a port we picked.
    """
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
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


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
