//! Training: gradients, the optimizer; the supervised warm start and the RL modes build on
//! them.

pub mod grads;
pub mod optim;

pub use grads::{backward_pieces, clip_factor, global_norm, Grads};
pub use optim::{AdamW, AdamWConfig};
