"""Reads the JSON lines of scripts/peer_bench.sh (one file or several sittings, any number of
runs each) and prints the ratios chartrl / peer per run, then a Markdown table of each ratio's
median over all the runs with its range.

Each chartrl figure of a run was taken right beside its peer's, so their ratios are what to
read; the absolute figures drift with the machine."""

import json
import statistics
import sys
from collections import defaultdict

# (name, chartrl figure, its field, peer figure, its field, target, better when)
RATIOS = [
    ("GRPO step time, chartrl / TRL", "grpo_step", "seconds", "trl_grpo_step", "seconds", 0.5, "lower"),
    ("sampling decoded tok/s, chartrl / HF generate", "rollout", "decoded_tokens_per_s", "hf_generate", "decoded_tokens_per_s", 3.0, "higher"),
    # Each side's sampled tokens up to its rows' ends: the same work, counted by how early
    # each side's samples happened to end (for reading against tables before the above).
    ("sampling new tok/s up to EOS, chartrl / HF generate", "rollout", "new_tokens_per_s", "hf_generate", "new_tokens_per_s", None, "higher"),
    ("supervised tok/s, chartrl / PyTorch", "sft_step", "tokens_per_s", "torch_sft_step", "tokens_per_s", 1.2, "higher"),
    ("peak memory of a GRPO step, chartrl / TRL", "grpo_step", "peak_rss_mb", "trl_grpo_step", "peak_rss_mb", 1.0, "lower"),
]


def main(paths):
    runs = defaultdict(dict)  # (run, preset) -> figure -> record
    for path in paths:
        for line in open(path):
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            # Runs are numbered within a file; several files are several sittings.
            runs[((path, r.get("run")), r["preset"])][r["figure"]] = r
    rows = defaultdict(list)  # (preset, name) -> ratios over runs
    for (run, preset), figs in sorted(runs.items()):
        for name, a, fa, b, fb, target, better in RATIOS:
            if a in figs and b in figs and figs[a].get(fa) and figs[b].get(fb):
                ratio = figs[a][fa] / figs[b][fb]
                rows[(preset, name)].append(ratio)
                print(json.dumps({"ratio": name, "preset": preset, "run": run, "value": ratio,
                                  "chartrl": figs[a][fa], "peer": figs[b][fb], "target": target,
                                  "better": better}))
    print()
    print("| preset | ratio | target | median | range (runs) | met |")
    print("|---|---|---|---|---|---|")
    for (preset, name), vals in sorted(rows.items()):
        target, better = next((t, b) for n, *_, t, b in RATIOS if n == name)
        med = statistics.median(vals)
        if target is None:
            goal, met = "—", "—"
        else:
            goal = f"{'≤' if better == 'lower' else '≥'} {target}"
            met = "yes" if (med <= target if better == "lower" else med >= target) else "no"
        print(f"| {preset} | {name} | {goal} | {med:.2f} | "
              f"{min(vals):.2f}–{max(vals):.2f} ({len(vals)}) | {met} |")


if __name__ == "__main__":
    main(sys.argv[1:])
