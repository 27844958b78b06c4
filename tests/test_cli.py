"""The command line end to end on the tiny model: generate -> summarize -> distill -> evaluate."""

from __future__ import annotations

import json
import re

import typer
from typer.testing import CliRunner

from agentark.cli import app
from agentark.engines.base import Completion
from agentark.pipeline import GenerateConfig, generate
from agentark.tasks.arithmetic import evaluate_expression

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_generate_distill_evaluate(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir)
    run = tmp_path / "run"
    _ok(["generate", "--model", model, "--engine", "hf", "--n", "3", "--agents", "2", "--rounds", "2",
         "--max-new-tokens", "8", "--out", str(run)])
    assert "consensus_rate" in _ok(["summarize", str(run)])

    student = tmp_path / "student"
    args = ["distill", "--strategy", "sft", "--traces", str(run), "--model", model, "--out", str(student),
            "--max-steps", "1", "--option", "per_device_train_batch_size=2"]
    _ok(args)
    manifest = json.loads((student / "manifest.json").read_text())
    assert manifest["strategy"] == "sft" and manifest["base_model"] == model
    weights = student / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    _ok(args)  # same inputs: nothing retrained, the weights file is untouched
    assert weights.stat().st_mtime_ns == stamp

    out = _ok(["evaluate", "--model", str(student), "--n", "3", "--max-new-tokens", "8",
               "--out", str(tmp_path / "eval")])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    # The student and its base model (from the manifest) ran on the same three held-out items.
    assert set(results["metrics"]) == {"student", tiny_model_dir.name}
    assert all(m["n"] == 3 for m in results["metrics"].values())
    assert results["metrics"]["student"]["item_ids"] == results["metrics"][tiny_model_dir.name]["item_ids"]
    assert "student" in results["vs_base"] and "accuracy" in out


def test_bad_inputs_fail_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["distill", "--strategy", "nope", "--traces", str(tmp_path), "--model", "x/y"])
    assert result.exit_code == 2 and "strategy" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\nnot json\n')
    result = runner.invoke(app, ["generate", "--task", "gsm8k", "--data", str(bad), "--n", "1",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and f"{bad}:2" in result.output


class HalfRightEngine:
    """Plays a team where even-numbered answers are right and odd ones wrong, so step labels vary.

    A random tiny model is never right, and PAD needs some verified-correct debate to learn from.
    """

    model_id = "half-right"

    def generate(self, conversations, sampling):
        out = []
        for i, conv in enumerate(conversations):
            expr = conv[0]["content"].split("result of ")[1].split("?")[0]
            operands = [int(x) for x in re.findall(r"\d+", expr)]
            operators = re.findall(r"[-+*]", expr)
            answer = evaluate_expression(operands, operators) + (i % 2)
            text = f"First the products.\n\n{expr} = {answer}\n\nThe answer is \\boxed{{{answer}}}."
            out.append(Completion(text, 20, 20, 0.1))
        return out


def test_distill_pad_through_the_cli(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir)
    run = tmp_path / "run"
    generate(GenerateConfig(model=model, n=4, agents=2, rounds=1, out=str(run)), engine=HalfRightEngine())
    student = tmp_path / "pad"
    _ok(["distill", "--strategy", "pad", "--traces", str(run), "--model", model, "--out", str(student),
         "--max-steps", "1", "--option", "num_generations=2", "--option", "prompts_per_step=1",
         "--option", "max_completion_length=8"])
    manifest = json.loads((student / "manifest.json").read_text())
    assert (student / "model.safetensors").exists() and (student / "prm" / "manifest.json").exists()
    assert "reward" in json.dumps(manifest)


def test_distill_yaml_is_overridden_only_by_flags_given(tmp_path, monkeypatch):
    """`--config` values survive unless a flag is actually passed (a flag's default never wins)."""
    import agentark.distill.sft as sft
    from agentark.traces import TraceStore

    from trace_factory import GOLD, make_trace

    TraceStore(tmp_path).append([make_trace("q1", [[GOLD, GOLD]])])
    seen = []
    monkeypatch.setattr(sft, "train_sft", lambda cfg, hooks=None: seen.append(cfg) or tmp_path)
    monkeypatch.setattr("agentark.pipeline.distillation.read_manifest", lambda path: {"fingerprint": "f"})
    cfg = tmp_path / "d.yaml"
    cfg.write_text("seed: 7\nuse_lora: false\nforce: true\nlearning_rate: 0.001\nmax_steps: 9\n")
    base = ["distill", "--strategy", "sft", "--traces", str(tmp_path), "--config", str(cfg)]
    _ok(base)
    assert (seen[-1].seed, seen[-1].use_lora, seen[-1].force, seen[-1].learning_rate, seen[-1].max_steps) == (
        7, False, True, 0.001, 9)
    _ok([*base, "--seed", "3", "--lora", "--no-force", "--max-steps", "2"])
    assert (seen[-1].seed, seen[-1].use_lora, seen[-1].force, seen[-1].learning_rate, seen[-1].max_steps) == (
        3, True, False, 0.001, 2)
    # A bad value, flag or YAML, is one line naming where it came from.
    result = runner.invoke(app, [*base, "--max-steps", "x"])
    assert result.exit_code == 2
    cfg.write_text("seed: 7\nnum_train_epochs: -1\n")
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "num_train_epochs must be > 0" in result.output
    assert "For further information" not in result.output


def test_generate_and_evaluate_yaml_is_overridden_only_by_flags_given(tmp_path, monkeypatch):
    """Every command reads its settings one way: defaults, the YAML, then only the flags given."""
    import agentark.pipeline.generation as generation
    from agentark.pipeline import StageRecord

    seen = []
    monkeypatch.setattr(generation, "generate", lambda cfg, **kw: seen.append(cfg)
                        or StageRecord("generate", "f", {"questions": 0}, cached=True))
    cfg = tmp_path / "g.yaml"
    cfg.write_text("n: 7\ntemperature: 0.2\nagents: 4\n")
    monkeypatch.setattr("agentark.cli._print_summary", lambda run: None)
    _ok(["generate", "--config", str(cfg)])
    assert (seen[-1].n, seen[-1].sampling.temperature, seen[-1].agents, seen[-1].rounds) == (7, 0.2, 4, 2)
    _ok(["generate", "--config", str(cfg), "--temperature", "0.5", "--rounds", "3"])
    assert (seen[-1].n, seen[-1].sampling.temperature, seen[-1].agents, seen[-1].rounds) == (7, 0.5, 4, 3)
    result = runner.invoke(app, ["generate", "--config", str(cfg), "--temperature", "-1"])
    assert result.exit_code == 2 and "--temperature must be >= 0" in result.output

    import agentark.pipeline.evaluation as evaluation

    seen_eval = []
    monkeypatch.setattr(evaluation, "evaluate_models", lambda cfg, **kw: seen_eval.append(cfg) or [])
    cfg.write_text("models: [a, b]\nn: 5\nmax_new_tokens: 9\n")
    runner.invoke(app, ["evaluate", "--config", str(cfg), "--n", "3"])
    assert seen_eval[-1].models == ["a", "b"] and seen_eval[-1].n == 3
    assert seen_eval[-1].sampling.max_new_tokens == 9 and seen_eval[-1].sampling.temperature == 0.0



def test_serve_and_loadtest_validate_their_settings_like_every_command(tmp_path):
    runner = CliRunner()
    port = runner.invoke(app, ["serve", "--port", "99999"])
    assert port.exit_code == 2 and "--port must be <= 65535" in port.output and "Traceback" not in port.output
    config = tmp_path / "serve.yaml"
    config.write_text("system: hybrid\nport: 8001\n")
    hybrid = runner.invoke(app, ["serve", "--config", str(config)])
    assert hybrid.exit_code == 2 and "exactly one of threshold and decision" in hybrid.output
    config.write_text("url: http://127.0.0.1:1/v1\nmodel: m\nn: 0\n")
    load = runner.invoke(app, ["loadtest", "--config", str(config)])
    assert load.exit_code == 2 and "serve.yaml" in load.output and "n must be >= 1" in load.output


def test_options_are_documented_by_their_config_fields():
    """An option's help and default come from its config field (written once, there), not from cli.py."""
    from agentark.config import SamplingConfig
    from agentark.pipeline.evaluation import EvaluateConfig
    from agentark.serve.settings import LoadtestConfig, ServeConfig

    commands = typer.main.get_command(app).commands
    for name, config in (("generate", GenerateConfig), ("evaluate", EvaluateConfig), ("serve", ServeConfig),
                         ("loadtest", LoadtestConfig)):
        command = commands[name]
        command.get_help(typer.Context(command))  # fills the help texts in from the config
        assert all(p.help for p in command.params), [p.name for p in command.params if not p.help]
        assert config.model_fields["task"].description in next(p.help for p in command.params if p.name == "task")
    wide = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    generate_help = " ".join(wide.invoke(app, ["generate", "--help"]).output.split())
    assert f"{SamplingConfig.model_fields['max_new_tokens'].description} [default: 256]" in generate_help
    assert "[default: 50]" in generate_help and "[default: no]" in generate_help  # --n, --summarizer
    evaluate_help = " ".join(wide.invoke(app, ["evaluate", "--help"]).output.split())
    assert "(0 = greedy). [default: 0.0]" in evaluate_help and "[default: runs/eval]" in evaluate_help
    assert "[default: 8000]" in " ".join(wide.invoke(app, ["serve", "--help"]).output.split())
