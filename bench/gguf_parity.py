"""Is the HF -> GGUF conversion faithful? Greedy answers of transformers and llama.cpp, side by side.

    python bench/gguf_parity.py                       # 20 GSM8K train prompts, 0.5B pack, 96 new tokens
    python bench/gguf_parity.py --model runs/e1/students/rsft --n 40

The model's HF weights run on the ``hf`` engine (fp32) and, converted once by llama.cpp's own
converter to GGUF f16, on the ``llamacpp`` engine. A pack is also run from its shipped (quantised)
GGUF, to show why a base and its students must be compared on the same file type. Prints the CPU,
how many answers are identical, and the mean share of the HF answer that the other one reproduces
before the first difference.
"""

from __future__ import annotations

import argparse
import os

from agentark.engines import get_engine
from agentark.engines.base import SamplingParams
from agentark.mas.base import first_prompt
from agentark.models.hardware import cpu_info
from agentark.models.packs import MODEL_PACKS
from agentark.tasks import get_task


def common_prefix_share(reference: str, other: str) -> float:
    n = 0
    for a, b in zip(reference, other, strict=True):
        if a != b:
            break
        n += 1
    return n / len(reference) if reference else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "gsm8k", "train.jsonl"))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    print(f"CPU: {cpu_info().describe()}")
    task = get_task("gsm8k", path=args.data)
    conversations = [first_prompt(task, item) for item in task.items("train", args.n)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    hf = get_engine("hf", args.model, dtype="float32", batch_size=args.n)
    reference = [c.text for c in hf.generate(conversations, greedy)]
    del hf
    arms = {"GGUF f16 (llama.cpp's converter)": {"outtype": "f16"}}
    if args.model in MODEL_PACKS:
        arms["GGUF as shipped in the pack"] = {}
    print(f"model={args.model}: {args.n} GSM8K train prompts, greedy, {args.max_new_tokens} new tokens; "
          "reference: transformers fp32")
    for label, options in arms.items():
        engine = get_engine("llamacpp", args.model, n_parallel=min(args.n, 16), **options)
        texts = [c.text for c in engine.generate(conversations, greedy)]
        engine.close()
        same = sum(a == b for a, b in zip(reference, texts, strict=True))
        share = sum(common_prefix_share(a, b) for a, b in zip(reference, texts, strict=True)) / len(texts)
        print(f"  {label:34s} identical {same}/{len(texts)}, mean common prefix {100 * share:.0f}%")


if __name__ == "__main__":
    main()
