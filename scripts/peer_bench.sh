#!/usr/bin/env bash
# chartrl against its peers, side by side in one run (issue 16): TRL's GRPOTrainer step, HF
# generate and a PyTorch supervised step, on the tiny and small models chartrl creates, with
# chartrl's own figures taken in between. One JSON line per figure, then the ratios.
#
#   bash scripts/peer_bench.sh            # one run, both presets
#   RUNS=3 PRESETS=tiny bash scripts/peer_bench.sh
#
# First use installs the pinned peers (bench/peers/requirements.txt, about 3 minutes) into
# PEERS_VENV (default .peers-venv). Not part of CI. Output: OUT (default target/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEERS_VENV:-.peers-venv}
OUT=${OUT:-target/peers}
RUNS=${RUNS:-1}
PRESETS=${PRESETS:-tiny small}
REPS=${REPS:-5}
THREADS=${THREADS:-$(nproc)}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r bench/peers/requirements.txt
fi
cargo build --release --quiet
mkdir -p "$OUT"
chartrl=./target/release/chartrl
py() { "$VENV/bin/python" bench/peers/peers.py "$@" --threads "$THREADS" --reps "$REPS" 2>/dev/null | tail -n 1; }
tag() { sed "s/^{/{\"run\": $1, /"; }
results="$OUT/results-$(date +%Y%m%d-%H%M%S).jsonl"
for run in $(seq 1 "$RUNS"); do
    for preset in $PRESETS; do
        model="$OUT/models/$preset"
        [ -f "$model/model.safetensors" ] || "$chartrl" model init --preset "$preset" --out "$model" >/dev/null
        # Each figure in its own process, so its peak memory is its own.
        export CHARTRL_THREADS=$THREADS
        sft=$("$chartrl" bench --preset "$preset" --reps "$REPS" --figure sft-step)
        read -r batch len < <(python3 -c "import json,sys; f = json.loads(sys.argv[1]); print(f['sequences'], round(f['tokens'] / f['sequences']))" "$sft")
        rollout=$("$chartrl" bench --preset "$preset" --reps "$REPS" --figure rollout)
        # The peers' prompts as long as chartrl's (the mean of its workload's prompts).
        ptok=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['prompt_tokens'])" "$rollout")
        {
            echo "$sft"
            echo "$rollout"
            "$chartrl" bench --preset "$preset" --reps "$REPS" --figure grpo-step
            py generate --model "$model" --preset "$preset" --prompt-tokens "$ptok"
            py trl --model "$model" --preset "$preset" --prompt-tokens "$ptok"
            py sft --model "$model" --preset "$preset" --batch "$batch" --seq-len "$len"
        } | tag "$run" | tee -a "$results"
    done
done
python3 bench/peers/compare.py "$results"
