#!/usr/bin/env bash
# The 100-sample POC on the built-in tiny model, end to end and offline:
# create the model, warm-start it on gold reasoning traces of the warmup split (once; reused
# afterwards), then train each of the four modes on the first 100 synthetic training samples
# (4 prompts x 8 completions a step), evaluate each on 100 held-out questions (16 samples
# each) and write the report to reports/poc-cli/.
# `chartrl exec experiments/poc.rhai` is the main job; this is the same POC with plain commands.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=./target/release/chartrl
[ -f models/tiny/config.json ] || "$bin" model init --preset tiny --out models/tiny
# Reused once done (the same command again finds the finished run).
"$bin" warm-start --model models/tiny --out models/tiny-warm --name poc-warm-start --experiment poc
"$bin" eval --run poc-warm-start --n 16 --k 1,4,16 --questions 100
for mode in grpo psr nsr w-reinforce; do
    start=$(date +%s)
    "$bin" train --mode "$mode" --model models/tiny-warm --subset-size 100 --num-generations 8 \
        --batch-size 4 --log-every 5 --name "poc-$mode" --experiment poc "$@"
    echo "$mode: $(( $(date +%s) - start ))s wall"
    "$bin" eval --run "poc-$mode" --n 16 --k 1,4,16 --questions 100
done
"$bin" runs
"$bin" report poc --out reports/poc-cli
