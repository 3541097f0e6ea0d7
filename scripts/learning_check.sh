#!/usr/bin/env bash
# Does RL learn? Trains GRPO for 200 steps from the warm-started tiny model and prints the mean
# training accuracy reward of the first and the last 20 steps and per window (one epoch, at
# least 40 steps). Runs are deterministic, so the figures reproduce exactly.
#
# Defaults: the first 20 training prompts for 20 epochs, 8 completions at temperature 0.7,
# learning rate 1e-4. The POC-scale variant:
#   SUBSET=100 EPOCHS=4 GENERATIONS=4 TEMPERATURE=1.0 bash scripts/learning_check.sh
# Extra arguments go to `chartrl train`. Starts from the shipped base (models/tiny-base); needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
subset=${SUBSET:-20} epochs=${EPOCHS:-20}
name=${NAME:-learning-grpo-$subset-$epochs}
./target/release/chartrl train --mode grpo --model models/tiny-base --subset-size "$subset" \
    --num-epochs "$epochs" --batch-size 2 --num-generations "${GENERATIONS:-8}" \
    --temperature "${TEMPERATURE:-0.7}" --learning-rate "${LR:-1e-4}" --log-every 20 \
    --name "$name" "$@"
./target/release/chartrl runs export "$name" --format jsonl --out "runs/$name/metrics.jsonl"
python3 - "runs/$name/metrics.jsonl" "$(( (subset + 1) / 2 ))" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
w = max(40, int(sys.argv[2]))
acc = [r["rewards/accuracy/mean"] for r in rows]
mean = lambda xs: round(sum(xs) / len(xs), 4)
print(json.dumps({"steps": len(rows), "window": w,
                  "accuracy_per_window": [mean(acc[i:i + w]) for i in range(0, len(acc), w)],
                  "accuracy_first_20": mean(acc[:20]), "accuracy_last_20": mean(acc[-20:]),
                  "reward_first_20": mean([r["reward"] for r in rows[:20]]),
                  "reward_last_20": mean([r["reward"] for r in rows[-20:]]),
                  "frac_reward_zero_std": mean([r["frac_reward_zero_std"] for r in rows])}))
PY
