//! A team of threads decoding one batch together, each with its share of every weight.
//!
//! Sampling a few rows is bound by reading the weights, not by arithmetic: each step reads
//! every weight once for a handful of dot products. Threads that each decode their own rows
//! each read every weight, so on a model larger than the cache they compete for memory
//! bandwidth with copies of the same reads. A team instead splits every weight matrix's rows
//! (the output columns) among its threads, so each weight is read once a step by one thread,
//! for all rows. The threads meet at a [`SpinBarrier`] after each product whose output the
//! others need, and exchange those outputs through a [`Board`].

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

/// A teammate panicked: the others stop waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poisoned;

/// A reusable barrier that spins (then yields) instead of sleeping: a decoding step of a small
/// model meets at a barrier dozens of times, and waking a sleeping thread costs tens of
/// microseconds each time.
pub struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

/// Spins before a waiting thread starts yielding its core.
const SPINS: u32 = 1 << 14;

impl SpinBarrier {
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Waits until every thread of the team has arrived; fails once a teammate panicked.
    pub fn wait(&self) -> Result<(), Poisoned> {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return self.check();
        }
        let mut spins = 0;
        while self.generation.load(Ordering::Acquire) == generation {
            self.check()?;
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), Poisoned> {
        match self.poisoned.load(Ordering::Acquire) {
            true => Err(Poisoned),
            false => Ok(()),
        }
    }

    /// A guard that poisons the barrier if its thread unwinds from a panic while holding it.
    pub fn guard(&self) -> PanicGuard<'_> {
        PanicGuard(self)
    }
}

/// See [`SpinBarrier::guard`].
pub struct PanicGuard<'a>(&'a SpinBarrier);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

/// A team's meeting point and exchange.
pub struct Team {
    pub barrier: SpinBarrier,
    pub board: Board,
}

impl Team {
    pub fn new(threads: usize) -> Self {
        Self {
            barrier: SpinBarrier::new(threads),
            board: Board::new(threads),
        }
    }

    /// Publishes thread `t`'s part `p`, then waits for every teammate to publish theirs.
    pub fn exchange(&self, t: usize, p: Part, data: &[f32]) -> Result<(), Poisoned> {
        self.board.put(t, p, data);
        self.barrier.wait()
    }
}

/// What the threads exchange within a decoding step: each thread's part of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Attention outputs of the thread's key/value heads.
    Attn,
    /// The attention output projection's columns.
    Out,
    /// SwiGLU activations of the thread's intermediate columns.
    Act,
    /// The down projection's columns.
    Down,
    /// The thread's share of the vocabulary's logits.
    Logits,
}

const PARTS: usize = 5;

/// One slot per thread and [`Part`], plus each thread's sampled inputs. A thread writes only
/// its own slots; each kind of part is written again only after a barrier that follows every
/// read of it, so the locks are never contended (they keep the exchange safe, not ordered).
pub struct Board {
    parts: Vec<[RwLock<Vec<f32>>; PARTS]>,
    inputs: Vec<RwLock<(Vec<u32>, bool)>>,
}

impl Board {
    pub fn new(threads: usize) -> Self {
        Self {
            parts: (0..threads)
                .map(|_| std::array::from_fn(|_| RwLock::new(Vec::new())))
                .collect(),
            inputs: (0..threads)
                .map(|_| RwLock::new((Vec::new(), true)))
                .collect(),
        }
    }

    /// Publishes thread `t`'s part `p` (its rows of its columns, row-major).
    pub fn put(&self, t: usize, p: Part, data: &[f32]) {
        let mut slot = write(&self.parts[t][p as usize]);
        slot.clear();
        slot.extend_from_slice(data);
    }

    /// Thread `t`'s part `p`.
    pub fn get(&self, t: usize, p: Part) -> RwLockReadGuard<'_, Vec<f32>> {
        read(&self.parts[t][p as usize])
    }

    /// Publishes thread `t`'s rows' next tokens and whether all of them have finished.
    pub fn put_inputs(&self, t: usize, ids: &[u32], finished: bool) {
        let mut slot = write(&self.inputs[t]);
        slot.0.clear();
        slot.0.extend_from_slice(ids);
        slot.1 = finished;
    }

    /// Every thread's inputs in thread order, and whether every row has finished.
    pub fn all_inputs(&self) -> (Vec<u32>, bool) {
        let mut ids = Vec::new();
        let mut finished = true;
        for slot in &self.inputs {
            let slot = read(slot);
            ids.extend_from_slice(&slot.0);
            finished &= slot.1;
        }
        (ids, finished)
    }

    /// Rows of `m` assembled from every thread's part `p` (thread `t` holding `widths[t]`
    /// columns of each row), for rows `rows`.
    pub fn gather(&self, p: Part, widths: &[usize], rows: Range<usize>) -> Vec<f32> {
        let total: usize = widths.iter().sum();
        let mut out = vec![0f32; rows.len() * total];
        let mut at = 0;
        for (t, &w) in widths.iter().enumerate() {
            let part = self.get(t, p);
            for (o, r) in out.chunks_exact_mut(total).zip(rows.clone()) {
                o[at..at + w].copy_from_slice(&part[r * w..][..w]);
            }
            at += w;
        }
        out
    }
}

// A poisoned lock means a teammate panicked while writing; its data is still only floats, and
// the panic itself stops the team at the next barrier.
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Thread `t`'s share of `n` items split into `threads` contiguous ranges, each a multiple of
/// `align` items but the last (so the few-rows kernel's blocks of four weight rows stay whole).
pub fn share(n: usize, threads: usize, t: usize, align: usize) -> Range<usize> {
    let blocks = n.div_ceil(align.max(1));
    let (base, extra) = (blocks / threads, blocks % threads);
    let start = t * base + t.min(extra);
    let end = start + base + usize::from(t < extra);
    (start * align).min(n)..(end * align).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_aligned_ranges() {
        for (n, threads, align) in [(704, 2, 4), (10, 3, 4), (3, 4, 1), (2048, 3, 4), (0, 2, 4)] {
            let ranges: Vec<_> = (0..threads).map(|t| share(n, threads, t, align)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[threads - 1].end, n);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert!(pair[0].len() % align == 0 || pair[1].is_empty());
            }
            let lens: Vec<usize> = ranges.iter().map(Range::len).collect();
            let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
            assert!(hi - lo <= align, "{n}/{threads}: {lens:?}");
        }
    }

    /// Every thread sees every other thread's writes of a round after the barrier, round
    /// after round; a panicking thread releases the others with an error.
    #[test]
    fn the_barrier_orders_rounds_and_reports_a_panic() {
        let (threads, rounds) = (3, 200);
        let barrier = SpinBarrier::new(threads);
        let board = Board::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (barrier, board) = (&barrier, &board);
                s.spawn(move || {
                    for round in 0..rounds {
                        board.put(t, Part::Out, &[(round * threads + t) as f32]);
                        barrier.wait().unwrap();
                        for u in 0..threads {
                            assert_eq!(board.get(u, Part::Out)[0], (round * threads + u) as f32);
                        }
                        barrier.wait().unwrap();
                    }
                });
            }
        });
        let barrier = SpinBarrier::new(2);
        let waited = std::thread::scope(|s| {
            let b = &barrier;
            let panicking = s.spawn(move || {
                let _guard = b.guard();
                panic!("a teammate fails");
            });
            let waiter = s.spawn(move || b.wait());
            assert!(panicking.join().is_err());
            waiter.join().unwrap()
        });
        assert_eq!(waited, Err(Poisoned));
    }
}
