"""PAD: PRM tokenisation/scoring/training on the tiny model, the GRPO reward, and 2 GRPO steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_steps import DEBATE, PROMPT, RIGHT, WRONG_AT_2

from agentark.distill.grpo import PADConfig, aggregate, make_reward_function, train_pad
from agentark.distill.prm import (
    IGNORE_INDEX,
    PRMConfig,
    PRMScorer,
    auroc,
    encode_steps,
    info_nce,
    split_by_item,
    train_prm,
)
from agentark.distill.steps import build_step_dataset, segment_steps
from agentark.distill.training import read_manifest
from agentark.models.loading import load_tokenizer

TRACES = [DEBATE.model_copy(update={"item_id": f"q{i}"}) for i in range(5)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def arithmetic():
    from agentark.tasks import get_task

    return get_task("arithmetic")


# --- pure parts ---------------------------------------------------------------------------------------


def test_encode_steps_labels_the_separator_ending_each_step(tokenizer):
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert len(sep) == 1
    enc = encode_steps(tokenizer, "Q?", ["a = 1", "b = 2"], max_length=512)
    assert [enc.input_ids[e] for e in enc.step_ends] == sep * 2
    assert enc.step_ends[-1] == len(enc.input_ids) - 1
    assert tokenizer.decode(enc.input_ids) == "Q?\na = 1\nb = 2\n"
    labels = enc.labels([True, False])
    assert [labels[e] for e in enc.step_ends] == [1, 0]
    assert sum(x != IGNORE_INDEX for x in labels) == 2


def test_encode_steps_cuts_the_prompt_first_then_late_steps(tokenizer):
    steps = ["x = 1", "y = 22"]
    n1, n2 = (len(tokenizer(s + "\n", add_special_tokens=False)["input_ids"]) for s in steps)
    no_prompt = encode_steps(tokenizer, "a long question " * 5, steps, max_length=n1 + n2)
    assert no_prompt.step_ends == [n1 - 1, n1 + n2 - 1]
    one_step = encode_steps(tokenizer, "a long question " * 5, steps, max_length=n1 + 1)
    assert one_step.step_ends == [n1 - 1, None] and len(one_step.input_ids) == n1 + 1
    assert one_step.labels([True, False]).count(1) == 1 and one_step.labels([True, False]).count(0) == 0


def test_auroc_rank_formula():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.2, 0.3], [True, True]) is None


def test_info_nce_uses_only_other_solutions_negatives():
    scores = torch.tensor([2.0, 0.0, 1.0])
    labels = torch.tensor([1, 0, 0])
    groups = torch.zeros(3, dtype=torch.long)
    loss = info_nce(scores, labels, groups, torch.tensor([0, 1, 1]), tau=1.0)
    assert loss.item() == pytest.approx(math.log(math.e**2 + 1 + math.e) - 2)
    same_row = info_nce(scores, labels, groups, torch.tensor([0, 0, 1]), tau=1.0)
    assert same_row.item() == pytest.approx(math.log(math.e**2 + math.e) - 2)
    other_question = info_nce(scores, labels, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), tau=1.0)
    assert other_question.item() == 0.0


def test_split_by_item_is_seeded_and_disjoint():
    rows = build_step_dataset(TRACES)
    train, held = split_by_item(rows, 0.2, seed=0)
    assert len({r["item_id"] for r in held}) == 1
    assert not {r["item_id"] for r in train} & {r["item_id"] for r in held}
    assert split_by_item(rows, 0.2, seed=0) == (train, held)


def test_aggregate_ignores_unscored_steps():
    assert aggregate([0.9, 0.2, 0.6], "min") == 0.2
    assert aggregate([0.9, 0.2, 0.7], "mean") == pytest.approx(0.6)
    assert aggregate([0.9, math.nan, 0.6], "last") == 0.6
    assert aggregate([], "min") == 0.0
    with pytest.raises(ValueError):
        aggregate([0.5], "max")


class FixedScorer:
    """Test double for the PRM's numbers: fixed step scores per completion, records its inputs."""

    def __init__(self, scores: list[list[float]]):
        self.scores = scores
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return self.scores


def test_reward_is_prm_aggregate_plus_weighted_correctness(arithmetic):
    scorer = FixedScorer([[0.9, 0.4], [0.8, 0.3, 0.6], [0.5]])
    reward = make_reward_function(scorer, arithmetic, aggregation="min", correctness_coef=2.0)
    logged: dict[str, float] = {}
    completions = [[{"role": "assistant", "content": c}] for c in (RIGHT, WRONG_AT_2, "no idea")]
    out = reward(prompts=[PROMPT] * 3, completions=completions, gold=["72"] * 3,
                 log_metric=logged.__setitem__, trainer_state=None)
    assert out == pytest.approx([0.4 + 2.0, 0.3, 0.5])
    assert scorer.calls == [([PROMPT[0]["content"]] * 3, [RIGHT, WRONG_AT_2, "no idea"])]
    assert logged == pytest.approx({"pad/prm": 1.2 / 3, "pad/correct": 1 / 3})
    mean = make_reward_function(FixedScorer([[0.9, 0.4]]), arithmetic, "mean", 1.0)
    assert mean(prompts=["plain prompt"], completions=[RIGHT], gold=["72"]) == pytest.approx([0.65 + 1.0])


def test_pad_config_defaults_the_prm_to_the_student(tmp_path):
    config = PADConfig(model="student", out=str(tmp_path), prm={"epochs": 3}, seed=7)
    prm = config.prm
    assert (prm.model, prm.out, prm.epochs, prm.seed) == ("student", str(tmp_path / "prm"), 3, 7)
    assert PADConfig(model="student", prm={"model": "other"}).prm.model == "other"


# --- on the tiny model ------------------------------------------------------------------------------------


def test_real_scorer_gives_one_probability_per_segmented_step(tiny_model_dir, tokenizer):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
    scorer = PRMScorer(model, tokenizer, step_mode="auto", batch_size=2)
    completions = [RIGHT, WRONG_AT_2, "One sentence. Two sentences.", ""]
    scores = scorer.score(["Q?"] * 4, completions)
    assert [len(s) for s in scores] == [len(segment_steps(c)) for c in completions] == [3, 4, 2, 0]
    assert all(0.0 < p < 1.0 for s in scores for p in s)
    # Batching and order do not change a solution's scores.
    assert scorer.score(["Q?"], [WRONG_AT_2])[0] == pytest.approx(scores[1], abs=1e-5)


def prm_config(root: Path, model_dir: Path) -> PRMConfig:
    return PRMConfig(model=str(model_dir), out=str(root / "pad" / "prm"), stage1_epochs=1, epochs=1, max_steps=2,
                     batch_size=2, max_length=128, learning_rate=5e-3, stage1_learning_rate=5e-3, use_lora=True,
                     contrastive=True)


@pytest.fixture(scope="module")
def trained_prm(tmp_path_factory, tiny_model_dir) -> tuple[PRMConfig, Path]:
    config = prm_config(tmp_path_factory.mktemp("prm"), tiny_model_dir)
    return config, train_prm(config, TRACES)


def test_train_prm_saves_a_scorer_with_held_out_metrics(trained_prm, tiny_model_dir, tokenizer):
    from transformers import AutoModelForTokenClassification

    config, out = trained_prm
    manifest = read_manifest(out)
    held = manifest["held_out"]
    assert 0.0 <= held["auroc"] <= 1.0 and 0.0 <= held["accuracy"] <= 1.0 and held["n_steps"] > 0
    assert {e["stage"] for e in manifest["log_history"]} == {"stage1", "stage2"}
    assert manifest["step_mode"] == "auto" and (out / "model.safetensors").exists()

    # Same head initialisation as train_prm, untrained: training changed the scores.
    torch.manual_seed(config.seed)
    untrained = PRMScorer(AutoModelForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=2), tokenizer)
    trained = PRMScorer(out)
    assert trained.step_mode == "auto" and trained.max_length == 128
    before, after = untrained.score(["Q?"], [WRONG_AT_2])[0], trained.score(["Q?"], [WRONG_AT_2])[0]
    assert len(before) == len(after) == 4
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) > 1e-3

    # Unchanged config and traces: a no-op.
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert train_prm(config, TRACES) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_grpo_two_steps_saves_a_loadable_student(trained_prm, arithmetic, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    prm, _ = trained_prm
    out = Path(prm.out).parent
    config = PADConfig(model=str(tiny_model_dir), out=str(out), prm=prm.model_dump(exclude={"out"}),
                       num_generations=2, prompts_per_step=1, max_completion_length=12, max_steps=2,
                       max_prompt_length=256, learning_rate=1e-3)
    assert config.prm == prm  # reuses the cached PRM
    assert train_pad(config, TRACES[:2], task=arithmetic) == out
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.vocab_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["strategy"] == "pad" and manifest["n_questions"] == 2
    assert manifest["reward"]["n_logged"] == 2 and manifest["reward"]["first"] is not None
    assert manifest["prm"]["held_out"]["auroc"] is not None


def test_grpo_with_dense_credit_trains_on_per_token_advantages(trained_prm, arithmetic, tiny_model_dir, tmp_path,
                                                               monkeypatch):
    import agentark.distill.grpo as grpo

    seen: list = []
    real = grpo.dense_token_advantages

    def spy(*args, **kwargs):
        seen.append(out := real(*args, **kwargs))
        return out

    monkeypatch.setattr(grpo, "dense_token_advantages", spy)
    prm, _ = trained_prm
    config = PADConfig(model=str(tiny_model_dir), out=str(tmp_path / "dense"), prm=prm.model_dump(),
                       num_generations=2, prompts_per_step=1, max_completion_length=12, max_steps=2,
                       max_prompt_length=256, learning_rate=1e-3, credit="dense", min_form_temperature=0.5)
    assert train_pad(config, TRACES[:2], task=arithmetic) == tmp_path / "dense"
    assert len(seen) == 2  # one generation batch per step
    advantages, _ = seen[0]
    assert len(advantages) == 2 and all(len(a) >= 1 for a in advantages)
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert manifest["config"]["credit"] == "dense" and manifest["reward"]["n_logged"] == 2
