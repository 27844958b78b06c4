#!/usr/bin/env bash
# E3: on-policy distillation on E1's questions and held-out items (run examples/e1_gsm8k.sh first):
# opd with the 1.5B teacher seeing the question only (model), the 1.5B teacher reading the 1.5B team's
# debate (team), and the 0.5B teacher reading the 0.5B team's own debate (team, pure distillation of
# the debate). Every row is paired with the 0.5B base on the same held-out items.
set -euo pipefail
ROOT=${ROOT:-runs/e1}
DATA=${DATA:-../shared/data/gsm8k/train.jsonl}
N_TRAIN=${N_TRAIN:-300} N_EVAL=${N_EVAL:-300} TOK=${TOK:-768} STEPS=${STEPS:-100}
BIG=qwen2.5-coder-1.5b-instruct SMALL=qwen2.5-coder-0.5b-instruct
KEEP=${KEEP-results/e1/kept}   # E1's folder: E3 adds its runs to the same tree (examples/keep.sh)
source "$(dirname "$0")/engine_flags.sh"
keep_runs "$ROOT"
TASK_ARGS=(--task gsm8k --data "$DATA")

# The 0.5B team's own debate on the same train questions (the 1.5B team's comes from E1).
generate "$ROOT/train/debate-$SMALL" "${TASK_ARGS[@]}" --system debate --agents 3 --rounds 2 --n "$N_TRAIN" \
  --model "$SMALL" --temperature 0.7

OPD=(--strategy opd --model "$SMALL" --max-steps "$STEPS" --option "max_completion_length=$TOK")
agentark distill "${OPD[@]}" --traces "$ROOT/train/debate-$BIG" --option "teacher=$BIG" \
  --option teacher_context=model --out "$ROOT/students/opd-model"
agentark distill "${OPD[@]}" --traces "$ROOT/train/debate-$BIG" --option "teacher=$BIG" \
  --option teacher_context=team --out "$ROOT/students/opd-team"
agentark distill "${OPD[@]}" --traces "$ROOT/train/debate-$SMALL" --option "teacher=$SMALL" \
  --option teacher_context=team --out "$ROOT/students/opd-team-self"

students=(opd-model opd-team opd-team-self)
agentark evaluate "${students[@]/#/--model=$ROOT/students/}" --no-base "${TASK_ARGS[@]}" --split held-out \
  --n "$N_EVAL" --max-new-tokens "$TOK" "${EVAL_ARGS[@]}" --out "$ROOT/eval"
rows=("base=$ROOT/eval/$SMALL" "rsft=$ROOT/eval/rsft" "da=$ROOT/eval/da")
for s in "${students[@]}"; do rows+=("$s=$ROOT/eval/$s"); done
agentark compare "${rows[@]}" --out "$ROOT/table-opd.md"
