//! AdamW with state we own: candle's optimizer hides its moments, and an exact resume needs
//! them saved and restored.

use std::collections::BTreeMap;

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::grads::Grads;
use crate::model::Params;

/// AdamW hyper-parameters (PyTorch / Hugging Face defaults except the learning rate, which the
/// schedule supplies each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Decoupled-weight-decay Adam (Loshchilov & Hutter) with bias correction.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates taken so far (the `t` of bias correction).
    pub step: u64,
    /// First and second moments by parameter name (f32, whatever the parameter dtype).
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient, after scaling gradients by
    /// `grad_scale` (the clipping factor).
    pub fn step(&mut self, params: &Params, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (name, var) in params.iter() {
            let Some(g) = grads.get(name) else {
                continue;
            };
            let g = (g.to_dtype(DType::F32)? * grad_scale)?;
            let m = match self.m.get(name) {
                Some(m) => ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?,
                None => (&g * (1.0 - c.beta1))?,
            };
            let v = match self.v.get(name) {
                Some(v) => ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
                None => (g.sqr()? * (1.0 - c.beta2))?,
            };
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor().to_dtype(DType::F32)?;
            // Decay weight matrices only: never norm weights or biases (Hugging Face's rule).
            let decay = if var.rank() >= 2 { c.weight_decay } else { 0.0 };
            let theta = ((theta * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&theta.to_dtype(var.dtype())?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use std::collections::BTreeMap;

    #[test]
    fn adamw_matches_the_closed_form_first_steps() {
        // For a constant gradient g, Adam's bias-corrected update is lr * g / (|g| + eps')
        // every step: the parameter moves by -lr * sign(g).
        let dev = Device::Cpu;
        let mut map = BTreeMap::new();
        map.insert("w".to_string(), Tensor::new(&[1.0f32, -2.0], &dev).unwrap());
        let params = Params::from_tensors(map).unwrap();
        let w: Var = params.get("w").unwrap().clone();
        let mut opt = AdamW::new(AdamWConfig::default());
        for _ in 0..3 {
            let mut grads = Grads::new();
            grads.insert("w".into(), Tensor::new(&[3.0f32, 3.0], &dev).unwrap());
            opt.step(&params, &grads, 0.1, 1.0).unwrap();
        }
        let got: Vec<f32> = w.as_tensor().to_vec1().unwrap();
        assert!(
            (got[0] - 0.7).abs() < 1e-5 && (got[1] + 2.3).abs() < 1e-5,
            "{got:?}"
        );
        assert_eq!(opt.step, 3);
    }

    #[test]
    fn weight_decay_shrinks_matrices_only() {
        let dev = Device::Cpu;
        let mut map = BTreeMap::new();
        map.insert(
            "m".to_string(),
            Tensor::ones((2, 2), DType::F32, &dev).unwrap(),
        );
        map.insert(
            "norm".to_string(),
            Tensor::ones(2, DType::F32, &dev).unwrap(),
        );
        let params = Params::from_tensors(map).unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.5,
            ..AdamWConfig::default()
        });
        let mut grads = Grads::new();
        grads.insert("m".into(), Tensor::zeros((2, 2), DType::F32, &dev).unwrap());
        grads.insert("norm".into(), Tensor::zeros(2, DType::F32, &dev).unwrap());
        opt.step(&params, &grads, 0.1, 1.0).unwrap();
        let m: Vec<Vec<f32>> = params.get("m").unwrap().as_tensor().to_vec2().unwrap();
        let n: Vec<f32> = params.get("norm").unwrap().as_tensor().to_vec1().unwrap();
        assert!((m[0][0] - 0.95).abs() < 1e-6, "{m:?}");
        assert_eq!(n, vec![1.0, 1.0]);
    }
}
