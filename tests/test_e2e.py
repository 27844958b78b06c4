"""End to end on real pretrained weights: debate on arithmetic with smollm2-135m-instruct."""

from __future__ import annotations

import pytest

from agentark.evaluate.metrics import summarize_debate
from agentark.pipeline import GenerateConfig, generate
from agentark.tasks import get_task
from agentark.traces import read_traces


@pytest.mark.slow
def test_debate_on_four_arithmetic_questions_with_smollm2(tmp_path):
    cfg = GenerateConfig(model="smollm2-135m-instruct", task="arithmetic", system="debate", agents=3, rounds=2,
                         n=4, max_new_tokens=96, out=str(tmp_path / "run"))
    generate(cfg)
    traces = list(read_traces(tmp_path / "run"))
    assert sorted(t.item_id for t in traces) == sorted(i.id for i in get_task("arithmetic").items("train", 4))
    for trace in traces:
        assert len(trace.round_turns(0)) == 3
        assert all(turn.text.strip() and turn.completion_tokens > 0 for turn in trace.turns)
    # SmolLM2 cannot do arithmetic, but it follows the answer format often enough to be read.
    assert any(turn.answer is not None for t in traces for turn in t.turns)
    summary = summarize_debate(traces)
    assert summary  # rendered by `agentark summarize`
