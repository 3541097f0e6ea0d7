//! `chartrl rewards score`: every built-in reward of each completion, as JSON lines.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::data::DataSource;
use crate::model::ChatTokenizer;
use crate::reward::{extract_answer, Builtin, Reward, RewardContext, Scored};

#[derive(Subcommand, Debug)]
pub enum RewardsCommand {
    /// Score completions with every built-in reward; one JSON object per completion.
    ///
    /// Completions are JSONL `{"id": ..., "completion": ...}`, matched to samples by id.
    /// Token counts (for `overlong`) use the tokenizer of --model, else whitespace words.
    ///
    /// Example: chartrl rewards score --data data/test.jsonl --completions completions.jsonl
    Score(ScoreArgs),
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Samples: .jsonl (chartrl) or .json (ChartQA)
    #[arg(long)]
    data: PathBuf,
    /// Completions: JSONL of {"id", "completion"}
    #[arg(long)]
    completions: PathBuf,
    /// A model directory whose tokenizer counts completion tokens
    #[arg(long)]
    model: Option<PathBuf>,
    /// The completions' token limit, which `overlong` punishes lengths near (default: the
    /// trainer's max_completion_length)
    #[arg(long)]
    max_completion_length: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionLine {
    id: String,
    completion: String,
}

pub fn run(cmd: RewardsCommand) -> anyhow::Result<()> {
    match cmd {
        RewardsCommand::Score(a) => score(a),
    }
}

fn score(a: ScoreArgs) -> anyhow::Result<()> {
    let samples = DataSource::from_path(&a.data)?.load()?;
    let by_id: HashMap<&str, usize> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let tokenizer = match &a.model {
        Some(dir) => Some(ChatTokenizer::load(&dir.join("tokenizer.json"), None)?),
        None => None,
    };
    let text = std::fs::read_to_string(&a.completions)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.completions.display()))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: CompletionLine = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", a.completions.display(), i + 1))?;
        let idx = *by_id.get(c.id.as_str()).ok_or_else(|| {
            anyhow::anyhow!(
                "{}:{}: no sample with id `{}` in {}",
                a.completions.display(),
                i + 1,
                c.id,
                a.data.display()
            )
        })?;
        let tokens = match &tokenizer {
            Some(t) => t.encode(&c.completion)?.len(),
            None => c.completion.split_whitespace().count(),
        };
        lines.push((idx, c, tokens));
    }
    if lines.is_empty() {
        anyhow::bail!("{}: no completions", a.completions.display());
    }
    let batch: Vec<Scored> = lines
        .iter()
        .map(|(idx, c, tokens)| Scored {
            sample: &samples[*idx],
            completion: &c.completion,
            tokens: *tokens,
        })
        .collect();
    let ctx = RewardContext {
        max_completion_length: match a.max_completion_length {
            Some(n) => n,
            None => {
                crate::workspace::Workspace::current()
                    .trainer_defaults()?
                    .max_completion_length
            }
        },
    };
    let rewards = Builtin::all(&ctx);
    let mut columns = Vec::new();
    for r in &rewards {
        columns.push((r.name().to_string(), r.score(&batch)?));
    }
    for (i, s) in batch.iter().enumerate() {
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), s.sample.id.clone().into());
        obj.insert(
            "answer".into(),
            serde_json::json!(extract_answer(s.completion)),
        );
        obj.insert("gold".into(), s.sample.answer.clone().into());
        obj.insert("tokens".into(), s.tokens.into());
        for (name, values) in &columns {
            obj.insert(name.clone(), serde_json::json!(values[i]));
        }
        println!("{}", serde_json::Value::Object(obj));
    }
    Ok(())
}
