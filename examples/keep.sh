#!/usr/bin/env bash
# Keep an experiment's traces in git, so a run survives a fresh checkout and resumes in a later session.
#
#   bash examples/keep.sh save    runs/e1 results/e1/kept   # every stage dir of runs/e1 -> results/e1/kept
#   bash examples/keep.sh restore runs/e1 results/e1/kept   # the reverse, for stages missing or behind here
#
# A stage directory (one with stage.json, or the older config.json) is kept as traces.jsonl.gz plus its
# small JSON records (stage.json, config.json, wall.json); an unfinished one is kept as it stands and
# resumes where it stopped once restored (its stage.json says incomplete; saving beside a running stage
# keeps its whole records only). Students are skipped: their
# weights are not results (publish the best with `agentark export`). Restore never overwrites a stage
# directory that holds at least as many traces as the kept copy.
set -euo pipefail
cmd=${1:?usage: keep.sh save|restore RUN_ROOT KEEP_DIR}
root=${2:?run root, e.g. runs/e1}
keep=${3:?keep dir, e.g. results/e1/kept}
records=(stage.json config.json wall.json)
lines() { if [[ -f "$1" ]]; then wc -l < "$1"; else echo 0; fi; }

case "$cmd" in
  save)
    [[ -d "$root" ]] || exit 0
    find "$root" -name traces.jsonl -not -path '*/students/*' | sort | while read -r traces; do
      dir=$(dirname "$traces"); rel=${dir#"$root"/}; dest="$keep/$rel"
      [[ -f "$dir/stage.json" || -f "$dir/config.json" ]] || continue
      mkdir -p "$dest"
      # Whole lines only: a run writing beside us may be half-way through its last record.
      python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(d[:d.rfind(b"\n") + 1])' \
        "$traces" | gzip -n > "$dest/traces.jsonl.gz.tmp" && mv "$dest/traces.jsonl.gz.tmp" "$dest/traces.jsonl.gz"
      for f in "${records[@]}"; do [[ -f "$dir/$f" ]] && cp "$dir/$f" "$dest/$f"; done
      echo "kept $dir ($(lines "$traces") traces) in $dest"
    done ;;
  restore)
    [[ -d "$keep" ]] || exit 0
    find "$keep" -name traces.jsonl.gz | sort | while read -r kept; do
      src=$(dirname "$kept"); rel=${src#"$keep"/}; dir="$root/$rel"
      have=$(lines "$dir/traces.jsonl"); want=$(gzip -dc "$kept" | wc -l)
      if (( have >= want )); then continue; fi
      mkdir -p "$dir"
      gzip -dc "$kept" > "$dir/traces.jsonl.tmp" && mv "$dir/traces.jsonl.tmp" "$dir/traces.jsonl"
      for f in "${records[@]}"; do [[ -f "$src/$f" ]] && cp "$src/$f" "$dir/$f"; done
      echo "restored $dir ($want traces, had $have) from $src"
    done ;;
  *) echo "keep.sh: unknown command '$cmd' (valid: save, restore)" >&2; exit 2 ;;
esac
