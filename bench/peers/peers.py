"""The peers chartrl's speed is measured against, on the models chartrl creates.

One figure per process (so its peak memory is its own), printed as one JSON line:

  generate  HF `generate`: 2 prompts x 4 completions in one batch of 8, 64 new tokens,
            temperature 1, no top-k/top-p (chartrl's rollout workload; prompts as long as
            chartrl's, --prompt-tokens)
  trl       one TRL GRPOTrainer step: per_device_train_batch_size 8, num_generations 4,
            max_completion_length 64, temperature 1, beta 0, loss_type dapo, one iteration,
            fp32, no gradient checkpointing, prompts of --prompt-tokens; the reward is the
            completion's length in characters / 100, as in `chartrl bench --figure grpo-step`
  sft       a PyTorch supervised step (forward, cross-entropy, backward, AdamW) on
            BATCH x LEN tokens without padding

Medians of REPS timed repetitions after WARMUP untimed ones. Run by scripts/peer_bench.sh.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import torch

PROMPT_TEXT = (
    "Context:\nYear | Sales | Costs\n2015 | 120 | 80\n2016 | 135 | 95\n2017 | 150 | 101\n"
    "2018 | 162 | 117\n2019 | 171 | 120\nQuestion: By how much did sales exceed costs in the "
    "year with the highest costs? Think step by step inside <think> </think>, then give the "
    "answer inside <answer> </answer>.\n"
)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(model_dir):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return tok, model


def prompts(tok, n_tokens, count=2):
    """`count` distinct prompts of exactly `n_tokens` tokens, as ids and as text."""
    out = []
    for i in range(count):
        text = f"Chart {i}.\n"
        while len(tok(text)["input_ids"]) < n_tokens + 8:
            text += PROMPT_TEXT
        ids = tok(text)["input_ids"][:n_tokens]
        out.append((ids, tok.decode(ids)))
    return out


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def summary(figure, args, times, **extra):
    med = statistics.median(times)
    out = {
        "figure": figure,
        "preset": args.preset,
        "seconds": med,
        "seconds_min": min(times),
        "seconds_max": max(times),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    out.update(extra)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_generate(args):
    tok, model = load(args.model)
    model.eval()
    ps = prompts(tok, args.prompt_tokens)
    ids = torch.tensor([p[0] for p in ps for _ in range(args.completions)])
    counts = []

    def once():
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        new = out[:, ids.shape[1]:]
        lengths = []
        for row in new.tolist():
            n = 0
            for t in row:
                n += 1
                if t == tok.eos_token_id:
                    break
            lengths.append(n)
        # Sampled tokens (up to each row's end), and positions decoded: every row for as
        # many steps as the longest, as chartrl's rollout figure counts them.
        counts.append((sum(lengths), len(lengths) * max(lengths)))

    times = timed(once, args.warmup, args.reps)
    new_tokens = statistics.median(c[0] for c in counts[args.warmup:])
    decoded = statistics.median(c[1] for c in counts[args.warmup:])
    return summary(
        "hf_generate",
        args,
        times,
        new_tokens=new_tokens,
        new_tokens_per_s=new_tokens / statistics.median(times),
        decoded_tokens=decoded,
        decoded_tokens_per_s=decoded / statistics.median(times),
        prompt_tokens=len(ps[0][0]),
    )


def bench_trl(args):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok, model = load(args.model)
    ps = prompts(tok, args.prompt_tokens)
    steps = args.warmup + args.reps
    data = Dataset.from_dict({"prompt": [p[1] for p in ps] * steps})

    def char_length(completions, **_):
        return [len(c) / 100.0 for c in completions]

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="chartrl-peer-trl-"),
        per_device_train_batch_size=args.prompts * args.completions,
        num_generations=args.completions,
        max_completion_length=args.new_tokens,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        loss_type="dapo",
        num_iterations=1,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        max_steps=steps,
        learning_rate=1e-5,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        shuffle_dataset=False,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=char_length,
        args=config,
        train_dataset=data,
        processing_class=tok,
    )
    step_times, gen_times = [], []
    generate = trainer._generate_and_score_completions

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        out = generate(*a, **kw)
        gen_times.append(time.perf_counter() - t)
        return out

    trainer._generate_and_score_completions = timed_generate

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.t = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            step_times.append(time.perf_counter() - self.t)

    trainer.add_callback(StepTimer())
    trainer.train()
    times = step_times[args.warmup:]
    gens = gen_times[args.warmup:]
    return summary(
        "trl_grpo_step",
        args,
        times,
        generate_seconds=statistics.median(gens),
        train_seconds=statistics.median([s - g for s, g in zip(times, gens)]),
        prompt_tokens=len(ps[0][0]),
        trl=__import__("trl").__version__,
    )


def bench_sft(args):
    tok, model = load(args.model)
    model.train()
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(6, vocab, (args.batch, args.seq_len))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

    def once():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = timed(once, args.warmup, args.reps)
    tokens = args.batch * args.seq_len
    return summary(
        "torch_sft_step",
        args,
        times,
        tokens=tokens,
        tokens_per_s=tokens / statistics.median(times),
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["generate", "trl", "sft"])
    p.add_argument("--model", required=True, help="a model directory `chartrl model init` wrote")
    p.add_argument("--preset", default="tiny", help="the preset's name, for the output")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--completions", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=200)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=16, help="sft: sequences per step")
    p.add_argument("--seq-len", type=int, default=256, help="sft: tokens per sequence")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = {"generate": bench_generate, "trl": bench_trl, "sft": bench_sft}[args.what]
    print(json.dumps(fn(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
