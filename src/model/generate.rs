//! Sampling one batch of groups: each prompt's prefill, then the decoding loop that draws a
//! token for every row and feeds it back.
//!
//! Two decoders run the loop. On f32 CPU weights a team of threads decodes the batch in plain
//! loops, each thread with its share of every weight (`decode.rs`, `team.rs`); the prompts'
//! prefills run in parallel before it. Elsewhere (CUDA, half precision) candle's forward
//! decodes over a KV cache on one thread. The loop itself is the same for both: each thread
//! draws the tokens of its own groups' rows, with each group's own RNG, so what is sampled
//! does not depend on how many threads decode.

use std::ops::Range;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::decode::{LoopWeights, Member, PromptKv};
use super::kv_cache::KvCache;
use super::policy::left_pad_mask;
use super::qwen2::{Attend, LayerKv, Qwen2, Rows};
use super::sampling::{sample_token, Completion, SamplingParams};
use super::team::{share, Poisoned, Team};
use super::{ChatTokenizer, ModelError, Policy, Result};
use crate::parallel::map_chunks;

/// What the sampling loop needs of a decoder, for the rows one thread samples.
trait Stepper {
    /// Shares this thread's rows' next inputs (and whether all of them have finished); returns
    /// every row's inputs in row order and whether every row has finished.
    fn exchange(&mut self, mine: &[u32], finished: bool) -> Result<(Vec<u32>, bool)>;
    /// Feeds every row its input at its position; returns the next-token logits of this
    /// thread's rows.
    fn step(&mut self, ids: &[u32], positions: &[u32]) -> Result<Vec<Vec<f32>>>;
}

/// Samples `n` completions of each prompt with a team of `threads` decoding in loops over
/// `w`; group `i` draws from an RNG seeded with `seeds[i]`.
pub(super) fn sample_team(
    policy: &Policy,
    net: &Qwen2,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    (n, params): (usize, &SamplingParams),
    w: &LoopWeights,
    threads: usize,
) -> Result<Vec<Vec<Completion>>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    policy.check_fits(longest, params.max_new_tokens)?;
    let prefills = map_chunks(threads, prompts, |_, p| prefill_one(net, p), panicked)
        .into_iter()
        .map(|r| r.and_then(|(kv, logits)| Ok((flat_kv(kv)?, logits))))
        .collect::<Result<Vec<(PromptKv, Vec<f32>)>>>()?;
    let (kvs, first): (Vec<PromptKv>, Vec<Vec<f32>>) = prefills.into_iter().unzip();
    let team = Team::new(threads);
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let run = |t: usize| -> Result<Vec<Completion>> {
        let _guard = team.barrier.guard();
        let groups = share(prompts.len(), threads, t, 1);
        let rows = groups.start * n..groups.end * n;
        let logits = first[groups.clone()]
            .iter()
            .flat_map(|l| std::iter::repeat_n(l.clone(), n))
            .collect();
        let mut rngs: Vec<ChaCha8Rng> = seeds[groups]
            .iter()
            .map(|&s| ChaCha8Rng::seed_from_u64(s))
            .collect();
        let mut stepper = TeamStepper {
            member: Member::new(w, (t, threads), &kvs, n, params.max_new_tokens),
            team: &team,
            t,
            rows: rows.clone(),
        };
        let ctx = LoopCtx {
            n,
            params,
            lens: &lens,
            tokenizer: &policy.tokenizer,
        };
        decode_rows(&mut stepper, logits, &mut rngs, rows, &ctx)
    };
    let parts: Vec<Result<Vec<Completion>>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads).map(|t| s.spawn(move || run(t))).collect();
        let mut parts = vec![run(0)];
        parts.extend(
            others
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(panicked()))),
        );
        parts
    });
    let mut rows = Vec::with_capacity(prompts.len() * n);
    for part in parts {
        rows.extend(part?);
    }
    finish(&policy.tokenizer, rows, n)
}

/// Samples `n` completions of each prompt on this thread with candle's forward over a KV
/// cache (CUDA, half precision), all groups decoding together as one left-padded batch.
pub(super) fn sample_candle(
    policy: &Policy,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    n: usize,
    params: &SamplingParams,
) -> Result<Vec<Vec<Completion>>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    policy.check_fits(longest, params.max_new_tokens)?;
    let capacity = longest + params.max_new_tokens;
    let net = policy.network(false)?;
    let (cache, first) = policy.prefill(&net, prompts, n, capacity)?;
    let dtype = policy.params.dtype();
    let key_mask = left_pad_mask(prompts, n, capacity, dtype, policy.device())?;
    let logits = first
        .into_iter()
        .flat_map(|l| std::iter::repeat_n(l, n))
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = seeds
        .iter()
        .map(|&s| ChaCha8Rng::seed_from_u64(s))
        .collect();
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let ctx = LoopCtx {
        n,
        params,
        lens: &lens,
        tokenizer: &policy.tokenizer,
    };
    let mut stepper = CandleStepper {
        net: &net,
        cache,
        key_mask,
    };
    let rows = decode_rows(&mut stepper, logits, &mut rngs, 0..prompts.len() * n, &ctx)?;
    finish(&policy.tokenizer, rows, n)
}

/// Runs `prompt` alone (batch 1, its own length): each layer's keys and values and the
/// next-token logits after its last token.
pub(super) fn prefill_one(net: &Qwen2, prompt: &[u32]) -> Result<(Vec<LayerKv>, Vec<f32>)> {
    let ids = Tensor::from_slice(prompt, (1, prompt.len()), net.device())?;
    let (h, kv) = net.forward(&ids, Attend::Causal)?;
    let last = net.logits(&h.narrow(1, prompt.len() - 1, 1)?)?;
    Ok((kv, last.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?))
}

/// Each layer's keys and values of one prompt as f32 buffers.
pub(super) fn flat_kv(kv: Vec<LayerKv>) -> Result<PromptKv> {
    let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    Ok(kv
        .iter()
        .map(|l| Ok((flat(&l.k)?, flat(&l.v)?)))
        .collect::<candle_core::Result<_>>()?)
}

fn panicked() -> ModelError {
    ModelError::Invalid("a sampling thread panicked".into())
}

impl From<Poisoned> for ModelError {
    fn from(_: Poisoned) -> Self {
        panicked()
    }
}

/// What every thread's sampling loop shares.
struct LoopCtx<'a> {
    n: usize,
    params: &'a SamplingParams,
    /// Each prompt's length (row `r` continues prompt `r / n`).
    lens: &'a [usize],
    tokenizer: &'a ChatTokenizer,
}

/// The sampling loop of the rows `rows` (whole groups of `n`, group `i` drawing from
/// `rngs[i]`), starting from each row's first `logits`. Completions come back without their
/// text (see [`finish`]).
fn decode_rows(
    stepper: &mut impl Stepper,
    mut logits: Vec<Vec<f32>>,
    rngs: &mut [ChaCha8Rng],
    rows: Range<usize>,
    ctx: &LoopCtx,
) -> Result<Vec<Completion>> {
    let (n, params) = (ctx.n, ctx.params);
    let mut out: Vec<Completion> = rows
        .clone()
        .map(|_| Completion {
            tokens: Vec::with_capacity(params.max_new_tokens),
            text: String::new(),
            logprobs: Vec::with_capacity(params.max_new_tokens),
            finished: false,
        })
        .collect();
    let pad = ctx.tokenizer.pad_id();
    let total = ctx.lens.len() * n;
    for step in 0..params.max_new_tokens {
        let mut mine = Vec::with_capacity(rows.len());
        for (r, (row, lg)) in out.iter_mut().zip(&logits).enumerate() {
            if row.finished {
                mine.push(pad);
                continue;
            }
            let (tok, lp) = sample_token(lg, params, &mut rngs[r / n]);
            row.tokens.push(tok);
            row.logprobs.push(lp);
            row.finished = params.stop_at_eos && ctx.tokenizer.is_eos(tok);
            mine.push(tok);
        }
        let (inputs, finished) = stepper.exchange(&mine, out.iter().all(|r| r.finished))?;
        if step + 1 == params.max_new_tokens || finished {
            break;
        }
        let positions: Vec<u32> = (0..total)
            .map(|r| (ctx.lens[r / n] + step) as u32)
            .collect();
        logits = stepper.step(&inputs, &positions)?;
    }
    Ok(out)
}

/// Decodes each completion's text (without a final end-of-text token) and groups the rows
/// by `n`, in order.
fn finish(
    tokenizer: &ChatTokenizer,
    mut rows: Vec<Completion>,
    n: usize,
) -> Result<Vec<Vec<Completion>>> {
    for row in &mut rows {
        let body = match row.tokens.last() {
            Some(&t) if row.finished && tokenizer.is_eos(t) => &row.tokens[..row.tokens.len() - 1],
            _ => &row.tokens[..],
        };
        row.text = tokenizer.decode(body)?;
    }
    let mut groups = Vec::with_capacity(rows.len() / n.max(1));
    let mut it = rows.into_iter();
    while it.len() > 0 {
        groups.push(it.by_ref().take(n).collect());
    }
    Ok(groups)
}

/// One team member's view of the loop (see `decode.rs`).
struct TeamStepper<'a, 'w> {
    member: Member<'w>,
    team: &'a Team,
    t: usize,
    rows: Range<usize>,
}

impl Stepper for TeamStepper<'_, '_> {
    fn exchange(&mut self, mine: &[u32], finished: bool) -> Result<(Vec<u32>, bool)> {
        self.team.board.put_inputs(self.t, mine, finished);
        self.team.barrier.wait()?;
        Ok(self.team.board.all_inputs())
    }

    fn step(&mut self, ids: &[u32], positions: &[u32]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .member
            .step(self.team, ids, positions, self.rows.clone())?)
    }
}

/// Candle's forward over a KV cache, one thread for every row.
struct CandleStepper<'a> {
    net: &'a Qwen2,
    cache: KvCache,
    key_mask: Option<Tensor>,
}

impl Stepper for CandleStepper<'_> {
    fn exchange(&mut self, mine: &[u32], finished: bool) -> Result<(Vec<u32>, bool)> {
        Ok((mine.to_vec(), finished))
    }

    fn step(&mut self, ids: &[u32], positions: &[u32]) -> Result<Vec<Vec<f32>>> {
        let (rows, dev) = (ids.len(), self.net.device());
        let step_rows = Rows {
            positions: Tensor::from_slice(positions, (rows, 1), dev)?,
            key_mask: self.key_mask.clone(),
        };
        let ids = Tensor::from_slice(ids, (rows, 1), dev)?;
        let attend = Attend::Cache(&mut self.cache);
        let (h, _) = self.net.forward_rows(&ids, attend, Some(&step_rows))?;
        Ok(self
            .net
            .logits(&h)?
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_vec2()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode::loop_weights;
    use crate::model::testing::micro_policy;

    /// The same completions, to the bit, from a team of any size (more threads than groups and
    /// than key/value heads included) and from one lone thread per group.
    #[test]
    fn teams_of_any_size_sample_the_same_completions() {
        let policy = micro_policy(false, 5, DType::F32).unwrap();
        let net = policy.network(false).unwrap();
        let w = loop_weights(&net)
            .unwrap()
            .expect("f32 CPU weights decode in loops");
        let prompts: Vec<Vec<u32>> = vec![(1..9).collect(), (30..34).collect(), (50..61).collect()];
        let seeds = [11, 12, 13];
        let params = SamplingParams {
            max_new_tokens: 12,
            ..Default::default()
        };
        let sample = |p: &[Vec<u32>], s: &[u64], threads: usize| {
            sample_team(&policy, &net, p, s, (4, &params), &w, threads).unwrap()
        };
        let alone = sample(&prompts, &seeds, 1);
        assert_eq!(alone.len(), 3);
        assert!(alone.iter().all(|g| g.len() == 4));
        for threads in [2, 3, 5] {
            assert!(
                sample(&prompts, &seeds, threads) == alone,
                "{threads} threads"
            );
        }
        let shards: Vec<Vec<Completion>> = (0..3)
            .flat_map(|i| sample(&prompts[i..=i], &seeds[i..=i], 1))
            .collect();
        assert!(shards == alone);
    }
}
