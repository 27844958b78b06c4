"""lm-eval's own CLI against agentark serve: its per-item GSM8K scores are the ones we report beside ours.

The served model answers from a script (texts in the forms small models write: GSM8K's ``#### N``,
``\\boxed{N}``, "The answer is $N.", a thousands comma, no answer), so both of lm-eval's filters meet
every case; lm-eval itself (its CLI, task config, filters and metric) runs for real, offline.
"""

from __future__ import annotations

import json

from agentark.engines.base import Completion
from agentark.evaluate.lmeval import lm_eval_correct, run_lm_eval
from agentark.serve import create_app
from agentark.tasks import get_task

from server_utils import running_server

REPLIES = {  # question -> what the model says; gold answers are 18 (item i: 18 + i)
    "q0": "She has 9 + 9 = 18.\n#### 18",
    "q1": "Total: \\boxed{19}",
    "q2": "The answer is $20.",
    "q3": "So 1,000 apples... wait, 21 in total. The answer is 21",
    "q4": "I do not know.",
    "q5": "#### 99",
}


class ScriptedModel:
    model_id = "m"

    def generate(self, conversations, sampling):
        def reply(conversation):
            text = conversation[-1]["content"]
            return next(v for k, v in REPLIES.items() if f"Question: {k}" in text)

        return [Completion(reply(c), 10, 5, 0.0) for c in conversations]


def test_lm_eval_scores_equal_ours_item_by_item(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": f"work\n#### {18 + i}"}) + "\n"
                            for i, q in enumerate(REPLIES)))
    task = get_task("gsm8k", path=data, held_out=len(REPLIES))
    items = task.items("held-out")
    with running_server(create_app(ScriptedModel(), max_batch_wait_ms=0)) as base:
        docs = run_lm_eval(f"{base}/v1/chat/completions", "m", items, tmp_path / "out", max_gen_toks=32)
    assert [d.text for d in docs] == list(REPLIES.values())
    ours = lm_eval_correct([d.text for d in docs], [d.gold for d in docs])
    for name in ("strict-match", "flexible-extract"):
        assert ours[name] == [d.correct[name] for d in docs], name
    assert ours["strict-match"] == [True, False, False, False, False, False]
    assert ours["flexible-extract"] == [True, True, True, True, False, False]
    grader = [
        task.grade(task.normalize(task.extract(d.text).flexible), i.answer) for d, i in zip(docs, items, strict=True)
    ]
    assert grader == [True, True, True, True, False, False]
