"""Benchmark: the same debate through a one-prompt-at-a-time loop and through the batched engine.

    python bench/generation.py                      # smollm2-135m-instruct pack, CPU
    python bench/generation.py --random-init --device cuda --questions 64   # GPU, same config, random weights

Both arms run identical work: the same questions, agents and rounds, every completion forced to
exactly ``--max-new-tokens`` tokens (EOS ignored) and no early stop, so tokens/s compare fairly.
Prints tokens/s of each arm and the ratio (target on CPU: >= 10x).
"""

from __future__ import annotations

import argparse
import time

from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.engines.hf import HFEngine
from agentark.mas import RunContext, get_system
from agentark.models import load_model, load_tokenizer
from agentark.tasks import get_task


class OnePromptAtATime:
    """The naive baseline: the same engine, called with one conversation per generate call."""

    def __init__(self, engine: HFEngine):
        self.engine = engine
        self.model_id = engine.model_id

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        return [self.engine.generate([c], sampling)[0] for c in conversations]


def run_arm(engine, task, items, args) -> tuple[int, float]:
    system = get_system("debate", agents=args.agents, rounds=args.rounds, early_stop=False)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, ignore_eos=True)
    start = time.perf_counter()
    traces = system.run(RunContext(task=task, engine=engine, sampling=sampling), items)
    wall = time.perf_counter() - start
    return sum(t.completion_tokens for t in traces), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random-init", action="store_true", help="Random weights of the model's config (speed only).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--skip-naive", action="store_true", help="Only time the batched arm.")
    args = parser.parse_args()

    import torch

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.random_init:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype).to(model.device).eval()
    engine = HFEngine(model, tokenizer, model_id=args.model, batch_size=args.batch_size)
    task = get_task("arithmetic")
    items = task.items("train", args.questions)
    print(f"model={args.model} random_init={args.random_init} device={model.device} dtype={model.dtype} "
          f"torch_threads={torch.get_num_threads()}")
    print(f"work: {args.questions} questions x {args.agents} agents x {args.rounds} rounds, "
          f"{args.max_new_tokens} new tokens each, batch_size={args.batch_size}")
    run_arm(engine, task, items[:1], argparse.Namespace(**{**vars(args), "max_new_tokens": 4}))  # warm-up

    tokens_b, wall_b = run_arm(engine, task, items, args)
    print(f"batched : {tokens_b} tokens in {wall_b:.1f} s = {tokens_b / wall_b:.1f} tok/s")
    if args.skip_naive:
        return
    tokens_n, wall_n = run_arm(OnePromptAtATime(engine), task, items, args)
    print(f"naive   : {tokens_n} tokens in {wall_n:.1f} s = {tokens_n / wall_n:.1f} tok/s")
    print(f"speed-up (batched / naive tokens/s): {(tokens_b / wall_b) / (tokens_n / wall_n):.1f}x")


if __name__ == "__main__":
    main()
