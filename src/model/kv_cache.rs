//! A preallocated key/value cache for sampling: one buffer per layer, written in place.
//!
//! Buffers are `(rows, kv_heads, capacity, head_dim)`; each decode step writes one slot.

use candle_core::{Result, Tensor};

/// Keys and values of every layer for `batch` rows, up to `capacity` positions.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Positions filled so far (the offset of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Each layer's key and value buffers, `(rows, kv_heads, capacity, head_dim)`.
    pub fn into_buffers(self) -> Vec<(Tensor, Tensor)> {
        self.layers
    }

    /// Writes this step's keys and values of `layer` at the current length and returns the
    /// keys and values of every position so far (views into the buffers, no copy).
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let s = k.dim(2)?;
        if self.len + s > self.capacity {
            candle_core::bail!(
                "KV cache full: {} + {s} positions exceed capacity {}",
                self.len,
                self.capacity
            );
        }
        let (kb, vb) = &self.layers[layer];
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        let total = self.len + s;
        Ok((kb.narrow(2, 0, total)?, vb.narrow(2, 0, total)?))
    }

    /// Marks `s` more positions as filled, once every layer has appended them.
    pub fn advance(&mut self, s: usize) {
        self.len += s;
    }

    /// A cache over existing buffers whose first `len` slots are already filled.
    pub fn from_buffers(layers: Vec<(Tensor, Tensor)>, len: usize) -> Result<Self> {
        let capacity = match layers.first() {
            Some((k, _)) => k.dim(2)?,
            None => 0,
        };
        Ok(Self {
            layers,
            len,
            capacity,
        })
    }
}
