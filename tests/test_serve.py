"""The OpenAI-compatible server over a real HFEngine (tiny model), exercised over real HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.engines.hf import HFEngine
from agentark.serve import create_app

from server_utils import CountingEngine, OverlapEngine, running_server

MESSAGES = [{"role": "user", "content": "What is 3 + 4 * 2?"}]


def chat_body(**overrides) -> dict:
    return {"model": "tiny", "messages": MESSAGES, "temperature": 0, "max_tokens": 8, **overrides}


@pytest.fixture(scope="module")
def counting(tiny_model_dir) -> CountingEngine:
    return CountingEngine(HFEngine.from_pretrained(str(tiny_model_dir), batch_size=8))


@pytest.fixture(scope="module")
def url(counting) -> str:
    # A generous window so the concurrent requests of the batching test reliably land in one.
    with running_server(create_app(counting, served_model_name="tiny", max_batch_wait_ms=50)) as base:
        yield base


def test_health_and_models(url):
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    models = httpx.get(f"{url}/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"]


def test_chat_completion(url):
    response = httpx.post(f"{url}/v1/chat/completions", json=chat_body(n=2), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for choice in body["choices"]:
        assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_text_content_parts_and_max_completion_tokens(url):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is 3 + 4 * 2?"}]}]
    body = chat_body(messages=messages, max_tokens=None, max_completion_tokens=5, ignore_eos=True)
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 5
    assert response.json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (chat_body(n=0), 400, "n"),
        (chat_body(model="gpt-4o"), 404, "gpt-4o"),
        (chat_body(messages=[]), 400, "messages"),
        (chat_body(temperature=5), 400, "temperature"),
        ({"model": "tiny"}, 400, "messages"),
    ],
)
def test_bad_requests_get_openai_errors(url, body, status, fragment):
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_micro_batching_merges_concurrent_requests(url, counting):
    async def fire(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=chat_body()) for _ in range(n)))

    before = len(counting.calls)
    responses = asyncio.run(fire(4))
    assert all(r.status_code == 200 for r in responses)
    calls = counting.calls[before:]
    assert sum(calls) == 4
    assert len(calls) < 4
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1  # same greedy prompt


def test_different_sampling_settings_are_not_mixed(url, counting):
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            bodies = [chat_body(max_tokens=3, ignore_eos=True)] * 2 + [chat_body(max_tokens=6, ignore_eos=True)] * 2
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))

    before = len(counting.calls)
    responses = asyncio.run(fire())
    assert [r.json()["usage"]["completion_tokens"] for r in responses] == [3, 3, 6, 6]
    assert sum(counting.calls[before:]) == 4


def test_api_key_required(counting):
    app = create_app(counting, api_key="s3cret", served_model_name="tiny")
    with running_server(app) as base:
        assert httpx.get(f"{base}/health").status_code == 200  # open for load balancers
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = httpx.post(f"{base}/v1/chat/completions", json=chat_body(), headers=headers, timeout=30)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{base}/v1/models").status_code == 401
        ok = httpx.post(f"{base}/v1/chat/completions", json=chat_body(), timeout=30,
                        headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text


class BrokenEngine:
    model_id = "broken"

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        raise RuntimeError("out of memory")


def test_engine_failure_is_a_500_with_the_cause():
    with running_server(create_app(BrokenEngine(), max_batch_wait_ms=0)) as base:
        response = httpx.post(f"{base}/v1/chat/completions", json=chat_body(model="broken"), timeout=30)
        assert response.status_code == 500
        assert "out of memory" in response.json()["error"]["message"]
        # The batcher survives a failed batch.
        assert httpx.post(f"{base}/v1/chat/completions", json=chat_body(model="broken"), timeout=30).status_code == 500


def test_oversized_requests_are_refused_and_the_server_stays_up(counting):
    from agentark.serve import RequestLimits

    limits = RequestLimits(max_body_bytes=20_000, max_prompt_chars=5_000, max_tokens=64)
    with running_server(create_app(counting, served_model_name="tiny", max_batch_wait_ms=0, limits=limits)) as base:
        before = len(counting.calls)
        big = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                         json=chat_body(messages=[{"role": "user", "content": "x" * 100_000}]))
        assert big.status_code == 413 and "bytes" in big.json()["error"]["message"]

        def chunks():
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 5_000
            yield b'"}]}'

        streamed = httpx.post(f"{base}/v1/chat/completions", content=chunks(), timeout=30,
                              headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        long_prompt = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                                 json=chat_body(messages=[{"role": "user", "content": "z" * 6_000}]))
        assert long_prompt.status_code == 400 and "5000" in long_prompt.json()["error"]["message"]
        greedy = httpx.post(f"{base}/v1/chat/completions", json=chat_body(max_tokens=10**9), timeout=30)
        assert greedy.status_code == 400 and "max_tokens" in greedy.json()["error"]["message"]
        assert len(counting.calls) == before  # none of them reached the engine
        ok = httpx.post(f"{base}/v1/chat/completions", json=chat_body(), timeout=60)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None


def test_metrics_count_the_traffic(counting):
    with running_server(create_app(counting, served_model_name="tiny", max_batch_wait_ms=0)) as base:
        for _ in range(3):
            assert httpx.post(f"{base}/v1/chat/completions", json=chat_body(), timeout=60).status_code == 200
        assert httpx.post(f"{base}/v1/chat/completions", json=chat_body(model="nope"), timeout=30).status_code == 404
        httpx.get(f"{base}/no/such/path", timeout=30)
        text = httpx.get(f"{base}/metrics", timeout=30).text
    assert 'agentark_requests_total{route="/v1/chat/completions",status="200"} 3.0' in text
    assert 'agentark_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
    assert 'agentark_requests_total{route="other",status="404"} 1.0' in text
    assert 'agentark_request_latency_seconds_count{route="/v1/chat/completions"} 4.0' in text
    completion = next(line for line in text.splitlines() if line.startswith('agentark_tokens_total{kind="completion"}'))
    assert float(completion.split()[-1]) > 0


def test_stream_of_a_non_streaming_engine_is_the_whole_answer_in_openai_chunks(url):
    """The hf engine does not stream: the answer comes as one chunk when ready, in OpenAI's format."""
    plain = httpx.post(f"{url}/v1/chat/completions", json=chat_body(), timeout=30).json()
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      json=chat_body(stream=True, stream_options={"include_usage": True})) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-agentark-route"] == "single"
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == plain["usage"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == plain["choices"][0][
        "finish_reason"
    ]


@pytest.mark.parametrize("thread_safe,expected_overlap", [(True, 2), (False, 1)])
def test_requests_join_a_running_batch_only_on_thread_safe_engines(thread_safe, expected_overlap):
    """A request that arrives while a batch decodes is sent to a thread-safe engine at once (llama.cpp
    then adds it to the next decode step); a transformers model sees one call at a time."""
    engine = OverlapEngine(thread_safe, delay_s=0.8)

    async def two_requests(base):
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(client.post(f"{base}/v1/chat/completions", json=chat_body(model="overlap")))
            await asyncio.sleep(0.3)
            second = await client.post(f"{base}/v1/chat/completions", json=chat_body(model="overlap"))
            return [(await first).status_code, second.status_code]

    with running_server(create_app(engine, max_batch_wait_ms=0)) as base:
        assert asyncio.run(two_requests(base)) == [200, 200]
    assert engine.most == expected_overlap
