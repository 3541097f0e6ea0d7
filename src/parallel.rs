//! Parallelism over independent work items (sampling groups, per-group backward passes).
//!
//! A small model is dominated by per-op overhead rather than arithmetic, so splitting each
//! small matmul across cores (candle's default) loses to running independent groups on
//! separate cores with single-threaded kernels. The binary therefore sets candle's kernel
//! threads to 1 unless `RAYON_NUM_THREADS` is given, and chartrl spreads work items over
//! [`worker_threads`] threads. Results never depend on the thread count: items are combined
//! in their original order.

/// Worker threads: `CHARTRL_THREADS`, else the machine's available parallelism.
pub fn worker_threads() -> usize {
    std::env::var("CHARTRL_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Applies `f` to every item on up to [`worker_threads`] threads (contiguous chunks, one per
/// thread) and returns the results in item order. A panicking worker becomes `on_panic()`.
pub fn map_chunks<T, R, E, F, P>(items: &[T], f: F, on_panic: P) -> Vec<Result<R, E>>
where
    T: Sync,
    R: Send,
    E: Send,
    F: Fn(usize, &T) -> Result<R, E> + Sync,
    P: Fn() -> E + Sync,
{
    let workers = worker_threads().min(items.len()).max(1);
    if workers == 1 {
        return items.iter().enumerate().map(|(i, t)| f(i, t)).collect();
    }
    let chunk = items.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                let f = &f;
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(j, t)| f(c * chunk + j, t))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err(on_panic())]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order() {
        let items: Vec<usize> = (0..7).collect();
        let out = map_chunks(&items, |i, &x| Ok::<_, ()>((i, x * 10)), || ());
        let got: Vec<(usize, usize)> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, (0..7).map(|i| (i, i * 10)).collect::<Vec<_>>());
    }
}
