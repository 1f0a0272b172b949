//! Forward convolutions and pooling over parts of the batch on separate
//! threads, where generated `predict` lets its matrix products split
//! ([`crate::kernels::parallel_gemm`]).
//!
//! Each sample of a forward convolution or pooling is computed on its own,
//! in the same order whatever the batch around it, so cutting the batch
//! into runs of consecutive samples gives the same bits on any number of
//! threads. The convolution's scratch space in the model's workspace is one
//! sample's (the compiler sizes it for the sequential kernel); a part
//! running on a worker takes a thread-local buffer of the same size
//! instead, which the first split call gives every thread of the pool, so
//! later calls allocate nothing (as the GEMM's packing buffers:
//! [`crate::gemm::reserve_workspaces`]).
//!
//! Training is untouched: a data-parallel shard's products are
//! [`Parallelism::Shared`], which keeps these kernels on the shard's
//! thread (the other workers run the other shards).

use std::cell::RefCell;

use rayon::prelude::*;

use crate::gemm::Parallelism;

/// Multiply-adds a part must at least get for the batch to split (the
/// GEMM's threshold): waking a worker costs a few microseconds.
const MIN_PART_WORK: usize = 1 << 20;

/// What one pooled input element costs in multiply-adds of the AVX2
/// convolution (about 16 of those fit the time of one scalar window
/// step), to weigh pooling against [`MIN_PART_WORK`].
pub(super) const POOL_ELEMENT_WORK: usize = 16;

/// Parts per thread: on a machine shared with other processes a thread
/// that is descheduled mid-part holds up the whole call, and smaller parts
/// let the other threads take over its share. Each part costs a rayon
/// task and, for a convolution, one zeroing of its padded image.
const PARTS_PER_THREAD: usize = 4;

/// Parts to cut `b` samples of `work` multiply-adds each into:
/// [`PARTS_PER_THREAD`] per thread of the pool when this thread's products
/// split over it (inside generated `predict`), as far as every part gets at
/// least [`MIN_PART_WORK`]; else 1.
pub(super) fn parts(b: usize, work: usize) -> usize {
    let threads = match crate::kernels::matmul::gemm_parallelism() {
        par @ Parallelism::Rayon(_) => par.max_threads(),
        Parallelism::Sequential | Parallelism::Shared => 1,
    };
    if threads <= 1 {
        return 1;
    }
    (threads * PARTS_PER_THREAD)
        .min(b.saturating_mul(work) / MIN_PART_WORK)
        .min(b)
        .max(1)
}

/// Runs `f(first sample, samples, y, x)` over `parts` runs of consecutive
/// samples (`y_per` output and `x_per` input elements each), in parallel
/// on the current rayon pool; on the calling thread when `parts <= 1`.
#[allow(clippy::too_many_arguments)]
pub(super) fn samples<F>(
    b: usize,
    parts: usize,
    y: &mut [f32],
    y_per: usize,
    x: &[f32],
    x_per: usize,
    f: F,
) where
    F: Fn(usize, usize, &mut [f32], &[f32]) + Sync,
{
    if parts <= 1 || y_per == 0 || x_per == 0 {
        return f(0, b, y, x);
    }
    let chunk = b.div_ceil(parts);
    y.par_chunks_mut(chunk * y_per)
        .zip(x.par_chunks(chunk * x_per))
        .enumerate()
        .for_each(|(i, (yc, xc))| f(i * chunk, yc.len() / y_per, yc, xc));
}

thread_local! {
    /// A part's scratch space on this thread; it only grows.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Grows this thread's part scratch to `len` floats (and runs `also`)
/// when it is shorter.
fn grow(len: usize, also: &(dyn Fn() + Sync)) {
    SCRATCH.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < len {
                s.resize(len, 0.0);
            }
        }
    });
    also();
}

/// Gives this thread and every thread of the current rayon pool `len`
/// floats of part scratch (and runs `also` on each: the kernel's other
/// per-thread buffers), unless this thread already has both (`ready` says
/// whether it has the other buffers). Which worker runs which part changes
/// from call to call, so all of them get their buffers on the first split
/// call of each kernel that needs more than the ones before: no later call
/// allocates. The calling thread stands for the pool, since every
/// reservation covers it and every worker alike; a new calling thread
/// reserves again (once). Returns whether it reserved.
///
/// `rayon::broadcast` needs every worker of the pool, as
/// [`crate::gemm::reserve_workspaces`] does: a `predict` on a pool whose
/// workers block outside rayon (on a lock, a channel, another process)
/// waits for them.
pub(super) fn reserve_scratch(
    len: usize,
    ready: &dyn Fn() -> bool,
    also: &(dyn Fn() + Sync),
) -> bool {
    let short = SCRATCH.with(|s| s.try_borrow().map_or(true, |s| s.len() < len)) || !ready();
    if short {
        rayon::broadcast(|_| grow(len, also));
        grow(len, also);
    }
    short
}

/// Runs `f` with `len` floats of this thread's part scratch (grown if a
/// worker joined the pool after [`reserve_scratch`]).
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            if s.len() < len {
                s.resize(len, 0.0);
            }
            f(&mut s[..len])
        }
        // Unreachable (a part never splits again), but fresh space is
        // correct.
        Err(_) => f(&mut vec![0.0; len]),
    })
}
