//! `Policy`: a model directory in memory (config, tokenizer, parameters) and what RL asks of
//! it: log-probabilities of completions (with gradients) and groups of sampled completions.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use super::chat::{ChatMessage, ChatTemplate};
use super::config::{Preset, Qwen2Config};
use super::decode::loop_weights;
use super::generate::{prefill_one, sample_candle, sample_team};
use super::kv_cache::KvCache;
use super::ops::OpPath;
use super::qwen2::{gather_logprobs, Attend, Qwen2, Rope};
use super::sampling::{Completion, SamplingParams};
use super::{init, ChatTokenizer, ModelError, Params, Result};
use crate::data::PromptFormat;
use crate::parallel::{map_chunks, worker_threads};

/// Rows (prompts x completions) up to which a sampling call on f32 CPU weights decodes as one
/// batch on a team of threads sharing each weight, rather than one shard of rows per thread.
/// With few rows a shard's thread reads every weight for a handful of dot products, and a
/// team reads each weight once (`chartrl bench --figure rollout --prompts P --completions C`:
/// 8 and 16 rows faster as a team, 32 the same within noise, 64 to 256 rows of evaluation
/// the same or a few percent slower; with the paired few-rows kernel, 64 and 128 rows within
/// noise). `CHARTRL_TEAM_ROWS` overrides it (see [`team_rows`]).
pub const TEAM_ROWS: usize = 32;

/// The rows up to which sampling decodes as a team: `CHARTRL_TEAM_ROWS`, else [`TEAM_ROWS`].
/// 0 leaves the team only to batches with fewer prompts than threads. Results do not depend
/// on it (a team and its shards draw the same tokens), only the speed does.
pub fn team_rows() -> usize {
    std::env::var("CHARTRL_TEAM_ROWS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(TEAM_ROWS)
}

/// A language model ready to sample and train.
pub struct Policy {
    pub config: Qwen2Config,
    pub tokenizer: ChatTokenizer,
    pub params: Params,
    /// The chat template the model shipped, if any.
    pub chat: Option<ChatTemplate>,
    /// Files of the directory the model came from that chartrl does not interpret but keeps
    /// (`tokenizer_config.json`, `chat_template.jinja`, `generation_config.json`,
    /// `special_tokens_map.json`), written back when it is saved.
    pub extra_files: Vec<(String, Vec<u8>)>,
    rope: Rope,
    device: Device,
}

/// The files of a model directory kept as they are through training (see
/// [`Policy::extra_files`]).
pub const KEPT_FILES: [&str; 4] = [
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Per-token log-probs of several scored spans, right-padded to `(rows, longest span)`.
pub struct SeqLogprobs {
    /// `log pi(token | prefix)` (f32, or f64 for an f64 model); tracked by autograd when
    /// computed for training.
    pub logp: Tensor,
    /// 1.0 on real tokens, 0.0 on padding.
    pub mask: Tensor,
    /// Entropy of each position's distribution (detached).
    pub entropy: Tensor,
}

/// The same for one prompt's group of completions.
pub type GroupLogprobs = SeqLogprobs;

/// The dtype a device computes in by default: f32 on CPU, bf16 on CUDA.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

impl Policy {
    pub fn new(
        config: Qwen2Config,
        tokenizer: ChatTokenizer,
        params: Params,
        device: &Device,
    ) -> Result<Self> {
        let rope = Rope::new(&config, params.dtype(), device)?;
        Ok(Self {
            chat: None,
            extra_files: Vec::new(),
            config,
            tokenizer,
            params,
            rope,
            device: device.clone(),
        })
    }

    /// A new model of a preset's architecture with seeded random weights.
    pub fn create(
        preset: &Preset,
        tokenizer: ChatTokenizer,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if tokenizer.vocab_size() > preset.vocab_size {
            return Err(ModelError::Invalid(format!(
                "tokenizer has {} tokens, more than the preset's vocab_size {}",
                tokenizer.vocab_size(),
                preset.vocab_size
            )));
        }
        let config = preset.to_config(tokenizer.eos_id());
        let params = init::init_params(&config, preset.initializer_range, seed, device)?
            .to_dtype(default_dtype(device))?;
        Self::new(config, tokenizer, params, device)
    }

    /// A new model of `preset`: a byte-level BPE trained on `corpus_size` texts of the
    /// synthetic warm-up split, and seeded random weights. Every preset model chartrl makes
    /// (`model init`, a script's `model("tiny")`, the benchmarks) comes from here.
    pub fn from_preset(
        preset: &Preset,
        corpus_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let corpus = crate::data::tokenizer_corpus(corpus_size, 0);
        let tokenizer = ChatTokenizer::train(corpus, preset.vocab_size)?;
        Self::create(preset, tokenizer, seed, device)
    }

    /// Loads a Hugging Face model directory (`config.json`, safetensors, `tokenizer.json`).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ModelError::NotAModelDir(dir.to_path_buf()));
        }
        let config = Qwen2Config::from_file(&cfg_path)?;
        let eos = config.eos_token_id.as_ref().map(|e| e.to_vec());
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = ChatTokenizer::load(&tok_path, eos)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::Tokenizer {
                path: tok_path,
                msg: format!(
                    "{} tokens, more than config.json's vocab_size {}: ids past it would index outside the embedding",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let params = Params::load_dir(dir, &config, dtype, device)?;
        tracing::info!(
            dir = %dir.display(),
            parameters = params.num_parameters(),
            ?dtype,
            "loaded model"
        );
        let mut policy = Self::new(config, tokenizer, params, device)?;
        policy.chat = ChatTemplate::load(dir)?;
        for name in KEPT_FILES {
            let path = dir.join(name);
            if path.is_file() {
                let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
                policy.extra_files.push((name.to_string(), bytes));
            }
        }
        Ok(policy)
    }

    /// The text the model reads for a rendered prompt: the text itself (`raw`), or the text
    /// as the user turn of the model's chat template, ending where the reply begins (`chat`).
    pub fn prompt_text(&self, text: &str, format: PromptFormat) -> Result<String> {
        match (format, &self.chat) {
            (PromptFormat::Raw, _) => Ok(text.to_string()),
            (PromptFormat::Chat, Some(t)) => t.render(&[ChatMessage::new("user", text)], true),
            (PromptFormat::Chat, None) => Err(ModelError::Invalid(
                "prompt_format `chat` needs the model's chat template, and this model has none (no chat_template in tokenizer_config.json, no chat_template.jinja); use prompt_format `raw`".into(),
            )),
        }
    }

    /// Writes `config.json`, `model.safetensors` and `tokenizer.json`: a directory Hugging Face
    /// `transformers` loads with `AutoModelForCausalLM.from_pretrained`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let dtype = self.params.dtype();
        let torch_dtype = match dtype {
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
            _ => "float32",
        };
        let cfg = dir.join("config.json");
        let json = serde_json::to_string_pretty(&self.config.to_hf_json(torch_dtype))
            .map_err(|e| ModelError::json(&cfg, e))?;
        crate::fsx::write(&cfg, json.as_bytes()).map_err(|e| ModelError::io(&e.path, e.source))?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        for (name, bytes) in &self.extra_files {
            let path = dir.join(name);
            crate::fsx::write(&path, bytes).map_err(|e| ModelError::io(&e.path, e.source))?;
        }
        self.params.save(&dir.join("model.safetensors"), dtype)
    }

    /// [`Policy::save`] into a temporary directory beside `dir`, then put in the place of
    /// whatever `dir` held: the directory is the old model or the new one, never a mix.
    pub fn save_replacing(&self, dir: &Path) -> Result<()> {
        let tmp = crate::fsx::temp_path(dir);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        }
        if let Err(e) = self.save(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        crate::fsx::replace_dir(&tmp, dir).map_err(|e| ModelError::io(&e.path, e.source))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network over the current weights: differentiable and tracked for training, fused and
    /// detached (no autograd graph) for sampling.
    pub fn network(&self, train: bool) -> Result<Qwen2> {
        let path = if train {
            OpPath::Differentiable
        } else {
            OpPath::Fused
        };
        Ok(Qwen2::new(
            &self.config,
            &self.params,
            &self.rope,
            path,
            train,
        )?)
    }

    /// Whether a prompt of `prompt_len` tokens and `new_tokens` more fit the model's positions.
    pub fn check_fits(&self, prompt_len: usize, new_tokens: usize) -> Result<()> {
        self.check_len(prompt_len + new_tokens)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.config.max_position_embeddings {
            return Err(ModelError::TooLong {
                len,
                max: self.config.max_position_embeddings,
            });
        }
        Ok(())
    }

    /// Log-probs of `seqs[i][score_from[i]..]` given the tokens before, for rows of any
    /// lengths in one batch (right padding; causal attention keeps padding out of real rows).
    pub fn sequence_logprobs(
        &self,
        seqs: &[Vec<u32>],
        score_from: &[usize],
        train: bool,
    ) -> Result<SeqLogprobs> {
        if seqs.is_empty() || seqs.len() != score_from.len() {
            return Err(ModelError::Invalid(
                "sequence_logprobs needs one start per row".into(),
            ));
        }
        for (s, &from) in seqs.iter().zip(score_from) {
            if from == 0 || from > s.len() {
                return Err(ModelError::Invalid(format!(
                    "score_from {from} outside 1..={} (the first token has no context)",
                    s.len()
                )));
            }
        }
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        self.check_len(t)?;
        let l = seqs
            .iter()
            .zip(score_from)
            .map(|(s, &f)| s.len() - f)
            .max()
            .unwrap_or(0)
            .max(1);
        let b = seqs.len();
        let pad = self.tokenizer.pad_id();
        // The network returns positions `first..t` of each row, the earliest any row scores.
        let first = score_from.iter().min().map_or(0, |f| f - 1);
        let kept = t - first;
        let mut ids = vec![pad; b * t];
        // Each scored position's row in the flattened `(b * kept)` hidden states and the token
        // it predicts; padding points at its row's first kept position, masked out.
        let mut at = vec![0u32; b * l];
        let mut targets = vec![pad; b * l];
        let mut mask = vec![0f32; b * l];
        for (i, s) in seqs.iter().enumerate() {
            ids[i * t..i * t + s.len()].copy_from_slice(s);
            at[i * l..(i + 1) * l].fill((i * kept) as u32);
            for j in 0..l {
                let p = score_from[i] - 1 + j;
                if p + 1 < s.len() {
                    at[i * l + j] = (i * kept + p - first) as u32;
                    targets[i * l + j] = s[p + 1];
                    mask[i * l + j] = 1.0;
                }
            }
        }
        let dev = &self.device;
        let net = self.network(train)?;
        let ids = Tensor::from_vec(ids, (b, t), dev)?;
        let (hidden, _) = net.forward_tail(&ids, Attend::Causal, None, first)?;
        // Only the scored positions go through the output head: a prompt's positions need
        // no logits (the head and its softmax over the vocabulary, forward and backward).
        let h = self.config.hidden_size;
        let scored = hidden
            .reshape((b * kept, h))?
            .index_select(&Tensor::from_vec(at, b * l, dev)?, 0)?
            .reshape((b, l, h))?;
        let logits = net.logits(&scored)?;
        let (logp, entropy) = gather_logprobs(&logits, &Tensor::from_vec(targets, (b, l), dev)?)?;
        Ok(SeqLogprobs {
            logp,
            mask: Tensor::from_vec(mask, (b, l), dev)?,
            entropy,
        })
    }

    /// Log-probs of a group of completions of one prompt. The prompt is run once and its keys
    /// and values shared by every completion (exact: causal attention never lets the prompt see
    /// the completions), which makes the training forward several times cheaper than running
    /// `G` copies of the prompt.
    ///
    /// Logits are divided by `temperature` first, so log-probs are those of the distribution
    /// completions were sampled from (as TRL does).
    pub fn group_logprobs(
        &self,
        prompt: &[u32],
        completions: &[Vec<u32>],
        temperature: f64,
        train: bool,
    ) -> Result<GroupLogprobs> {
        let g = completions.len();
        let l = completions.iter().map(Vec::len).max().unwrap_or(0);
        if prompt.is_empty() || g == 0 || l == 0 {
            return Err(ModelError::Invalid(
                "group_logprobs needs a prompt and at least one non-empty completion".into(),
            ));
        }
        self.check_len(prompt.len() + l)?;
        let dev = &self.device;
        let pad = self.tokenizer.pad_id();
        let net = self.network(train)?;
        let p = prompt.len();
        let prompt_ids = Tensor::from_slice(prompt, (1, p), dev)?;
        // Only the prompt's last position is scored (it predicts the first completion token);
        // the completions read the rest of the prompt through its keys and values.
        let (h_last, prompt_kv) = net.forward_tail(&prompt_ids, Attend::Causal, None, p - 1)?;
        let h_last = h_last.broadcast_as((g, 1, self.config.hidden_size))?;
        let mut targets = vec![pad; g * l];
        let mut mask = vec![0f32; g * l];
        for (i, c) in completions.iter().enumerate() {
            targets[i * l..i * l + c.len()].copy_from_slice(c);
            mask[i * l..i * l + c.len()]
                .iter_mut()
                .for_each(|m| *m = 1.0);
        }
        let hidden = if l > 1 {
            // Completion tokens 0..l-1 are inputs; the last token is only ever a target.
            let inputs: Vec<u32> = (0..g)
                .flat_map(|i| targets[i * l..i * l + l - 1].iter().copied())
                .collect();
            let inputs = Tensor::from_vec(inputs, (g, l - 1), dev)?;
            let (h, _) = net.forward(&inputs, Attend::Prefix(&prompt_kv))?;
            Tensor::cat(&[&h_last.contiguous()?, &h], 1)?
        } else {
            h_last.contiguous()?
        };
        let mut logits = net.logits(&hidden)?;
        if temperature != 1.0 {
            logits = logits.affine(1.0 / temperature, 0.0)?;
        }
        let (logp, entropy) = gather_logprobs(&logits, &Tensor::from_vec(targets, (g, l), dev)?)?;
        Ok(GroupLogprobs {
            logp,
            mask: Tensor::from_vec(mask, (g, l), dev)?,
            entropy,
        })
    }

    /// Log-prob of every token of `ids` given the ones before it (`None` for the first).
    pub fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<Option<f32>>> {
        if ids.len() < 2 {
            return Ok(ids.iter().map(|_| None).collect());
        }
        let out = self.sequence_logprobs(&[ids.to_vec()], &[1], false)?;
        let lp: Vec<f32> = out.logp.squeeze(0)?.to_vec1()?;
        Ok(std::iter::once(None)
            .chain(lp.into_iter().map(Some))
            .collect())
    }

    /// Samples `n` completions of `prompt` (see [`Policy::sample_groups`]).
    pub fn sample_group<R: Rng>(
        &self,
        prompt: &[u32],
        n: usize,
        params: &SamplingParams,
        rng: &mut R,
    ) -> Result<Vec<Completion>> {
        let mut groups = self.sample_groups(&[prompt.to_vec()], n, params, rng)?;
        Ok(groups.pop().unwrap_or_default())
    }

    /// Samples `n` completions of each prompt.
    ///
    /// Each group gets its own RNG, seeded in order from `rng`, so the result depends on the
    /// `rng` state alone and not on how the work is split. No autograd graph is built. On f32
    /// CPU weights a batch of at most [`team_rows`] rows (a training step's rollout), or of
    /// fewer prompts than threads, decodes as one batch on a team of [`worker_threads`]
    /// threads, each with its share of every weight (`generate.rs`); larger batches
    /// (evaluation) are split into shards of whole groups, one per thread, each decoding its
    /// rows alone. Elsewhere each shard decodes with candle's forward.
    pub fn sample_groups<R: Rng>(
        &self,
        prompts: &[Vec<u32>],
        n: usize,
        params: &SamplingParams,
        rng: &mut R,
    ) -> Result<Vec<Vec<Completion>>> {
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) || n == 0 {
            return Err(ModelError::Invalid(
                "sampling needs non-empty prompts and n >= 1".into(),
            ));
        }
        let seeds: Vec<u64> = prompts.iter().map(|_| rng.random()).collect();
        tracing::debug!(
            groups = prompts.len(),
            n,
            max_new_tokens = params.max_new_tokens,
            "sampling"
        );
        let net = self.network(false)?;
        let weights = loop_weights(&net)?;
        let threads = worker_threads();
        if let Some(w) = &weights {
            if prompts.len() * n <= team_rows() || prompts.len() < threads {
                return sample_team(self, &net, prompts, &seeds, (n, params), w, threads);
            }
        }
        let workers = threads.min(prompts.len()).max(1);
        let chunk = prompts.len().div_ceil(workers);
        let shards: Vec<(&[Vec<u32>], &[u64])> =
            prompts.chunks(chunk).zip(seeds.chunks(chunk)).collect();
        let results = map_chunks(
            threads,
            &shards,
            |_, &(p, s)| match &weights {
                Some(w) => sample_team(self, &net, p, s, (n, params), w, 1),
                None => sample_candle(self, p, s, n, params),
            },
            || ModelError::Invalid("a sampling thread panicked".into()),
        );
        let mut out = Vec::with_capacity(prompts.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Runs each prompt once and lays its keys and values into `n` rows of a shared cache,
    /// right-aligned at slot `longest` (left padding). Returns the cache and each prompt's
    /// next-token logits.
    pub(super) fn prefill(
        &self,
        net: &Qwen2,
        prompts: &[Vec<u32>],
        n: usize,
        capacity: usize,
    ) -> Result<(KvCache, Vec<Vec<f32>>)> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let layers = self.config.num_hidden_layers;
        let mut per_layer: Vec<(Vec<Tensor>, Vec<Tensor>)> = vec![(Vec::new(), Vec::new()); layers];
        let mut first = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let (kv, logits) = prefill_one(net, prompt)?;
            first.push(logits);
            let left = longest - prompt.len();
            let right = capacity - longest;
            for (l, layer_kv) in kv.into_iter().enumerate() {
                per_layer[l]
                    .0
                    .push(place_rows(&layer_kv.k, n, left, right)?);
                per_layer[l]
                    .1
                    .push(place_rows(&layer_kv.v, n, left, right)?);
            }
        }
        let mut buffers = Vec::with_capacity(layers);
        for (ks, vs) in per_layer {
            buffers.push((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?));
        }
        Ok((KvCache::from_buffers(buffers, longest)?, first))
    }
}

/// `kv` `(1, heads, len, dim)` repeated into `n` rows with `left` empty slots before it and
/// `right` after it.
fn place_rows(kv: &Tensor, n: usize, left: usize, right: usize) -> Result<Tensor> {
    let (_, h, len, d) = kv.dims4()?;
    let body = kv.broadcast_as((n, h, len, d))?;
    let mut parts = Vec::with_capacity(3);
    if left > 0 {
        parts.push(Tensor::zeros((n, h, left, d), kv.dtype(), kv.device())?);
    }
    parts.push(body.contiguous()?);
    if right > 0 {
        parts.push(Tensor::zeros((n, h, right, d), kv.dtype(), kv.device())?);
    }
    Ok(Tensor::cat(&parts, 2)?)
}

/// `(rows, 1, 1, capacity)` with `-inf` on each row's left padding, or `None` when every prompt
/// has the same length.
pub(super) fn left_pad_mask(
    prompts: &[Vec<u32>],
    n: usize,
    capacity: usize,
    dtype: DType,
    dev: &Device,
) -> Result<Option<Tensor>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if prompts.iter().all(|p| p.len() == longest) {
        return Ok(None);
    }
    let mut mask = Vec::with_capacity(prompts.len() * n * capacity);
    for p in prompts {
        let left = longest - p.len();
        for _ in 0..n {
            mask.extend((0..capacity).map(|j| if j < left { f32::NEG_INFINITY } else { 0.0 }));
        }
    }
    let rows = prompts.len() * n;
    Ok(Some(
        Tensor::from_vec(mask, (rows, 1, 1, capacity), dev)?.to_dtype(dtype)?,
    ))
}
