# Sourced by the experiment scripts: one engine choice for generation and evaluation on this machine, and
# the two run helpers below (`keep_runs`, `generate`).
# `auto` is transformers in bf16 on a CPU with AMX / AVX512-BF16 and llama.cpp on an AVX2-only CPU
# (README Speed). Base and students are compared on one engine and one file type: on llama.cpp that is
# GGUF f16 (the base pack is converted from its HF weights like the students; greedy f16 matches
# transformers fp32). Run every evaluation on one machine kind: the engine decides the numbers.
# Needs TOK (the token cap); sets ENGINE, EVAL_ARGS (EVAL_OPTS overrides) and GEN (GEN_OPTS overrides
# the engine part of it).
ENGINE=$(python -c "from agentark.engines import resolve_engine_kind as r; print(r('auto'))")
if [[ "$ENGINE" == llamacpp ]]; then DEFAULT_EVAL="--engine llamacpp --engine-option outtype=f16"; else DEFAULT_EVAL="--engine $ENGINE"; fi
read -ra EVAL_ARGS <<< "${EVAL_OPTS:-$DEFAULT_EVAL}"
# Long debates: question + own answer + two peers + the new answer must fit one llama.cpp slot.
# A chunk is 16 questions x 3 agents = 48 conversations: one batch per round.
if [[ "$ENGINE" == llamacpp ]]; then DEFAULT_GEN="--engine llamacpp --engine-option n_ctx_per_seq=$((TOK * 4 + 1024))"
else DEFAULT_GEN="--engine $ENGINE"; fi
read -ra GEN_ENGINE <<< "${GEN_OPTS-$DEFAULT_GEN --batch-size 48}"
GEN=(--max-new-tokens "$TOK" "${GEN_ENGINE[@]}")

# `generate OUT ARGS...`: agentark generate ARGS --out OUT on this machine's engine, or, when OUT already
# holds a run (restored by examples/keep.sh, begun on another machine kind), on the engine that run was
# made with: the engine is part of a run's fingerprint, so resuming on another one would be refused.
generate() {
  local out=$1; shift
  local -a engine
  mapfile -t engine < <(python - "$out" <<'PY'
import json, sys
from agentark.traces.store import stage_record
record = stage_record(sys.argv[1])
if record:
    c = record["config"]
    print("--engine", c["engine"], "--batch-size", c["batch_size"], sep="\n")
    for k, v in c.get("engine_options", {}).items():
        print("--engine-option", f"{k}={json.dumps(v) if not isinstance(v, str) else v}", sep="\n")
PY
)
  if ((${#engine[@]})); then
    agentark generate --max-new-tokens "$TOK" "${engine[@]}" "$@" --out "$out"
  else
    agentark generate "${GEN[@]}" "$@" --out "$out"
  fi
}

# `keep_runs ROOT`: with KEEP set (a folder in git), restore ROOT's kept runs now and keep every trace of
# ROOT there when the script exits (examples/keep.sh).
keep_runs() {
  [[ -n "${KEEP:-}" ]] || return 0
  local keep_sh save
  keep_sh="$(dirname "${BASH_SOURCE[0]}")/keep.sh"
  bash "$keep_sh" restore "$1" "$KEEP"
  printf -v save 'bash %q save %q %q' "$keep_sh" "$1" "$KEEP"  # the paths as they are now
  trap "$save" EXIT
}
