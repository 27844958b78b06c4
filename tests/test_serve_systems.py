"""Serving a team and the hybrid: routing by the student's agreement, billing, headers, metrics.

The engines here answer from a script (what each question gets) so that agreement and fallback are
known in advance; the multi-agent code, the server and the metrics they run through are the real ones.
"""

from __future__ import annotations

import itertools
import json
import threading

import httpx
import pytest

from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.mas import Debate, SelfConsistency
from agentark.serve import create_app
from agentark.serve.systems import Hybrid, Team, threshold_from_decision
from agentark.tasks import get_task

from server_utils import running_server


class ScriptedEngine:
    """Answers "The answer is N", N picked per question by ``script(question_text, call_number)``."""

    def __init__(self, model_id: str, script):
        self.model_id, self.script = model_id, script
        self.conversations: list[Conversation] = []
        self._calls = itertools.count()
        self._lock = threading.Lock()

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        with self._lock:
            self.conversations += conversations
            numbers = [next(self._calls) for _ in conversations]
        return [Completion(f"Reasoning. The answer is {self.script(c[0]['content'], n)}.", 11, 7, 0.01)
                for c, n in zip(conversations, numbers, strict=True)]


def student_script(question: str, n: int) -> int:
    return 42 if "easy" in question else n % 3  # sure of the easy one, all over the place on the hard one


def ask(url: str, question: str, model: str = "student") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 16}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


@pytest.fixture()
def engines():
    return ScriptedEngine("student", student_script), ScriptedEngine("team", lambda q, n: 7)


def test_hybrid_answers_with_the_student_when_it_agrees_and_with_the_team_otherwise(engines):
    student, team_engine = engines
    task = get_task("arithmetic")
    team = Team(team_engine, Debate(agents=3, rounds=2), task)
    with running_server(create_app(Hybrid(student, team, task, threshold=0.9, k=3), max_batch_wait_ms=0)) as url:
        easy, hard = ask(url, "an easy one: 40 + 2?"), ask(url, "a hard one")
        metrics = httpx.get(f"{url}/metrics").text
    assert easy.status_code == hard.status_code == 200
    assert easy.headers["x-agentark-route"] == "student" and hard.headers["x-agentark-route"] == "team"
    assert easy.json()["agentark"] == {"route": "student", "answer": "42", "confidence": 1.0}
    assert hard.json()["agentark"]["answer"] == "7" and hard.json()["agentark"]["confidence"] == pytest.approx(1 / 3)
    assert "The answer is 7" in hard.json()["choices"][0]["message"]["content"]
    # Billing: the easy query cost 3 student samples; the hard one 3 samples plus the team's 3 agents
    # (they agree in round 0, so the debate stops there).
    assert easy.json()["usage"]["completion_tokens"] == 3 * 7
    assert hard.json()["usage"]["completion_tokens"] == 3 * 7 + 3 * 7
    assert len(team_engine.conversations) == 3
    # The client's own message opens every agent's conversation: no task prompt around it.
    assert all(c[0]["content"] == "a hard one" for c in team_engine.conversations)
    assert 'agentark_answers_total{path="student"} 1.0' in metrics
    assert 'agentark_answers_total{path="team"} 1.0' in metrics
    assert "agentark_hybrid_fallback_share 0.5" in metrics


def test_team_system_samples_by_default_and_refuses_n_above_one(engines):
    _, team_engine = engines
    seen: list[float] = []

    class Recording(ScriptedEngine):
        def generate(self, conversations, sampling):
            seen.append(sampling.temperature)
            return super().generate(conversations, sampling)

    engine = Recording("team", lambda q, n: 5)
    team = Team(engine, SelfConsistency(k=4), get_task("arithmetic"))
    with running_server(create_app(team, max_batch_wait_ms=0)) as url:
        response = ask(url, "what?", model="team")
        greedy = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "team", "messages": [{"role": "user", "content": "what?"}], "temperature": 0})
        several = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "team", "messages": [{"role": "user", "content": "what?"}], "n": 2})
    assert response.status_code == 200 and response.headers["x-agentark-route"] == "self_consistency"
    assert response.json()["agentark"]["answer"] == "5"
    assert seen == [0.7, 0.0]  # the voting default, then the request's own temperature
    assert greedy.status_code == 200
    assert several.status_code == 400 and "n=1" in several.json()["error"]["message"]


def test_streamed_team_answer_arrives_whole_with_its_route(engines):
    _, team_engine = engines
    team = Team(team_engine, Debate(agents=2, rounds=2), get_task("arithmetic"))
    with running_server(create_app(team, max_batch_wait_ms=0)) as url:
        body = {"model": "team", "messages": [{"role": "user", "content": "q"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
            assert response.headers["x-agentark-route"] == "debate"
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "Reasoning. The answer is 7." and events[-1] == "[DONE]"


def test_threshold_comes_from_a_pilot_decision(tmp_path):
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"outcome": "hybrid", "hybrid": {"threshold": 0.67, "fallback_share": 0.3}}))
    assert threshold_from_decision(decision) == 0.67
    decision.write_text('{"outcome": "hybrid", "hybrid": {"threshold": Infinity}}')
    assert threshold_from_decision(decision) == float("inf")
    decision.write_text(json.dumps({"outcome": "adopt", "hybrid": None}))
    with pytest.raises(ValueError, match="no hybrid.threshold.*adopt.*--threshold"):
        threshold_from_decision(decision)
    with pytest.raises(ValueError, match="missing.json"):
        threshold_from_decision(tmp_path / "missing.json")


def test_hybrid_needs_several_student_samples(engines):
    student, team_engine = engines
    task = get_task("arithmetic")
    with pytest.raises(ValueError, match="k >= 2"):
        Hybrid(student, Team(team_engine, Debate(), task), task, threshold=0.5, k=1)


def test_a_failing_fallback_answers_with_the_student_and_says_so(engines):
    student, _ = engines

    class DownTeam(ScriptedEngine):
        def generate(self, conversations, sampling):
            raise ConnectionError("team server unreachable")

    task = get_task("arithmetic")
    hybrid = Hybrid(student, Team(DownTeam("team", None), Debate(), task), task, threshold=0.9)
    with running_server(create_app(hybrid, max_batch_wait_ms=0)) as url:
        response = ask(url, "a hard one")
    assert response.status_code == 200 and response.headers["x-agentark-route"] == "student"
    assert "team server unreachable" in response.json()["agentark"]["fallback_error"]


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    from agentark.engines.hf import HFEngine

    return HFEngine.from_pretrained(str(tiny_model_dir), batch_size=16)


@pytest.mark.parametrize("system", ["single", "self_consistency", "debate", "hybrid"])
def test_openai_client_against_every_system(tiny_engine, system):
    """The official client, plain and streaming, on a real (tiny, random) model behind each system."""
    from openai import OpenAI

    from agentark.mas import get_system
    from agentark.serve.systems import SingleModel

    task = get_task("arithmetic")
    team = Team(tiny_engine, get_system("self_consistency" if system == "self_consistency" else "debate"), task)
    served = {"single": SingleModel(tiny_engine), "self_consistency": team, "debate": team,
              "hybrid": Hybrid(tiny_engine, team, task, threshold=0.5)}[system]
    with running_server(create_app(served, api_key="k", served_model_name="m", max_batch_wait_ms=5)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "What is 2 + 3?"}]
        plain = client.chat.completions.with_raw_response.create(model="m", messages=messages, max_tokens=6)
        chunks = list(client.chat.completions.create(model="m", messages=messages, max_tokens=6, stream=True,
                                                     stream_options={"include_usage": True}))
    route = plain.headers["x-agentark-route"]
    assert route == system or (system == "hybrid" and route in ("student", "team"))
    completion = plain.parse()
    assert completion.choices[0].message.role == "assistant" and completion.usage.completion_tokens > 0
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert isinstance("".join(c.choices[0].delta.content or "" for c in chunks if c.choices), str)


def test_two_hundred_requests_fifty_in_flight_all_complete(tiny_engine):
    import asyncio

    from agentark.serve.loadtest import run_load

    with running_server(create_app(tiny_engine, served_model_name="m", max_batch_wait_ms=5)) as url:
        result = asyncio.run(
            run_load(
                f"{url}/v1",
                "m",
                [[{"role": "user", "content": f"Count to {i}."}] for i in range(20)],
                n=200,
                concurrency=64,
                max_tokens=4,
                timeout_s=120,
            )
        )
        metrics = httpx.get(f"{url}/metrics").text
    assert result.sent == result.ok == 200 and result.errors == 0
    assert 0 < result.completion_tokens <= 200 * 4
    assert 'agentark_requests_total{route="/v1/chat/completions",status="200"} 200.0' in metrics
    assert 'agentark_answers_total{path="single"} 200.0' in metrics
