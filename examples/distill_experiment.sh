#!/usr/bin/env bash
# Teacher debate -> one student per strategy -> every system on the same held-out items -> one table.
# Every stage is resumable and a finished stage is skipped on re-run, so a long run can be killed and
# restarted (also in a later session) without losing or duplicating a record.
#
#   bash examples/e1_gsm8k.sh         # E1: 1.5B team on GSM8K -> 0.5B students
#   bash examples/e2_arithmetic.sh    # E2: 0.5B team on arithmetic -> 135M student, and 0.5B -> 0.5B
#   N_TRAIN=16 N_EVAL=24 bash examples/distill_experiment.sh          # a small arithmetic run
#
# Settings (environment): TEACHER, STUDENT (model packs, paths or hub ids), TASK, DATA (file tasks),
# ROOT (output root), TEAMS (root of the debates' runs, default ROOT), N_TRAIN (debated train questions),
# N_EVAL (held-out items for single-model systems), N_TEAM_EVAL (held-out items for the debates and
# self-consistency, a prefix of the same items), TOK (token cap),
# STRATEGIES, TRAIN_OPTS (extra `agentark distill` flags), EVAL_OPTS (engine flags of the evaluations),
# KEEP (a folder in git that keeps every trace of TEAMS, examples/keep.sh: restored first, saved on exit).
set -euo pipefail
TEACHER=${TEACHER:-qwen2.5-coder-0.5b-instruct}
STUDENT=${STUDENT:-$TEACHER}
TASK=${TASK:-arithmetic}
N_TRAIN=${N_TRAIN:-32}
N_EVAL=${N_EVAL:-32}
N_TEAM_EVAL=${N_TEAM_EVAL:-$N_EVAL}
TOK=${TOK:-256}
ROOT=${ROOT:-runs/$TASK}
TEAMS=${TEAMS:-$ROOT}            # where the debates go (train/ and eval/): shared by runs with one teacher
STRATEGIES=${STRATEGIES:-rsft da sft}
STEPS=${STEPS:--1}               # -1: NUM_EPOCHS epochs
NUM_EPOCHS=${NUM_EPOCHS:-2}
PAD_STEPS=${PAD_STEPS:-3}        # one GRPO step (8 completions of 256 tokens) is ~10 min on 2 CPU cores
read -ra TRAIN_ARGS <<< "${TRAIN_OPTS:-}"
source "$(dirname "$0")/engine_flags.sh"
if [[ "$TASK" == arithmetic ]]; then
  TASK_ARGS=(--task arithmetic --task-option n_operands=3)
else
  TASK_ARGS=(--task "$TASK" --data "${DATA:?set DATA to the data file}")
fi
label() { basename "$1"; }
keep_runs "$TEAMS"

# 1. The team on the train questions (sampled, consensus stop), and the student alone on them: the
#    questions the team gets right and the student does not are what only the team can teach.
generate "$TEAMS/train/debate-$(label "$TEACHER")" "${TASK_ARGS[@]}" --system debate --agents 3 --rounds 2 \
  --n "$N_TRAIN" --model "$TEACHER" --temperature 0.7
generate "$ROOT/train/single-$(label "$STUDENT")" "${TASK_ARGS[@]}" --system single --n "$N_TRAIN" --model "$STUDENT" \
  --temperature 0
TRACES="$TEAMS/train/debate-$(label "$TEACHER")"
agentark summarize "$TRACES"

# 2. One student per strategy.
students=()
for strategy in $STRATEGIES; do
  name=${strategy%%:*}; variant=${strategy#*:}
  case "$variant" in
    unsolved) extra=(--option "student_run=$ROOT/train/single-$(label "$STUDENT")") ;;
    dense)    extra=(--option credit=dense) ;;
    *)        extra=() ;;
  esac
  out="$ROOT/students/${strategy/:/-}"
  if [[ "$name" == pad ]]; then
    agentark distill --strategy pad --traces "$TRACES" --model "$STUDENT" --out "$out" \
      --max-steps "$PAD_STEPS" --learning-rate 3e-5 --option num_generations=4 --option prompts_per_step=2 \
      --option "max_completion_length=$TOK" --option beta=0 \
      --option "prm={max_length: $((TOK + 256)), batch_size: 2, max_steps: 20}" "${extra[@]}" "${TRAIN_ARGS[@]}"
  else
    agentark distill --strategy "$name" --traces "$TRACES" --model "$STUDENT" --out "$out" \
      --max-steps "$STEPS" --option "num_train_epochs=$NUM_EPOCHS" --option per_device_train_batch_size=4 \
      --option gradient_accumulation_steps=2 --option "max_length=$((TOK + 256))" --option per_question=all \
      --option save_steps=10 \
      "${extra[@]}" "${TRAIN_ARGS[@]}"
  fi
  students+=(--model "$out")
done

# 3. Held-out: base, students and teacher alone greedy on N_EVAL items (the cheap models first, so an
#    interrupted run has the student-vs-base rows); the teams on the first N_TEAM_EVAL.
agentark evaluate --model "$STUDENT" "${students[@]}" --model "$TEACHER" --no-base "${TASK_ARGS[@]}" \
  --split held-out --n "$N_EVAL" --max-new-tokens "$TOK" "${EVAL_ARGS[@]}" --out "$ROOT/eval"
teams=()
for model in $(printf '%s\n' "$TEACHER" "$STUDENT" | sort -u); do
  generate "$TEAMS/eval/debate-$(label "$model")" "${TASK_ARGS[@]}" --split held-out --system debate --agents 3 \
    --rounds 2 --n "$N_TEAM_EVAL" --model "$model" --temperature 0.7
  teams+=("debate-$(label "$model")=$TEAMS/eval/debate-$(label "$model")")
done
# Self-consistency of the student's base at the teacher debate's generated-token budget per question.
SC_K=$(python -c "import sys; from agentark.evaluate.metrics import sc_k_for_budget; from agentark.traces.store \
import read_traces as r; print(sc_k_for_budget(list(r(sys.argv[1])), list(r(sys.argv[2]))))" \
  "$TEAMS/eval/debate-$(label "$TEACHER")" "$ROOT/eval/$(label "$STUDENT")")
generate "$ROOT/eval/sc-$(label "$STUDENT")" "${TASK_ARGS[@]}" --split held-out --system self_consistency \
  --agents "$SC_K" --n "$N_TEAM_EVAL" --model "$STUDENT" --temperature 0.7

# 4. One table, every row paired with the student's base on the items all rows share.
rows=("base=$ROOT/eval/$(label "$STUDENT")")
[[ "$TEACHER" != "$STUDENT" ]] && rows+=("teacher-single=$ROOT/eval/$(label "$TEACHER")")
for s in "${students[@]}"; do [[ "$s" == --model ]] || rows+=("$(label "$s")=$ROOT/eval/$(label "$s")"); done
agentark compare "${rows[@]}" --out "$ROOT/table-all.md"
agentark compare "${rows[@]}" "${teams[@]}" "sc$SC_K=$ROOT/eval/sc-$(label "$STUDENT")" --out "$ROOT/table-teams.md"
