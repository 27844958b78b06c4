"""Seconds per LoRA training step on this CPU: fp32 against bf16 autocast (what ``TrainingArguments(bf16=True)``
does on CPU), same model, same batch, same seed.

    python bench/training_dtype.py --model qwen2.5-coder-0.5b-instruct --batch 4 --seq 768 --steps 3

Prints the CPU first (the answer differs ~2.5x between an AVX2-only AMD and an AMX Intel) and the ratio last.
Also reports the loss of both runs, so a reader sees bf16 autocast trains the same function.
"""

from __future__ import annotations

import argparse
import time


def run(model_name: str, batch: int, seq: int, steps: int, autocast: bool) -> tuple[float, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agentark.models.loading import resolve_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(model_name), dtype=torch.float32, use_safetensors=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size - 1, (batch, seq), generator=torch.Generator().manual_seed(0))
    times, loss = [], 0.0
    for _ in range(steps + 1):  # the first step warms up kernels and is not counted
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        optim.step()
        optim.zero_grad()
        times.append(time.perf_counter() - start)
        loss = float(out.loss)
    return sum(times[1:]) / steps, loss


def main() -> None:
    from agentark.models.hardware import cpu_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=768)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}")
    print(f"model {args.model}, LoRA r=16 all-linear, batch {args.batch} x {args.seq} tokens, {args.steps} steps")
    fp32, loss32 = run(args.model, args.batch, args.seq, args.steps, autocast=False)
    print(f"fp32            {fp32:7.1f} s/step  loss {loss32:.4f}")
    bf16, loss16 = run(args.model, args.batch, args.seq, args.steps, autocast=True)
    print(f"bf16 autocast   {bf16:7.1f} s/step  loss {loss16:.4f}")
    print(f"bf16 / fp32 speed: {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
