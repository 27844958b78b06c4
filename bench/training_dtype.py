"""Seconds per LoRA training step on this CPU: fp32 against bf16 autocast (what ``TrainingArguments(bf16=True)``
does on CPU) over fp32 or bf16 frozen base weights, LoRA dropout on or off; same model, batch and seed.

    python bench/training_dtype.py --model qwen2.5-coder-0.5b-instruct --batch 4 --seq 768 --steps 3

Prints the CPU first (the answer differs ~2.5x between an AVX2-only AMD and an AMX Intel) and the ratio last.
Also reports each run's loss, so a reader sees every variant trains the same function.
"""

from __future__ import annotations

import argparse
import time


def run(model_name: str, batch: int, seq: int, steps: int, autocast: bool, base_bf16: bool = False,
        dropout: float = 0.05) -> tuple[float, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agentark.models.loading import resolve_model

    torch.manual_seed(0)
    dtype = torch.bfloat16 if base_bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_model(model_name), dtype=dtype, use_safetensors=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))  # peft keeps the adapters in fp32
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
    print(f"fp32 weights, fp32 matmuls              {fp32:7.1f} s/step  loss {loss32:.4f}")
    for base_bf16, dropout in ((False, 0.05), (True, 0.05), (True, 0.0)):
        secs, loss = run(args.model, args.batch, args.seq, args.steps, autocast=True, base_bf16=base_bf16,
                         dropout=dropout)
        base = "bf16" if base_bf16 else "fp32"
        print(f"{base} base, fp32 LoRA (dropout {dropout}), autocast {secs:7.1f} s/step  loss {loss:.4f}  "
              f"speed vs fp32 {fp32 / secs:.2f}x")


if __name__ == "__main__":
    main()
