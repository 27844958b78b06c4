"""Dense per-step credit (PURE min-form) on hand-made step scores: weights, placement, terminal reward."""

from __future__ import annotations

import math

import pytest

from agentark.distill.credit import (
    group_advantages,
    min_form_weights,
    step_returns,
    step_spans,
    token_returns,
    token_steps,
)
from agentark.distill.grpo import ScoredBatch, dense_token_advantages
from agentark.models.loading import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_min_form_weights_are_a_softmax_of_minus_scores_over_T():
    w = min_form_weights([0.9, 0.2, 0.5], temperature=0.1)
    z = [math.exp(-s / 0.1) for s in (0.9, 0.2, 0.5)]
    assert w == pytest.approx([x / sum(z) for x in z])
    assert max(range(3), key=w.__getitem__) == 1  # the worst step dominates
    # T -> 0: the return of the first step tends to the hard minimum (the scalar "min" aggregation).
    assert step_returns([0.9, 0.2, 0.5], temperature=1e-3)[0] == pytest.approx(0.2, abs=1e-6)
    assert min_form_weights([0.5, math.nan], 0.1) == [1.0, 0.0]
    with pytest.raises(ValueError):
        min_form_weights([0.5], 0.0)


def test_step_returns_are_the_weighted_sum_from_each_step_on():
    scores, T = [0.8, 0.3, 0.6], 0.5
    w = min_form_weights(scores, T)
    expected = [sum(w[j] * scores[j] for j in range(k, 3)) for k in range(3)]
    assert step_returns(scores, T) == pytest.approx(expected)
    assert step_returns([0.8, math.nan], T)[1] == 0.0  # an unscored step adds nothing


def test_tokens_are_placed_on_their_steps():
    text = "First 2 + 2 = 4.\n\nThen 4 * 3 = 12.\n\nThe answer is \\boxed{12}."
    steps = ["First 2 + 2 = 4.", "Then 4 * 3 = 12.", "The answer is \\boxed{12}."]
    spans = step_spans(text, steps)
    assert [text[a:b] for a, b in spans] == steps
    # "tokens" cut at these character ends: step 1 | "\n\n" + step 2 | "\n\n" + step 3 | end-of-turn
    ends = [6, 16, 18, 34, 36, len(text), len(text)]
    assert token_steps(ends, spans) == [0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="not in the text"):
        step_spans(text, ["Then 4 * 3 = 12.", "First 2 + 2 = 4."])  # out of order


def test_token_returns_add_the_verifiable_reward_to_every_token():
    scores, T = [0.9, 0.1], 0.1
    g = step_returns(scores, T)
    assert token_returns(scores, [0, 0, 1], outcome=1.0, temperature=T, outcome_coef=2.0) == pytest.approx(
        [g[0] + 2.0, g[0] + 2.0, g[1] + 2.0])
    assert token_returns([], [0, 0], outcome=1.0, temperature=T) == [1.0, 1.0]  # no step scored: outcome alone


def test_group_advantages_normalise_by_the_whole_solution_return():
    returns = [[1.0, 0.5], [0.0, 0.0, 0.0], [3.0], [3.0]]
    adv = group_advantages(returns, group_size=2)
    mean, std = 0.5, math.sqrt(0.5)  # whole returns 1.0 and 0.0, unbiased std
    assert adv[0] == pytest.approx([(1.0 - mean) / (std + 1e-4), (0.5 - mean) / (std + 1e-4)])
    assert adv[1] == pytest.approx([-mean / (std + 1e-4)] * 3)
    assert adv[2] == adv[3] == [0.0]  # equal returns: no signal
    with pytest.raises(ValueError, match="groups of 2"):
        group_advantages(returns[:3], group_size=2)


def test_dense_advantages_of_real_token_ids(tokenizer):
    """Real tokenizer: the later step of a solution whose second step is bad gets less credit."""
    good, bad = "4 * 2 = 8.\n\n3 + 8 = 11.", "4 * 2 = 8.\n\n3 + 8 = 12."
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (good, bad)]
    batch = ScoredBatch([good, bad], [[0.9, 0.9], [0.9, 0.1]], [1.0, 0.0])
    adv, unplaced = dense_token_advantages(tokenizer, ids, batch, "blank_line", 2, 0.1, 1.0)
    assert unplaced == 0 and [len(a) for a in adv] == [len(i) for i in ids]
    assert all(a > 0 for a in adv[0]) and all(a < 0 for a in adv[1])
    assert len(set(adv[1])) == 2 and adv[1][-1] < adv[1][0]  # two steps, two credits; the bad one lower
