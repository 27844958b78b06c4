#!/usr/bin/env bash
# E2's 135M student: learning rate, epochs and LoRA vs full fine-tuning chosen on a dev slice — the
# arithmetic train questions 201-300, which no debate saw — never on the held-out items E2 reports.
# RSFT on the 0.5B team's train debate (examples/e2_arithmetic.sh makes it); one student per variant,
# each greedy on the dev slice with the base, one table: results/e2/dev-135m.md.
set -euo pipefail
ROOT=${ROOT:-runs/e2}
TRACES=$ROOT/train/debate-qwen2.5-coder-0.5b-instruct
STUDENT=smollm2-135m-instruct TOK=512
source "$(dirname "$0")/engine_flags.sh"
common=(--strategy rsft --traces "$TRACES" --model "$STUDENT" --option per_question=all --option per_device_train_batch_size=4
        --option gradient_accumulation_steps=2 --option "max_length=$((TOK + 256))" --option save_steps=10)
# name | flags: the E2 default (LoRA r16, lr 2e-4, 2 epochs), LoRA longer and faster, full fine-tuning.
variants=(
  "lora-2e-4-ep2|--lora --learning-rate 2e-4 --option num_train_epochs=2"
  "lora-1e-3-ep4|--lora --learning-rate 1e-3 --option num_train_epochs=4"
  "full-5e-5-ep3|--full --learning-rate 5e-5 --option num_train_epochs=3"
  "full-2e-5-ep3|--full --learning-rate 2e-5 --option num_train_epochs=3"
)
models=()
for v in "${variants[@]}"; do
  name=${v%%|*}; read -ra flags <<< "${v#*|}"
  agentark distill "${common[@]}" "${flags[@]}" --out "$ROOT/dev/students/$name"
  models+=(--model "$ROOT/dev/students/$name")
done
agentark evaluate "${models[@]}" --task arithmetic --task-option n_operands=3 --split train --skip 200 --n 100 \
  --max-new-tokens "$TOK" "${EVAL_ARGS[@]}" --out "$ROOT/dev/eval"
rows=("base=$ROOT/dev/eval/$STUDENT")
for v in "${variants[@]}"; do rows+=("${v%%|*}=$ROOT/dev/eval/${v%%|*}"); done
mkdir -p results/e2
agentark compare "${rows[@]}" --out results/e2/dev-135m.md
