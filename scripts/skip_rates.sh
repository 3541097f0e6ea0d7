#!/usr/bin/env bash
# How often each mode skips its update for lack of a sample to learn from (PSR: no correct
# completion; NSR: no incorrect one; GRPO: every group's rewards tie), under batch shapes
# given as PROMPTSxCOMPLETIONS. Runs the POC (experiments/poc.rhai) once per shape, reusing
# the warm start and any run already done, and prints one JSON line per RL run:
#   bash scripts/skip_rates.sh 2x4 4x8 8x8
# Needs python3. Extra chartrl options go in CHARTRL_ARGS (e.g. "--db other/chartrl.db").
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=./target/release/chartrl
[ $# -gt 0 ] || set -- 2x4 4x8
for shape in "$@"; do
    b=${shape%x*} g=${shape#*x}
    # shellcheck disable=SC2086
    "$bin" exec experiments/poc.rhai --set batch_size="$b" --set num_generations="$g" \
        ${CHARTRL_ARGS:-} >/dev/null
done
# shellcheck disable=SC2086
"$bin" runs ${CHARTRL_ARGS:-} | awk 'NR > 1 && $2 != "warm-start" && $2 != "eval" {print $1}' |
while read -r run; do
    # shellcheck disable=SC2086
    "$bin" runs show "$run" --json ${CHARTRL_ARGS:-} >"/tmp/skip_rates_show.json"
    # shellcheck disable=SC2086
    "$bin" runs export "$run" --format csv ${CHARTRL_ARGS:-} | python3 -c '
import csv, json, sys
show = json.load(open("/tmp/skip_rates_show.json"))
opts = show["run"]["config"]["options"]
rows = [r for r in csv.DictReader(sys.stdin) if r["key"] == "skipped"]
skipped = sum(float(r["value"]) for r in rows)
print(json.dumps({"run": show["run"]["name"], "mode": opts["mode"],
                  "shape": "%dx%d" % (opts["batch_size"], opts["num_generations"]),
                  "steps": len(rows), "skipped": int(skipped),
                  "skipped_share": round(skipped / max(len(rows), 1), 3)}))'
done
