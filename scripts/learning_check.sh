#!/usr/bin/env bash
# Does RL learn? Trains GRPO for 200 steps from the warm-started tiny model on the first 20
# training prompts (20 epochs, batch 2, 8 completions at temperature 0.7, learning rate 1e-4)
# and compares the mean training accuracy reward of the first and the last 20 steps, and per
# 40-step window. Extra arguments go to `chartrl train`. Needs models/tiny-warm (run
# scripts/poc.sh once) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
out=${1:-runs/learning-grpo}
./target/release/chartrl train --mode grpo --model models/tiny-warm --subset-size 20 \
    --num-epochs 20 --batch-size 2 --num-generations 8 --temperature 0.7 --learning-rate 1e-4 \
    --log-every 20 --out "$out" "${@:2}"
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
acc = [r["rewards/accuracy/mean"] for r in rows]
first, last = acc[:20], acc[-20:]
windows = [round(sum(acc[i:i + 40]) / len(acc[i:i + 40]), 4) for i in range(0, len(acc), 40)]
print(json.dumps({"steps": len(rows), "accuracy_per_40_steps": windows,
                  "accuracy_first_20": sum(first) / len(first),
                  "accuracy_last_20": sum(last) / len(last),
                  "reward_first_20": sum(r["reward"] for r in rows[:20]) / 20,
                  "reward_last_20": sum(r["reward"] for r in rows[-20:]) / 20}))
PY
