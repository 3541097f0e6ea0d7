#!/usr/bin/env bash
# Rollout and training-step figures for the tiny and small presets, one JSON object per line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
for preset in tiny small; do
    ./target/release/chartrl bench --preset "$preset" "$@"
done
# What the run store and a checkpoint cost a real training step.
./target/release/chartrl bench --preset tiny --reps 1 --store 30
