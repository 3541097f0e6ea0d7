#!/usr/bin/env bash
# The 100-sample POC on the shipped tiny base (models/tiny-base), end to end and offline:
# train each of the four modes on the first 100 synthetic training samples
# (4 prompts x 8 completions a step), evaluate each on 100 held-out questions (16 samples
# each) and write the report to reports/poc-cli/.
# `chartrl exec experiments/poc.rhai` is the main job; this is the same POC with plain commands.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=./target/release/chartrl
"$bin" eval --model models/tiny-base --n 16 --k 1,4,16 --questions 100
for mode in grpo psr nsr w-reinforce; do
    start=$(date +%s)
    "$bin" train --mode "$mode" --model models/tiny-base --subset-size 100 --num-generations 8 \
        --batch-size 4 --log-every 5 --name "poc-$mode" --experiment poc "$@"
    echo "$mode: $(( $(date +%s) - start ))s wall"
    "$bin" eval --run "poc-$mode" --n 16 --k 1,4,16 --questions 100
done
"$bin" runs
"$bin" report poc --out reports/poc-cli
