//! The products of a decoding step alone (`chartrl bench --figure products`): the few-row
//! kernel over the weight shapes of a preset's layers (the output head aside), on every
//! worker thread at once. Split two ways: each thread with its own rows against every weight
//! (how evaluation's shards decode), and each thread with its share of every weight's rows
//! against all rows, meeting the others at a barrier after each product (how a rollout's team
//! decodes). Each measured twice: over every layer, where weights larger than the CPU's cache
//! stream from memory on each step, and over the first layer repeated, which stays in cache
//! when one layer fits. The gaps say whether decoding waits on memory or on arithmetic, which
//! the whole-step figures cannot tell apart.

use serde::Serialize;

use super::{time_reps, Timing, Workload};
use crate::model::few_rows::matmul_t;
use crate::model::team::{share, SpinBarrier};
use crate::model::Preset;
use crate::train::TrainError;

/// Decoding steps per timed repetition.
const STEPS: usize = 20;

/// One measured scope of the products.
#[derive(Debug, Clone, Serialize)]
pub struct ProductsFigure {
    pub figure: &'static str,
    pub preset: String,
    /// `all layers` or `one layer` (the first, repeated: in cache).
    pub scope: &'static str,
    /// `rows`: each thread its rows against whole weights; `weights`: each thread its share
    /// of every weight against all rows, with a barrier after each product.
    pub split: &'static str,
    /// Rows each thread multiplies per product.
    pub rows: usize,
    pub threads: usize,
    /// Time of one decoding step's products, every thread's at once (median over reps).
    pub ms_per_step: f64,
    pub ms_per_step_min: f64,
    pub ms_per_step_max: f64,
    /// Arithmetic over all threads, GFLOP/s.
    pub gflops: f64,
    /// Weight bytes read over all threads, GB/s.
    pub weight_gb_per_s: f64,
    pub weight_mb: f64,
}

/// The `(rows, inputs)` of each weight one layer's decoding step multiplies by.
fn layer_shapes(p: &Preset) -> [(usize, usize); 4] {
    let d = p.hidden_size / p.num_attention_heads.max(1);
    let (h, i) = (p.hidden_size, p.intermediate_size);
    [
        ((p.num_attention_heads + 2 * p.num_key_value_heads) * d, h),
        (h, p.num_attention_heads * d),
        (2 * i, h),
        (h, i),
    ]
}

/// Times the products of `threads` threads decoding the workload's rows, split by rows and
/// by weights, over every layer and over the first layer alone.
pub fn decode_products(
    preset_name: &str,
    preset: &Preset,
    workload: &Workload,
    threads: usize,
) -> Result<Vec<ProductsFigure>, TrainError> {
    let total_rows = workload.prompts * workload.completions;
    let shapes = layer_shapes(preset);
    // Not zeros: a zeroed allocation maps one shared page, which would stay in cache.
    let fill = |n: usize, salt: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + salt) % 13) as f32 * 0.01)
            .collect()
    };
    let layers: Vec<Vec<Vec<f32>>> = (0..preset.num_hidden_layers)
        .map(|l| shapes.iter().map(|&(n, k)| fill(n * k, l)).collect())
        .collect();
    let mut figures = Vec::with_capacity(4);
    for split in ["rows", "weights"] {
        // By rows as shards split them: whole prompts per thread, a prompt's completions
        // together; by weights, every thread takes every row.
        let (threads, rows) = match split {
            "rows" => {
                let t = threads.min(workload.prompts).max(1);
                (
                    t,
                    (workload.prompts.div_ceil(t) * workload.completions).max(1),
                )
            }
            _ => (threads.max(1), total_rows.max(1)),
        };
        for (scope, order) in [
            ("all layers", (0..layers.len()).collect::<Vec<_>>()),
            ("one layer", vec![0; layers.len()]),
        ] {
            let barrier = SpinBarrier::new(threads);
            let times = time_reps(workload, || {
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (layers, order, barrier) = (&layers, &order, &barrier);
                        let team = (split == "weights").then_some((t, threads, barrier));
                        s.spawn(move || steps(layers, order, &shapes, rows, team));
                    }
                });
                Ok(())
            })?;
            let per_step: Vec<f64> = times.iter().map(|t| t / STEPS as f64).collect();
            let timing = Timing::of(&per_step);
            let params: usize = shapes.iter().map(|&(n, k)| n * k).sum::<usize>() * order.len();
            let readers = if split == "rows" { threads } else { 1 };
            let multiplied = if split == "rows" {
                rows * threads
            } else {
                rows
            };
            figures.push(ProductsFigure {
                figure: "products",
                preset: preset_name.to_string(),
                scope,
                split,
                rows,
                threads,
                ms_per_step: timing.seconds * 1e3,
                ms_per_step_min: timing.seconds_min * 1e3,
                ms_per_step_max: timing.seconds_max * 1e3,
                gflops: (2 * multiplied * params) as f64 / timing.seconds / 1e9,
                weight_gb_per_s: (params * 4 * readers) as f64 / timing.seconds / 1e9,
                weight_mb: (params * 4) as f64 / 1e6,
            });
        }
    }
    Ok(figures)
}

/// [`STEPS`] decoding steps of one thread's products: `rows` rows through the layers `order`,
/// against whole weights, or as member `t` of a team of `n` meeting at `barrier` after each
/// product, against its share of each weight's rows.
fn steps(
    layers: &[Vec<Vec<f32>>],
    order: &[usize],
    shapes: &[(usize, usize); 4],
    rows: usize,
    team: Option<(usize, usize, &SpinBarrier)>,
) {
    let salt = team.map_or(0, |(t, _, _)| t);
    let mut xs: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(_, k)| {
            (0..rows * k)
                .map(|i| ((i + salt) % 5) as f32 * 0.1)
                .collect()
        })
        .collect();
    let part = |n: usize| team.map_or(0..n, |(t, threads, _)| share(n, threads, t, 4));
    let mut ys: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(n, _)| vec![0f32; rows * part(n).len()])
        .collect();
    for _ in 0..STEPS {
        for &l in order {
            for (s, &(n, k)) in shapes.iter().enumerate() {
                let r = part(n);
                matmul_t(&xs[s], &layers[l][s][r.start * k..r.end * k], k, &mut ys[s]);
                if let Some((_, _, barrier)) = team {
                    if barrier.wait().is_err() {
                        return;
                    }
                }
            }
        }
        // Feed a little of the output back so no step can be skipped as unused.
        xs[0][0] = ys[0].first().copied().unwrap_or(0.0) * 1e-6;
    }
    std::hint::black_box(&ys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_the_decoders_products() {
        let p = Preset::builtin("small").unwrap();
        // small: 8 heads of 64, 4 key/value heads, 1408 intermediate, hidden 512.
        assert_eq!(
            layer_shapes(&p),
            [(1024, 512), (512, 512), (2816, 512), (512, 1408)]
        );
        let w = Workload {
            reps: 1,
            warmup: 0,
            ..Workload::default()
        };
        let tiny = Preset::builtin("tiny").unwrap();
        let f = decode_products("tiny", &tiny, &w, 2).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!((f[0].split, f[0].rows), ("rows", 4));
        assert_eq!((f[2].split, f[2].rows), ("weights", 8));
        assert!(f.iter().all(|f| f.gflops > 0.0 && f.ms_per_step > 0.0));
        assert!((f[0].weight_mb - 4.0 * 4.0 * 737_280.0 / 1e6).abs() < 1e-6);
    }
}
