//! The products of a decoding step alone (`chartrl bench --figure products`): the few-row
//! kernel over the weight shapes of a preset's layers (the output head aside), on every
//! worker thread at once, each thread with its own rows as sampling splits them. Measured
//! twice: over every layer, where weights larger than the CPU's cache stream from memory on
//! each step, and over the first layer repeated, which stays in cache. The gap between the
//! two says whether decoding waits on memory or on arithmetic, which the whole-step figures
//! cannot tell apart.

use serde::Serialize;

use super::{time_reps, Timing, Workload};
use crate::model::few_rows::matmul_t;
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
    /// Rows each thread multiplies per product (one per sequence it decodes).
    pub rows: usize,
    pub threads: usize,
    /// Time of one decoding step's products, every thread's at once (median over reps).
    pub ms_per_step: f64,
    pub ms_per_step_min: f64,
    pub ms_per_step_max: f64,
    /// Arithmetic over all threads, GFLOP/s.
    pub gflops: f64,
    /// Weight bytes read over all threads, GB/s (each thread reads every weight).
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

/// Times the products of `threads` threads, each decoding `rows` rows, over every layer and
/// over the first layer alone.
pub fn decode_products(
    preset_name: &str,
    preset: &Preset,
    workload: &Workload,
    threads: usize,
) -> Result<Vec<ProductsFigure>, TrainError> {
    // As sampling splits them: whole prompts per worker, a prompt's completions together.
    let threads = threads.min(workload.prompts).max(1);
    let rows = (workload.prompts.div_ceil(threads) * workload.completions).max(1);
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
    let mut figures = Vec::with_capacity(2);
    for (scope, order) in [
        ("all layers", (0..layers.len()).collect::<Vec<_>>()),
        ("one layer", vec![0; layers.len()]),
    ] {
        let times = time_reps(workload, || {
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (layers, order) = (&layers, &order);
                    s.spawn(move || steps(layers, order, &shapes, rows, t));
                }
            });
            Ok(())
        })?;
        let per_step: Vec<f64> = times.iter().map(|t| t / STEPS as f64).collect();
        let timing = Timing::of(&per_step);
        let params: usize = shapes.iter().map(|&(n, k)| n * k).sum::<usize>() * order.len();
        let bytes = (params * 4 * threads) as f64;
        figures.push(ProductsFigure {
            figure: "products",
            preset: preset_name.to_string(),
            scope,
            rows,
            threads,
            ms_per_step: timing.seconds * 1e3,
            ms_per_step_min: timing.seconds_min * 1e3,
            ms_per_step_max: timing.seconds_max * 1e3,
            gflops: (2 * rows * params * threads) as f64 / timing.seconds / 1e9,
            weight_gb_per_s: bytes / timing.seconds / 1e9,
            weight_mb: (params * 4) as f64 / 1e6,
        });
    }
    Ok(figures)
}

/// [`STEPS`] decoding steps of one thread's products: `rows` rows through the layers `order`.
fn steps(
    layers: &[Vec<Vec<f32>>],
    order: &[usize],
    shapes: &[(usize, usize); 4],
    rows: usize,
    salt: usize,
) {
    let mut xs: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(_, k)| {
            (0..rows * k)
                .map(|i| ((i + salt) % 5) as f32 * 0.1)
                .collect()
        })
        .collect();
    let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&(n, _)| vec![0f32; rows * n]).collect();
    for _ in 0..STEPS {
        for &l in order {
            for (s, &(_, k)) in shapes.iter().enumerate() {
                matmul_t(&xs[s], &layers[l][s], k, &mut ys[s]);
            }
        }
        // Feed a little of the output back so no step can be skipped as unused.
        xs[0][0] = ys[0][0] * 1e-6;
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
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].rows, 4);
        assert!(f.iter().all(|f| f.gflops > 0.0 && f.ms_per_step > 0.0));
        assert!((f[0].weight_mb - 4.0 * 4.0 * 737_280.0 / 1e6).abs() < 1e-6);
    }
}
