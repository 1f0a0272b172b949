//! Matrix products over the GEMM (batched, transposed operands, fused
//! epilogue), and the per-thread switch that lets them split over the
//! rayon pool.

use crate::gemm::{sgemm, sgemm_then, MatRef, Parallelism};

thread_local! {
    /// How this thread's matrix products may split (see [`with_parallel_gemm`]).
    static GEMM_PARALLELISM: std::cell::Cell<Parallelism> =
        const { std::cell::Cell::new(Parallelism::Sequential) };
}

/// Runs `f` with every matrix product it makes on this thread split across
/// the current rayon pool (intra-op parallelism). Products split by whole
/// tiles of the output, so the result is the same on any number of threads.
/// Outside, products stay on the calling thread: data-parallel workers
/// already fill the cores.
pub fn with_parallel_gemm<R>(f: impl FnOnce() -> R) -> R {
    let _parallel = parallel_gemm();
    f()
}

/// Runs `f` with every large matrix product it makes on this thread cut
/// into parts that idle workers of the current rayon pool may take
/// ([`Parallelism::Shared`]): a data-parallel shard runs this way, so a
/// core that finishes its shard early helps with the other shards' last
/// products instead of waiting. Parts are whole tiles of the output, so
/// the result is the same on any number of threads.
pub fn with_shared_gemm<R>(f: impl FnOnce() -> R) -> R {
    let _shared = ParallelGemm::set(Parallelism::Shared);
    f()
}

/// [`with_parallel_gemm`] as a guard: this thread's matrix products split
/// across the current rayon pool until the guard is dropped (generated
/// `predict` holds one over its kernel calls).
pub fn parallel_gemm() -> ParallelGemm {
    ParallelGemm::set(Parallelism::Rayon(0))
}

/// The guard [`parallel_gemm`] returns; dropping it (also on unwinding)
/// restores the thread's previous setting. It stays on the thread whose
/// setting it changed.
#[must_use = "products split only while the guard lives"]
pub struct ParallelGemm {
    before: Parallelism,
    _thread: std::marker::PhantomData<*const ()>,
}

impl ParallelGemm {
    fn set(par: Parallelism) -> Self {
        ParallelGemm {
            before: GEMM_PARALLELISM.with(|p| p.replace(par)),
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for ParallelGemm {
    fn drop(&mut self) {
        GEMM_PARALLELISM.with(|p| p.set(self.before));
    }
}

/// How this thread's matrix products may split now (the batch-split
/// forward kernels of [`crate::conv`] follow the same switch).
pub(crate) fn gemm_parallelism() -> Parallelism {
    GEMM_PARALLELISM.with(|p| p.get())
}

/// `out[..., m, n] = a[..., m, k] @ b[..., k, n]` over `batches` leading
/// matrices; `b` is shared by all of them when `b_shared`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    batches: usize,
    m: usize,
    k: usize,
    n: usize,
    b_shared: bool,
) {
    let par = gemm_parallelism();
    let result = if b_shared {
        // One product: the leading dimensions fold into the rows.
        sgemm(
            par,
            batches * m,
            n,
            k,
            1.0,
            MatRef::new(a, k),
            MatRef::new(b, n),
            0.0,
            out,
            n,
        )
    } else {
        (0..batches).try_for_each(|i| {
            sgemm(
                par,
                m,
                n,
                k,
                1.0,
                MatRef::new(&a[i * m * k..(i + 1) * m * k], k),
                MatRef::new(&b[i * k * n..(i + 1) * k * n], n),
                0.0,
                &mut out[i * m * n..(i + 1) * m * n],
                n,
            )
        })
    };
    // Shapes are fixed by the compiler's shape rules; a mismatch here is a
    // bug in nnc, not in the user's data.
    if let Err(e) = result {
        panic!("nnc internal error: matmul shapes disagree: {e}");
    }
}

/// `out[m, n] = op(a) @ op(b)` for single matrices whose operands may be
/// stored transposed: with `ta`, `a` holds the `[k, m]` matrix whose
/// transpose is used; with `tb`, `b` holds `[n, k]`. The compiler folds a
/// transpose that only feeds matrix products into the product this way, so
/// backward passes (`Xᵀ @ dY`, `dY @ Wᵀ`) copy nothing.
#[allow(clippy::too_many_arguments)]
pub fn matmul_t(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) {
    let (a, b) = operands(a, b, (m, k, n), ta, tb);
    if let Err(e) = sgemm(gemm_parallelism(), m, n, k, 1.0, a, b, 0.0, out, n) {
        panic!("nnc internal error: matmul shapes disagree: {e}");
    }
}

/// The GEMM operands of an `[m, k] @ [k, n]` product whose slices may hold
/// the transposes.
fn operands<'a>(
    a: &'a [f32],
    b: &'a [f32],
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
) -> (MatRef<'a>, MatRef<'a>) {
    let a = if ta {
        MatRef::transposed(a, m)
    } else {
        MatRef::new(a, k)
    };
    let b = if tb {
        MatRef::transposed(b, k)
    } else {
        MatRef::new(b, n)
    };
    (a, b)
}

/// [`matmul_t`], then `epilogue(i, segment)` over the finished product,
/// where `segment` is `out[i..][..segment.len()]`; each element is passed
/// exactly once, while its block of the product is still in cache. This is
/// the matmul epilogue generated code fuses bias adds, activations and
/// activation-gradient masks into.
#[allow(clippy::too_many_arguments)]
pub fn matmul_then(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    epilogue: impl Fn(usize, &mut [f32]) + Sync,
) {
    let (a, b) = operands(a, b, (m, k, n), ta, tb);
    let ep = |row: usize, col: usize, seg: &mut [f32]| epilogue(row * n + col, seg);
    if let Err(e) = sgemm_then(gemm_parallelism(), m, n, k, 1.0, a, b, 0.0, out, n, &ep) {
        panic!("nnc internal error: matmul shapes disagree: {e}");
    }
}
