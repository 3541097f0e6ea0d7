#!/usr/bin/env bash
# chartrl against its peers, side by side in one run (issue 16): TRL's GRPOTrainer step, HF
# generate and a PyTorch supervised step, on the tiny and small models chartrl creates, each
# beside chartrl's own figure. One JSON line per figure, then the ratios.
#
#   bash scripts/peer_bench.sh            # one run, both presets
#   RUNS=4 PRESETS=tiny bash scripts/peer_bench.sh   # chartrl first in runs 1 and 3, second in 2 and 4
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
emit() { tag "$run" | tee -a "$results"; }
# The workload's shape per preset, from chartrl's first figures: the warm-start step's
# sequences and mean length, the rollout's mean prompt length.
declare -A batch len ptok
for run in $(seq 1 "$RUNS"); do
    for preset in $PRESETS; do
        model="$OUT/models/$preset"
        [ -f "$model/model.safetensors" ] || "$chartrl" model init --preset "$preset" --out "$model" >/dev/null
        # Each figure in its own process, so its peak memory is its own.
        export CHARTRL_THREADS=$THREADS
        ours() { "$chartrl" bench --preset "$preset" --reps "$REPS" --figure "$1"; }
        peer_sft() { py sft --model "$model" --preset "$preset" --batch "${batch[$preset]}" --seq-len "${len[$preset]}"; }
        peer_generate() { py generate --model "$model" --preset "$preset" --prompt-tokens "${ptok[$preset]}"; }
        peer_trl() { py trl --model "$model" --preset "$preset" --prompt-tokens "${ptok[$preset]}"; }
        # Each chartrl figure right beside its peer's, chartrl first in odd runs and second in
        # even ones: the machine's speed drifts by a tenth between minutes, and a ratio taken
        # from two measurements a minute apart carries less of that drift than one taken
        # minutes apart, and none of its direction once the runs alternate.
        if [ $((run % 2)) -eq 1 ] || [ -z "${batch[$preset]:-}" ]; then
            sft=$(ours sft-step)
            echo "$sft" | emit
            read -r b l < <(python3 -c "import json,sys; f = json.loads(sys.argv[1]); print(f['sequences'], round(f['tokens'] / f['sequences']))" "$sft")
            batch[$preset]=$b len[$preset]=$l
            peer_sft | emit
            rollout=$(ours rollout)
            echo "$rollout" | emit
            # The peers' prompts as long as chartrl's (the mean of its workload's prompts).
            ptok[$preset]=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['prompt_tokens'])" "$rollout")
            peer_generate | emit
            ours grpo-step | emit
            peer_trl | emit
        else
            peer_sft | emit
            ours sft-step | emit
            peer_generate | emit
            ours rollout | emit
            peer_trl | emit
            ours grpo-step | emit
        fi
    done
done
python3 bench/peers/compare.py "$results"
