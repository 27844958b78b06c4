#!/usr/bin/env bash
# Debate traces -> RSFT / DA / answer-only students -> held-out evaluation, on the embedded default
# model and the built-in arithmetic task. Sized for 2 CPU cores (~1 hour); scale N_* up on a GPU.
set -euo pipefail
MODEL=${MODEL:-qwen2.5-coder-0.5b-instruct}
N_TRAIN=${N_TRAIN:-40}
N_EVAL=${N_EVAL:-40}
ROOT=${ROOT:-runs/arith}
STEPS=${STEPS:-12}

agentark generate --task arithmetic --system debate --agents 3 --rounds 2 --n "$N_TRAIN" \
  --model "$MODEL" --max-new-tokens 200 --out "$ROOT/traces"
agentark summarize "$ROOT/traces"
for strategy in rsft da sft; do
  agentark distill --strategy "$strategy" --traces "$ROOT/traces" --model "$MODEL" --out "$ROOT/students/$strategy" \
    --max-steps "$STEPS" --option per_device_train_batch_size=4 --option gradient_accumulation_steps=1 --option max_length=384
done
agentark evaluate --model "$ROOT/students/rsft" --model "$ROOT/students/da" --model "$ROOT/students/sft" \
  --task arithmetic --split held-out --n "$N_EVAL" --max-new-tokens 200 --out "$ROOT/eval"
