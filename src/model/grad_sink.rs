//! Weight gradients handed straight to whoever runs a backward pass, past candle's store.
//!
//! candle's `backward` meets every gradient an op returns with a zeroed tensor of its size
//! and adds the gradient into it: for each weight of each linear layer, two weight-sized
//! allocations and passes per piece of a batch, on top of the product that made it. While
//! [`collect`] runs a backward pass on a thread, the ops that make weight gradients (the
//! linear layers and SwiGLU) [`offer`] them here instead, keyed by the weight's id, and give
//! candle none. `0 + g` is `g` (a zero's sign aside), so the gradients are the store's values.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{Result, Tensor, TensorId};

thread_local! {
    static SINK: RefCell<Option<HashMap<TensorId, Tensor>>> = const { RefCell::new(None) };
}

/// Runs `pass` (a backward pass on this thread) with a sink open, and returns its result
/// with the weight gradients the ops put in the sink.
pub fn collect<R>(pass: impl FnOnce() -> R) -> (R, HashMap<TensorId, Tensor>) {
    /// Closes the sink however `pass` ends, so no later pass on the thread finds it open.
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            SINK.with(|s| s.borrow_mut().take());
        }
    }
    SINK.with(|s| *s.borrow_mut() = Some(HashMap::new()));
    let close = Close;
    let out = pass();
    let sunk = SINK.with(|s| s.borrow_mut().take()).unwrap_or_default();
    drop(close);
    (out, sunk)
}

/// The gradient `g` of the weight `w`, for the op to return to candle: `None` when a sink is
/// open on this thread and `w` is a variable (a leaf whose gradient goes nowhere else), the
/// gradient then kept in the sink (added to one already there); `g` itself otherwise.
pub fn offer(w: &Tensor, g: Tensor) -> Result<Option<Tensor>> {
    if !w.is_variable() {
        return Ok(Some(g));
    }
    SINK.with(|s| {
        let mut sink = s.borrow_mut();
        let Some(sink) = sink.as_mut() else {
            return Ok(Some(g));
        };
        let sum = match sink.remove(&w.id()) {
            Some(acc) => (acc + g)?,
            None => g,
        };
        sink.insert(w.id(), sum);
        Ok(None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn a_variables_gradient_goes_to_an_open_sink_only() {
        let dev = Device::Cpu;
        let w = Var::new(&[1f32, 2.0], &dev).unwrap();
        let plain = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let g = || Tensor::new(&[0.5f32, -1.0], &dev).unwrap();
        assert!(offer(w.as_tensor(), g()).unwrap().is_some(), "no sink open");
        let (kept, sunk) = collect(|| {
            let first = offer(w.as_tensor(), g()).unwrap();
            let second = offer(w.as_tensor(), g()).unwrap();
            let other = offer(&plain, g()).unwrap();
            (first.is_none() && second.is_none(), other.is_some())
        });
        assert_eq!(kept, (true, true));
        let sum = sunk[&w.as_tensor().id()].to_vec1::<f32>().unwrap();
        assert_eq!(sum, vec![1.0, -2.0]);
        assert!(
            offer(w.as_tensor(), g()).unwrap().is_some(),
            "the sink closed"
        );
    }
}
