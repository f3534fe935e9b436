#!/usr/bin/env bash
# The quickstart's FedOTP run (`fedotp train --quiet --set 'compare=[]'`) timed on 2 threads and on
# 1, with its user and system CPU time and context switches, and checked bit-identical across
# them. With a second binary (an older build), both are run alternately in the same session and
# compared the same way.
#
#   benches/quickstart_threads.sh [NEW_BINARY [OLD_BINARY]]   (default NEW_BINARY:
#   target/release/fedotp, built first with `cargo build --release`)
#
# Prints one line per run and a markdown table of medians (of REPEATS runs, default 3).
set -euo pipefail
new=$(realpath "${1:-target/release/fedotp}")
old=${2:+$(realpath "$2")}
repeats=${REPEATS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run LABEL BINARY THREADS: one timed run in a fresh directory; appends "label wall user sys
# voluntary involuntary" to $work/times and keeps metrics.jsonl for the identity check.
run() {
  local label=$1 binary=$2 threads=$3 dir
  dir=$(mktemp -d -p "$work")
  (cd "$dir" && RAYON_NUM_THREADS=$threads /usr/bin/time -o time.txt -f "%e %U %S %w %c" \
    "$binary" train --quiet --set 'compare=[]' >/dev/null 2>&1)
  read -r wall user sys voluntary involuntary <"$dir/time.txt"
  echo "$label $wall $user $sys $voluntary $involuntary" | tee -a "$work/times"
  cp "$dir/runs/quickstart/metrics.jsonl" "$work/$label.metrics.jsonl"
}

for _ in $(seq "$repeats"); do
  run new-2-threads "$new" 2
  run new-1-thread "$new" 1
  if [ -n "$old" ]; then
    run old-2-threads "$old" 2
    run old-1-thread "$old" 1
  fi
done

for file in "$work"/*.metrics.jsonl; do
  cmp -s "$file" "$work/new-2-threads.metrics.jsonl" ||
    { echo "results differ: $(basename "$file")"; exit 1; }
done
echo "every run's metrics.jsonl is byte-identical"

echo
echo "| run | wall s | user s | system s | system / CPU | voluntary switches | involuntary switches |"
echo "|---|---|---|---|---|---|---|"
for label in $(cut -d' ' -f1 "$work/times" | sort -u); do
  grep "^$label " "$work/times" | sort -k2 -n | awk -v n="$repeats" -v label="$label" '
    NR == int((n + 1) / 2) {
      printf "| %s | %.2f | %.2f | %.2f | %.1f %% | %d | %d |\n",
        label, $2, $3, $4, 100 * $4 / ($3 + $4), $5, $6
    }'
done
