//! Parallelism over independent work items (sampling groups, per-group backward passes).
//!
//! A small model is dominated by per-op overhead rather than arithmetic, so splitting each
//! small matmul across cores (candle's default) loses to running independent groups on
//! separate cores with single-threaded kernels. The binary therefore sets candle's kernel
//! threads to 1 unless `RAYON_NUM_THREADS` is given, and chartrl spreads work items over
//! [`worker_threads`] threads. Results never depend on the thread count: items are combined
//! in their original order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Worker threads: `CHARTRL_THREADS`, else the machine's available parallelism.
pub fn worker_threads() -> usize {
    std::env::var("CHARTRL_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Applies `f` to every item on up to `threads` threads (contiguous chunks, one per thread;
/// callers pass [`worker_threads`] unless they split the threads themselves) and returns the
/// results in item order. A panicking worker becomes `on_panic()`.
pub fn map_chunks<T, R, E, F, P>(
    threads: usize,
    items: &[T],
    f: F,
    on_panic: P,
) -> Vec<Result<R, E>>
where
    T: Sync,
    R: Send,
    E: Send,
    F: Fn(usize, &T) -> Result<R, E> + Sync,
    P: Fn() -> E + Sync,
{
    let workers = threads.min(items.len()).max(1);
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

/// Applies `f` to items `0..n` on up to [`worker_threads`] threads, each thread taking the next
/// item as it frees up (pieces of uneven cost balance themselves), and hands every result to
/// `fold` in item order as soon as the items before it are done. So `fold` sees the same
/// sequence whatever the thread count; a result that finishes early waits for the items
/// before it (a few at a time when items cost about the same). The first error (from `f`,
/// `fold`, or `on_panic()` for a panicking worker) stops the work.
pub fn fold_in_order<R, E, F, G, P>(n: usize, f: F, mut fold: G, on_panic: P) -> Result<(), E>
where
    R: Send,
    E: Send,
    F: Fn(usize) -> Result<R, E> + Sync,
    G: FnMut(usize, R) -> Result<(), E>,
    P: Fn() -> E,
{
    let workers = worker_threads().min(n).max(1);
    if workers == 1 {
        return (0..n).try_for_each(|i| fold(i, f(i)?));
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Result<R, E>)>();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (f, next, tx) = (&f, &next, tx.clone());
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || tx.send((i, f(i))).is_err() {
                        break;
                    }
                })
            })
            .collect();
        drop(tx);
        let folded = fold_arrivals(rx, n, &mut fold);
        if folded.is_err() {
            next.store(n, Ordering::Relaxed);
        }
        // Joined handles keep a worker's panic from resurfacing when the scope ends.
        let panicked = handles.into_iter().any(|h| h.join().is_err());
        match folded {
            Ok(due) if due < n || panicked => Err(on_panic()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    })
}

/// Folds results arriving in any order in item order; returns how many were folded.
fn fold_arrivals<R, E>(
    rx: mpsc::Receiver<(usize, Result<R, E>)>,
    n: usize,
    fold: &mut impl FnMut(usize, R) -> Result<(), E>,
) -> Result<usize, E> {
    let mut waiting = BTreeMap::new();
    let mut due = 0;
    for (i, r) in rx.iter() {
        waiting.insert(i, r);
        while let Some(r) = waiting.remove(&due) {
            fold(due, r?)?;
            due += 1;
        }
        if due == n {
            break;
        }
    }
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order() {
        let items: Vec<usize> = (0..7).collect();
        let out = map_chunks(3, &items, |i, &x| Ok::<_, ()>((i, x * 10)), || ());
        let got: Vec<(usize, usize)> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, (0..7).map(|i| (i, i * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn the_fold_sees_items_in_order_and_stops_at_the_first_error() {
        let mut seen = Vec::new();
        // Later items finish first, so the fold must hold them back.
        let slow_first = |i: usize| {
            std::thread::sleep(std::time::Duration::from_millis(((7 - i) * 3) as u64));
            Ok::<_, String>(i * 10)
        };
        fold_in_order(
            7,
            slow_first,
            |i, r| {
                seen.push((i, r));
                Ok(())
            },
            || "panic".into(),
        )
        .unwrap();
        assert_eq!(seen, (0..7).map(|i| (i, i * 10)).collect::<Vec<_>>());
        let mut folded = 0;
        let err = fold_in_order(
            50,
            |i| {
                if i == 3 {
                    Err(format!("item {i}"))
                } else {
                    Ok(i)
                }
            },
            |_, _| {
                folded += 1;
                Ok(())
            },
            || "panic".into(),
        );
        assert_eq!(err, Err("item 3".to_string()));
        assert_eq!(folded, 3);
        if super::worker_threads() > 1 {
            let panicked = fold_in_order(
                4,
                |i| {
                    if i == 2 {
                        panic!("worker")
                    } else {
                        Ok::<_, String>(i)
                    }
                },
                |_, _| Ok(()),
                || "a worker panicked".into(),
            );
            assert_eq!(panicked, Err("a worker panicked".to_string()));
        }
    }
}
