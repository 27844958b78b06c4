"""Prompt-cache reuse: the llamacpp engine's slot affinity, the accounting in traces, the summary.

The engines' own reuse is tested with them (tests/test_llamacpp_engine.py, tests/test_hf_engine.py);
here the slot scheduler runs on fake requests, so its choices are checked exactly and instantly.
"""

from __future__ import annotations

import gzip
import threading
from functools import partial
from pathlib import Path

import pytest

from agentark.engines.base import Completion, SamplingParams
from agentark.engines.llamacpp import SlotScheduler, conversation_key
from agentark.evaluate.metrics import summarize_debate
from agentark.mas import RunContext, get_system
from agentark.tasks import get_task
from agentark.traces.schema import QuestionTrace

REPO = Path(__file__).resolve().parents[1]


def test_a_continuation_goes_to_the_slot_that_served_its_conversation():
    served: list[tuple[int, str]] = []
    both = threading.Barrier(2)  # the two requests of a batch run at once, one per slot

    def answer(text: str, slot: int) -> Completion:
        both.wait(timeout=10)
        served.append((slot, text))
        return Completion(text, 1, 1, 0.0)

    scheduler = SlotScheduler(2)
    first = [[{"role": "user", "content": q}] for q in ("alpha?", "beta?")]
    for future in scheduler.submit(
        [(conversation_key(c), partial(answer, t)) for c, t in zip(first, "AB", strict=True)]
    ):
        future.result(timeout=10)
    slot_of = {text: slot for slot, text in served}
    # The next turns arrive in the opposite order: each still goes to its own slot.
    later = [
        c + [{"role": "assistant", "content": t}, {"role": "user", "content": "sure?"}]
        for c, t in zip(first, "AB", strict=True)
    ]
    futures = scheduler.submit(
        [(conversation_key(c), partial(answer, t + "2")) for c, t in reversed(list(zip(later, "AB", strict=True)))]
    )
    for future in futures:
        future.result(timeout=10)
    scheduler.close()
    assert {text: slot for slot, text in served[2:]} == {"A2": slot_of["A"], "B2": slot_of["B"]}


def test_the_oldest_request_is_passed_over_at_most_lookahead_times():
    order: list[str] = []
    scheduler = SlotScheduler(1, lookahead=2)
    release = threading.Event()
    scheduler.submit([("x", lambda slot: release.wait(10) and Completion("y", 1, 1, 0.0))])  # the slot holds "x", "y"
    held = SlotScheduler.held_after("x", Completion("y", 1, 1, 0.0))
    jobs = [("other", "other"), ("match-1", held + "1"), ("match-2", held + "2"), ("match-3", held + "3")]
    futures = scheduler.submit([(key, lambda slot, n=name: order.append(n) or Completion("", 1, 1, 0.0))
                                for name, key in jobs])
    release.set()
    for future in futures:
        future.result(timeout=10)
    scheduler.close()
    assert order == ["match-1", "other", "match-2", "match-3"]  # "other" waits for one better match, not three


def test_a_failed_request_reaches_its_caller_and_the_slot_goes_on():
    scheduler = SlotScheduler(1)

    def fail(slot: int) -> Completion:
        raise ValueError("refused")

    failed, served = scheduler.submit([("a", fail), ("b", lambda slot: Completion("ok", 1, 1, 0.0))])
    with pytest.raises(ValueError, match="refused"):
        failed.result(timeout=10)
    assert served.result(timeout=10).text == "ok"
    scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit([("c", fail)])


class CachingScript:
    """Plays a model whose prompt cache served half of every prompt after round 0."""

    model_id = "scripted"

    def __init__(self):
        self.round = 0

    def generate(self, conversations, sampling):
        cached = 0 if self.round == 0 else 50
        self.round += 1
        return [Completion(f"answer {i}", 100, 5, 0.1, cached_prompt_tokens=cached) for i in range(len(conversations))]


def test_turns_record_cached_tokens_and_the_summary_reports_the_share_per_round():
    task = get_task("arithmetic")
    traces = get_system("debate", agents=3, rounds=3, early_stop=False).run(
        RunContext(task, CachingScript(), SamplingParams()), task.items("train", 2))
    assert [t.cached_prompt_tokens for t in traces[0].turns] == [0] * 3 + [50] * 6
    assert traces[0].cached_prompt_tokens == 300
    per_round = summarize_debate(traces)["per_round"]
    assert [per_round[f"round_{r}"]["prompt_cached_share"] for r in range(3)] == [0.0, 0.5, 0.5]


def test_traces_written_before_the_cache_was_counted_still_load():
    files = sorted(REPO.glob("results/*/kept/**/traces.jsonl.gz"))
    if not files:
        pytest.skip("no kept traces in results/")
    with gzip.open(files[0], "rt") as f:
        trace = QuestionTrace.model_validate_json(f.readline())
    assert trace.turns and all(t.cached_prompt_tokens == 0 for t in trace.turns)
    assert summarize_debate([trace])["per_round"]["round_0"]["prompt_cached_share"] == 0.0
