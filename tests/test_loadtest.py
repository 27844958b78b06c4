"""The load generator against a real server whose engine has a known delay."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentark.engines.base import Completion
from agentark.serve import create_app
from agentark.serve.loadtest import run_load

from server_utils import running_server

DELAY_S = 0.2
QUESTIONS = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(4)]


class SlowEngine:
    """Answers after a fixed delay per engine call: every latency is known in advance."""

    model_id = "slow"

    def generate(self, conversations, sampling):
        time.sleep(DELAY_S)
        return [Completion("The answer is 2.", 5, 3, DELAY_S) for _ in conversations]


@pytest.fixture(scope="module")
def url():
    with running_server(create_app(SlowEngine(), max_batch_wait_ms=0)) as base:
        yield f"{base}/v1"


def test_closed_loop_percentiles_match_the_injected_delay(url):
    result = asyncio.run(run_load(url, "slow", QUESTIONS, n=6, concurrency=1))
    assert result.sent == result.ok == 6 and result.errors == 0
    assert DELAY_S <= result.latency_p50_s < DELAY_S + 0.15 and result.latency_p99_s < DELAY_S + 0.3
    assert result.completion_tokens == 18 and 6 / (6 * DELAY_S + 1.5) < result.throughput_rps <= 1 / DELAY_S


def test_open_loop_queues_behind_a_busy_engine_and_errors_are_counted(url):
    # 10 arrivals at ~50/s on an engine that needs 0.2 s per call: later requests wait in the queue.
    result = asyncio.run(run_load(url, "slow", QUESTIONS, n=10, rate=50.0, seed=1))
    assert result.sent == result.ok == 10 and result.latency_p95_s > result.latency_p50_s >= DELAY_S
    wrong = asyncio.run(run_load(url, "not-served", QUESTIONS, n=3, concurrency=3))
    assert wrong.sent == 3 and wrong.errors == 3 and wrong.error_rate == 1.0 and wrong.latency_p50_s is None
    with pytest.raises(ValueError, match="exactly one"):
        asyncio.run(run_load(url, "slow", QUESTIONS, n=1, concurrency=1, rate=1.0))


def test_loadtest_command_writes_its_result(url, tmp_path):
    import json

    from typer.testing import CliRunner

    from agentark.cli import app

    out = tmp_path / "load.json"
    result = CliRunner().invoke(app, ["loadtest", "--url", url, "--model", "slow", "--n", "3", "--concurrency", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3/3 ok" in result.output and json.loads(out.read_text())["ok"] == 3
    bad = CliRunner().invoke(app, ["loadtest", "--url", url, "--model", "slow", "--n", "1"])
    assert bad.exit_code == 2 and "exactly one" in bad.output
