"""OpenAIEngine against real HTTP servers: agentark's own server over the tiny model, and a flaky one."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentark.engines import get_engine
from agentark.engines.base import SamplingParams
from agentark.engines.hf import HFEngine
from agentark.engines.openai import OpenAIEngine, OpenAIEngineError
from agentark.serve import create_app

from server_utils import CountingEngine, running_server

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)
CONVERSATIONS = [
    [{"role": "user", "content": f"What is {i} + {3 * i}? Let's think step by step."}] for i in range(5)
] + [[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Solve 4 * 2."}]]


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    """Never send a developer's real key to a test server; loopback servers get the placeholder."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir) -> HFEngine:
    # batch_size=1: every conversation is computed alone (no padding), so the server's batching
    # cannot change a greedy token and direct vs. HTTP results must match exactly.
    return HFEngine.from_pretrained(str(tiny_model_dir), batch_size=1)


@pytest.fixture(scope="module")
def counting(hf_engine) -> CountingEngine:
    return CountingEngine(hf_engine)


@pytest.fixture(scope="module")
def server_url(counting) -> str:
    with running_server(create_app(counting, served_model_name="tiny")) as url:
        yield url


@pytest.fixture(scope="module")
def secured_url(hf_engine) -> str:
    with running_server(create_app(hf_engine, api_key="s3cret", served_model_name="tiny")) as url:
        yield url


def flaky_app(statuses: list[int]) -> tuple[FastAPI, list[dict]]:
    """A server answering request k with ``statuses[k]`` (200: a valid completion; 200 once exhausted)."""
    app = FastAPI()
    bodies: list[dict] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        bodies.append(await request.json())
        status = statuses[len(bodies) - 1] if len(bodies) <= len(statuses) else 200
        if status != 200:
            error = {"message": f"flaky {status}", "type": "server_error", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=status)
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "flaky",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }

    return app, bodies


def test_matches_direct_engine(hf_engine, server_url):
    expected = hf_engine.generate(CONVERSATIONS, GREEDY)
    engine = get_engine("openai", "tiny", base_url=f"{server_url}/v1")
    got = engine.generate(CONVERSATIONS, GREEDY)
    assert len(got) == len(CONVERSATIONS)
    for g, e in zip(got, expected, strict=True):
        assert (g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) == (
            e.text, e.prompt_tokens, e.completion_tokens, e.finish_reason
        )
        assert g.latency_s > 0
    assert len({c.prompt_tokens for c in got}) > 1  # conversations differ, so order is really checked


def test_concurrency_limit(hf_engine, counting, server_url):
    before = len(counting.calls)
    got = OpenAIEngine("tiny", base_url=f"{server_url}/v1", concurrency=2).generate(CONVERSATIONS, GREEDY)
    assert [c.text for c in got] == [c.text for c in hf_engine.generate(CONVERSATIONS, GREEDY)]
    new_calls = counting.calls[before:]
    assert sum(new_calls) == len(CONVERSATIONS)
    assert max(new_calls) <= 2  # never more than 2 requests in flight, so never more in one batch


def test_generate_inside_running_event_loop(server_url):
    engine = OpenAIEngine("tiny", base_url=f"{server_url}/v1")

    async def caller():
        return engine.generate(CONVERSATIONS[:2], GREEDY)

    assert len(asyncio.run(caller())) == 2


def test_api_key(secured_url, monkeypatch):
    monkeypatch.setenv("AGENTARK_TEST_KEY", "wrong")
    engine = OpenAIEngine("tiny", base_url=f"{secured_url}/v1", api_key_env="AGENTARK_TEST_KEY")
    with pytest.raises(OpenAIEngineError, match=r"HTTP 401.*AGENTARK_TEST_KEY") as excinfo:
        engine.generate(CONVERSATIONS[:2], GREEDY)
    assert secured_url in str(excinfo.value)

    monkeypatch.setenv("AGENTARK_TEST_KEY", "s3cret")
    engine = OpenAIEngine("tiny", base_url=f"{secured_url}/v1", api_key_env="AGENTARK_TEST_KEY")
    assert len(engine.generate(CONVERSATIONS[:2], GREEDY)) == 2


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AGENTARK_TEST_UNSET", raising=False)
    for base_url in (None, "https://api.example.com/v1"):
        with pytest.raises(ValueError, match="AGENTARK_TEST_UNSET"):
            OpenAIEngine("gpt-4o-mini", base_url=base_url, api_key_env="AGENTARK_TEST_UNSET")
    OpenAIEngine("local", base_url="http://localhost:8000/v1", api_key_env="AGENTARK_TEST_UNSET")


def test_retries_rate_limits_and_server_errors():
    app, bodies = flaky_app([500, 429, 503])
    with running_server(app) as url:
        engine = OpenAIEngine("flaky", base_url=f"{url}/v1", max_retries=5, retry_base_s=0.01)
        [completion] = engine.generate(CONVERSATIONS[:1], GREEDY)
    assert len(bodies) == 4
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("ok", 3, 2)
    assert completion.finish_reason == "length"


def test_gives_up_after_max_retries():
    app, bodies = flaky_app([500] * 10)
    with running_server(app) as url:
        engine = OpenAIEngine("flaky", base_url=f"{url}/v1", max_retries=2, retry_base_s=0.01)
        with pytest.raises(OpenAIEngineError, match="after 3 attempts") as excinfo:
            engine.generate(CONVERSATIONS[:1], GREEDY)
    assert url in str(excinfo.value)
    assert len(bodies) == 3


def test_does_not_retry_client_errors():
    app, bodies = flaky_app([400])
    with running_server(app) as url:
        engine = OpenAIEngine("flaky", base_url=f"{url}/v1", max_retries=5, retry_base_s=0.01)
        with pytest.raises(OpenAIEngineError, match="HTTP 400"):
            engine.generate(CONVERSATIONS[:1], GREEDY)
    assert len(bodies) == 1


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    engine = OpenAIEngine("none", base_url=url, max_retries=1, retry_base_s=0.01, timeout_s=5)
    with pytest.raises(OpenAIEngineError, match="after 2 attempts") as excinfo:
        engine.generate(CONVERSATIONS[:1], GREEDY)
    assert url in str(excinfo.value)


def test_sampling_params_reach_the_server():
    app, bodies = flaky_app([])
    sampling = SamplingParams(temperature=0.5, top_p=0.9, max_new_tokens=9, seed=7, ignore_eos=True)
    with running_server(app) as url:
        OpenAIEngine("flaky", base_url=f"{url}/v1").generate(CONVERSATIONS[:2], sampling)
    assert {body["seed"] for body in bodies} == {7, 8}  # distinct per request: identical prompts still differ
    for body in bodies:
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["ignore_eos"]) == (0.5, 0.9, 9, True)


def test_one_loopback_rule_for_clients_and_servers():
    from agentark.engines.openai import is_loopback_host

    assert is_loopback_host("localhost") and is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    # 0.0.0.0 binds every interface: not loopback, so serving there warns and a client needs a real key.
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("example.com") and not is_loopback_host("")
