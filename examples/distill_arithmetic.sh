#!/usr/bin/env bash
# Debate traces -> RSFT / DA / answer-only students -> held-out evaluation next to the base model, on
# the embedded default model and the built-in arithmetic task. Sized for 2 CPU cores (~30-40 min);
# scale N_TRAIN / N_EVAL / STEPS up on a GPU (add --engine-option device=cuda).
set -euo pipefail
MODEL=${MODEL:-qwen2.5-coder-0.5b-instruct}
N_TRAIN=${N_TRAIN:-32}
N_EVAL=${N_EVAL:-32}
ROOT=${ROOT:-runs/arith}
STEPS=${STEPS:-12}
TASK_OPTS=(--task arithmetic --task-option n_operands=3)

agentark generate "${TASK_OPTS[@]}" --system debate --agents 3 --rounds 2 --n "$N_TRAIN" \
  --model "$MODEL" --max-new-tokens 256 --out "$ROOT/traces"
agentark summarize "$ROOT/traces"
for strategy in rsft da sft; do
  agentark distill --strategy "$strategy" --traces "$ROOT/traces" --model "$MODEL" --out "$ROOT/students/$strategy" \
    --max-steps "$STEPS" --option per_device_train_batch_size=4 --option gradient_accumulation_steps=1 \
    --option max_length=512
done
agentark evaluate --model "$ROOT/students/rsft" --model "$ROOT/students/da" --model "$ROOT/students/sft" \
  "${TASK_OPTS[@]}" --split held-out --n "$N_EVAL" --max-new-tokens 256 --out "$ROOT/eval"
