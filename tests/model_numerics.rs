//! The policy's numerics against independent references: candle-transformers' qwen2 for the
//! logits, finite differences for the gradients, full recomputation for the KV cache.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2 as reference;
use chartrl::model::testing::micro_policy;
use chartrl::model::Attend;
use chartrl::model::{Policy, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Logits of candle-transformers' qwen2 loaded from the directory `policy` saved.
fn reference_logits(policy: &Policy, dir: &std::path::Path, ids: &Tensor) -> Tensor {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg: reference::Config = serde_json::from_str(&text).unwrap();
    let st = dir.join("model.safetensors");
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[st], DType::F32, &Device::Cpu).unwrap() };
    let mut model = reference::Model::new(&cfg, vb).unwrap();
    let hidden = model.forward(ids, 0, None).unwrap();
    let head_name = if policy.config.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let head = policy.params.get(head_name).unwrap().as_tensor().clone();
    hidden.broadcast_matmul(&head.t().unwrap()).unwrap()
}

#[test]
fn logits_match_candle_transformers_qwen2_tied_and_untied() {
    for tied in [true, false] {
        let policy = micro_policy(tied, 7, DType::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        policy.save(dir.path()).unwrap();
        let ids = Tensor::from_vec(random_ids(64, 300, 1), (1, 64), &Device::Cpu).unwrap();
        let expected = reference_logits(&policy, dir.path(), &ids);
        for train in [true, false] {
            let net = policy.network(train).unwrap();
            let (hidden, _) = net.forward(&ids, Attend::Causal).unwrap();
            let ours = net.logits(&hidden).unwrap();
            let diff = max_abs_diff(&ours, &expected);
            assert!(
                diff <= 1e-4,
                "tied={tied} train={train}: max abs diff {diff}"
            );
        }
    }
}

/// Each scored token's log-prob and entropy against candle-transformers' qwen2 run on its
/// row alone: the batch pads rows of different lengths and scores each from its own start,
/// and only the scored positions go through the output head.
#[test]
fn scored_logprobs_match_candle_transformers_qwen2_row_by_row() {
    let policy = micro_policy(false, 13, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    policy.save(dir.path()).unwrap();
    let seqs = vec![
        random_ids(17, 300, 21),
        random_ids(40, 300, 22),
        random_ids(9, 300, 23),
    ];
    let from = [12, 3, 8];
    let out = policy.sequence_logprobs(&seqs, &from, false).unwrap();
    let logp: Vec<Vec<f32>> = out.logp.to_vec2().unwrap();
    let entropy: Vec<Vec<f32>> = out.entropy.to_vec2().unwrap();
    let mask: Vec<Vec<f32>> = out.mask.to_vec2().unwrap();
    for (i, seq) in seqs.iter().enumerate() {
        let ids = Tensor::from_slice(seq, (1, seq.len()), &Device::Cpu).unwrap();
        let lsm = candle_nn::ops::log_softmax(
            &reference_logits(&policy, dir.path(), &ids)
                .squeeze(0)
                .unwrap(),
            D::Minus1,
        )
        .unwrap();
        let lsm: Vec<Vec<f32>> = lsm.to_vec2().unwrap();
        let scored = seq.len() - from[i];
        assert_eq!(mask[i].iter().sum::<f32>() as usize, scored, "row {i}");
        for j in 0..scored {
            let (p, next) = (from[i] - 1 + j, seq[from[i] + j] as usize);
            assert!(
                (logp[i][j] - lsm[p][next]).abs() < 1e-4,
                "row {i} token {j}"
            );
            let h: f32 = -lsm[p].iter().map(|&l| l.exp() * l).sum::<f32>();
            assert!(
                (entropy[i][j] - h).abs() < 1e-4,
                "row {i} token {j} entropy"
            );
        }
    }
}

#[test]
fn every_parameter_gets_a_gradient_from_a_logprob_loss() {
    for tied in [true, false] {
        let policy = micro_policy(tied, 3, DType::F32).unwrap();
        let seqs = vec![random_ids(20, 300, 2), random_ids(13, 300, 3)];
        let out = policy.sequence_logprobs(&seqs, &[5, 4], true).unwrap();
        let loss = (out.logp * &out.mask)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in policy.params.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("tied={tied}: no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "tied={tied}: {name} gradient norm {norm}"
            );
        }
    }
}

#[test]
fn autograd_agrees_with_finite_differences_in_f64() {
    let policy = micro_policy(false, 11, DType::F64).unwrap();
    let seqs = vec![random_ids(12, 300, 4), random_ids(9, 300, 5)];
    let loss_of = |p: &Policy| -> Tensor {
        let out = p.sequence_logprobs(&seqs, &[3, 2], true).unwrap();
        let w = Tensor::arange(0f64, out.logp.dim(1).unwrap() as f64, &Device::Cpu)
            .unwrap()
            .affine(0.1, 1.0)
            .unwrap();
        (out.logp.to_dtype(DType::F64).unwrap() * out.mask.to_dtype(DType::F64).unwrap())
            .unwrap()
            .broadcast_mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss_of(&policy).backward().unwrap();
    let h = 1e-6;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut checked = 0;
    for (name, var) in policy.params.iter() {
        let g_all: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for _ in 0..2 {
            let i = rng.random_range(0..base.len());
            let eval = |delta: f64| -> f64 {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_of(&policy).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let ag = g_all[i];
            let rel = (fd - ag).abs() / (fd.abs() + ag.abs()).max(1e-6);
            assert!(
                rel <= 1e-3,
                "{name}[{i}]: finite difference {fd}, autograd {ag}, relative error {rel}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30);
}

#[test]
fn kv_cache_sampling_matches_full_recomputation() {
    let policy = micro_policy(true, 5, DType::F32).unwrap();
    let prompts = vec![random_ids(17, 300, 6), random_ids(9, 300, 7)];
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: 24,
        stop_at_eos: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let groups = policy
        .sample_groups(&prompts, 2, &greedy, &mut rng)
        .unwrap();
    for (prompt, group) in prompts.iter().zip(&groups) {
        for c in group {
            // Recompute: the whole sequence at once, no cache, argmax at every position.
            let mut seq = prompt.clone();
            for (step, &tok) in c.tokens.iter().enumerate() {
                let net = policy.network(false).unwrap();
                let ids = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
                let (h, _) = net.forward(&ids, Attend::Causal).unwrap();
                let logits = net.logits(&h.narrow(1, seq.len() - 1, 1).unwrap()).unwrap();
                let logits = logits.flatten_all().unwrap();
                let argmax = logits
                    .argmax(D::Minus1)
                    .unwrap()
                    .to_scalar::<u32>()
                    .unwrap();
                assert_eq!(
                    argmax, tok,
                    "greedy token {step} differs from recomputation"
                );
                let lse = logits.exp().unwrap().sum_all().unwrap().log().unwrap();
                let lp = (logits.get(tok as usize).unwrap() - lse)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    (lp - c.logprobs[step]).abs() <= 1e-4,
                    "step {step}: {lp} vs {}",
                    c.logprobs[step]
                );
                seq.push(tok);
            }
        }
    }
}

#[test]
fn a_rows_logprobs_do_not_depend_on_the_rest_of_the_batch() {
    let policy = micro_policy(false, 8, DType::F32).unwrap();
    let a = random_ids(30, 300, 10);
    let others = [random_ids(7, 300, 11), random_ids(45, 300, 12)];
    let alone = policy
        .sequence_logprobs(std::slice::from_ref(&a), &[10], false)
        .unwrap();
    let batch = policy
        .sequence_logprobs(
            &[others[0].clone(), a.clone(), others[1].clone()],
            &[3, 10, 20],
            false,
        )
        .unwrap();
    let n = alone.logp.dim(1).unwrap();
    let in_batch = batch.logp.get(1).unwrap().narrow(0, 0, n).unwrap();
    assert!(max_abs_diff(&alone.logp.squeeze(0).unwrap(), &in_batch) <= 1e-5);
    let mask: Vec<f32> = batch.mask.get(1).unwrap().to_vec1().unwrap();
    assert_eq!(mask.iter().sum::<f32>() as usize, 20);

    // The group path (prompt computed once, shared) gives the same numbers.
    let prompt = a[..10].to_vec();
    let comps = vec![a[10..].to_vec(), a[10..15].to_vec()];
    let group = policy.group_logprobs(&prompt, &comps, 1.0, true).unwrap();
    let first = group.logp.get(0).unwrap();
    assert!(max_abs_diff(&first, &alone.logp.squeeze(0).unwrap()) <= 1e-5);
    let second = group.logp.get(1).unwrap().narrow(0, 0, 5).unwrap();
    assert!(
        max_abs_diff(
            &second,
            &alone.logp.squeeze(0).unwrap().narrow(0, 0, 5).unwrap()
        ) <= 1e-5
    );
}

#[test]
fn batched_groups_of_different_prompt_lengths_sample_as_they_would_alone() {
    let policy = micro_policy(true, 2, DType::F32).unwrap();
    let prompts = vec![
        random_ids(5, 300, 20),
        random_ids(23, 300, 21),
        random_ids(12, 300, 22),
    ];
    let params = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        max_new_tokens: 16,
        stop_at_eos: true,
    };
    let together = policy
        .sample_groups(&prompts, 3, &params, &mut ChaCha8Rng::seed_from_u64(4))
        .unwrap();
    // The same seeds, drawn the same way, one group per call.
    let mut seeder = ChaCha8Rng::seed_from_u64(4);
    let seeds: Vec<u64> = prompts.iter().map(|_| seeder.random()).collect();
    for ((prompt, seed), expected) in prompts.iter().zip(seeds).zip(&together) {
        let mut one = ChaCha8Rng::seed_from_u64(0);
        // sample_groups seeds each group from the caller's rng: feed one whose first draw is `seed`.
        let alone = policy
            .sample_groups(
                std::slice::from_ref(prompt),
                3,
                &params,
                &mut FixedFirst(seed, &mut one),
            )
            .unwrap();
        assert_eq!(alone[0].len(), expected.len());
        for (a, b) in alone[0].iter().zip(expected) {
            assert_eq!(a.tokens, b.tokens);
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() <= 1e-4);
            }
        }
    }
}

/// An RNG whose first `u64` is fixed (the per-group seed), then defers to another.
struct FixedFirst<'a>(u64, &'a mut ChaCha8Rng);

impl rand::RngCore for FixedFirst<'_> {
    fn next_u32(&mut self) -> u32 {
        self.1.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        std::mem::replace(&mut self.0, self.1.next_u64())
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.1.fill_bytes(dst)
    }
}

#[test]
fn same_seed_same_samples_and_save_load_round_trips() {
    let policy = micro_policy(true, 1, DType::F32).unwrap();
    let prompt = random_ids(10, 300, 30);
    let params = SamplingParams {
        max_new_tokens: 20,
        ..SamplingParams::default()
    };
    let a = policy
        .sample_group(&prompt, 4, &params, &mut ChaCha8Rng::seed_from_u64(42))
        .unwrap();
    let b = policy
        .sample_group(&prompt, 4, &params, &mut ChaCha8Rng::seed_from_u64(42))
        .unwrap();
    let c = policy
        .sample_group(&prompt, 4, &params, &mut ChaCha8Rng::seed_from_u64(43))
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);

    let dir = tempfile::tempdir().unwrap();
    policy.save(dir.path()).unwrap();
    let loaded = Policy::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let ids = random_ids(25, 300, 31);
    assert_eq!(
        policy.token_logprobs(&ids).unwrap(),
        loaded.token_logprobs(&ids).unwrap()
    );
    assert_eq!(policy.tokenizer.eos_ids(), loaded.tokenizer.eos_ids());
}

#[test]
fn sharded_bf16_checkpoints_load_through_the_same_path() {
    use std::collections::HashMap;
    let policy = micro_policy(false, 13, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    policy.save(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    // Two bf16 shards and an index, as a downloaded Qwen2.5 checkpoint has.
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (i, (name, var)) in policy.params.iter().enumerate() {
        let shard = i % 2;
        shards[shard].insert(name.clone(), var.as_tensor().to_dtype(DType::BF16).unwrap());
        weight_map.insert(
            name.clone(),
            format!("model-0000{}-of-00002.safetensors", shard + 1).into(),
        );
    }
    for (i, shard) in shards.iter().enumerate() {
        let path = dir
            .path()
            .join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(shard, path).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let loaded = Policy::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let ids = random_ids(20, 300, 40);
    let a = policy.token_logprobs(&ids).unwrap();
    let b = loaded.token_logprobs(&ids).unwrap();
    for (x, y) in a.iter().zip(&b).skip(1) {
        // bf16 keeps ~3 significant digits of each weight.
        assert!((x.unwrap() - y.unwrap()).abs() < 0.1, "{x:?} vs {y:?}");
    }
    // A shard listed in the index but missing is an error naming the file.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = Policy::load(dir.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}
