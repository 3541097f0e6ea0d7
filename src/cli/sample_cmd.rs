//! `chartrl sample`: completions of one question from a run's model or a model directory,
//! each with its token count, log-prob and every reward's score (the original project's
//! `generate_samples.py`).

use std::path::PathBuf;

use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::target::{Compute, Questions, Sampling, Target};
use super::train_cmd::DEFAULT_DB;
use crate::data::Sample;
use crate::model::{default_dtype, Completion, Policy, SamplingParams};
use crate::reward::{is_correct, RewardContext, RewardScores, RewardSet, RewardSpec, Scored};
use crate::runs::evaluate::run_model;
use crate::store::Store;
use crate::workspace::Workspace;

/// Sample completions of a question and score them with each reward.
///
/// Example: chartrl sample --run nsr-n100-1a2b3c4d --index 7 -n 8
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct SampleArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    questions: Questions,
    /// Which question (0-based)
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Ask this prompt instead (no gold answer, so no scores)
    #[arg(long)]
    prompt: Option<String>,
    /// Completions to draw
    #[arg(short = 'n', long, default_value_t = 4)]
    n: usize,
    #[command(flatten)]
    sampling: Sampling,
    #[command(flatten)]
    compute: Compute,
    /// The run store (with --run)
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
}

pub fn run(a: SampleArgs) -> anyhow::Result<()> {
    let (dir, specs) = model_and_rewards(&a)?;
    let ws = Workspace::current();
    let specs = match specs {
        Some(s) => s,
        None => ws.trainer_defaults()?.rewards,
    };
    let dev = a.compute.device()?;
    let policy = Policy::load(&dir, &dev, default_dtype(&dev))?;
    let (text, sample) = match &a.prompt {
        Some(p) => (p.clone(), None),
        None => {
            let s = question(&a)?;
            println!("question {} ({}): gold answer {}", a.index, s.id, s.answer);
            (ws.prompt_template()?.render(&s), Some(s))
        }
    };
    let prompt = policy.prompt_text(&text, a.compute.format())?;
    println!("--- prompt ---\n{prompt}");
    let ids = policy.tokenizer.encode(&prompt)?;
    let params = SamplingParams {
        temperature: a.sampling.temperature,
        top_p: a.sampling.top_p,
        max_new_tokens: a.sampling.max_new_tokens,
        stop_at_eos: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(a.sampling.seed);
    let start = std::time::Instant::now();
    let completions = policy.sample_group(&ids, a.n, &params, &mut rng)?;
    let secs = start.elapsed().as_secs_f64();
    let ctx = RewardContext {
        max_completion_length: a.sampling.max_new_tokens,
    };
    let scored = match &sample {
        Some(s) => Some(score(s, &completions, specs, &ctx)?),
        None => None,
    };
    let correct = print_completions(&completions, scored.as_ref());
    let total: usize = completions.iter().map(|c| c.tokens.len()).sum();
    if sample.is_some() {
        println!("--- {correct}/{} correct ---", completions.len());
    }
    println!(
        "--- {total} tokens in {secs:.2}s ({:.0} tokens/s, prompt {} tokens) ---",
        total as f64 / secs,
        ids.len()
    );
    Ok(())
}

/// The model to sample (a run's, or a directory) and, for a run, its reward functions.
fn model_and_rewards(a: &SampleArgs) -> anyhow::Result<(PathBuf, Option<Vec<RewardSpec>>)> {
    match (&a.target.run, &a.target.model) {
        (Some(name), _) => {
            let store = Store::open_existing(&a.db)?;
            let run = store.find_run(name)?;
            let (dir, step) = run_model(&store, &run)?;
            println!("run {} at step {step}: {}", run.name, dir.display());
            Ok((dir, crate::runs::config::RunConfig::of(&run).rewards()))
        }
        (None, Some(m)) => Ok((super::model_dir(m)?.to_path_buf(), None)),
        (None, None) => anyhow::bail!("give --run RUN or --model DIR"),
    }
}

/// The completions scored against the question by the built-in rewards among `specs`.
fn score<'a>(
    sample: &'a Sample,
    completions: &'a [Completion],
    specs: Vec<RewardSpec>,
    ctx: &RewardContext,
) -> anyhow::Result<(RewardScores, Vec<Scored<'a>>)> {
    let batch = crate::train::rollout::scored(sample, completions);
    // Rewards a script defined are not known here; those specs are left out.
    let known: Vec<RewardSpec> = specs
        .into_iter()
        .filter(|sp| crate::reward::Builtin::from_name(&sp.name, &sp.params, ctx).is_ok())
        .collect();
    Ok((RewardSet::from_specs(&known, ctx)?.score(&batch)?, batch))
}

/// Prints each completion with its length, ending and scores; returns how many were correct.
fn print_completions(
    completions: &[Completion],
    scored: Option<&(RewardScores, Vec<Scored>)>,
) -> usize {
    let mut correct = 0;
    for (i, c) in completions.iter().enumerate() {
        let lp: f32 = c.logprobs.iter().sum();
        let end = if c.finished { "eos" } else { "max tokens" };
        let mut head = format!(
            "--- completion {i} ({} tokens, {end}, log-prob {lp:.2}",
            c.tokens.len()
        );
        if let Some((s, batch)) = scored {
            let ok = is_correct(&batch[i]);
            correct += usize::from(ok);
            head.push_str(if ok { ", CORRECT" } else { ", wrong" });
            for (name, values) in &s.per_function {
                head.push_str(&format!(", {name} {:.2}", values[i]));
            }
            head.push_str(&format!(", total {:.2}", s.total[i]));
        }
        println!("{head}) ---\n{}", c.text);
    }
    correct
}

fn question(a: &SampleArgs) -> anyhow::Result<Sample> {
    let mut all = a.questions.spec().samples(a.index + 1)?;
    if all.len() <= a.index {
        anyhow::bail!(
            "--index {}: the data has only {} questions",
            a.index,
            all.len()
        );
    }
    Ok(all.swap_remove(a.index))
}
