//! Single-precision matrix multiply for generated code: `C = alpha*op(A)@op(B) + beta*C`.
//!
//! Every dense layer's forward (`X @ W`) and both backward products
//! (`dW = X^T @ dY`, `dX = dY @ W^T`) go through [`sgemm`], so it takes
//! transposed operands directly instead of making callers copy.
//!
//! Layout convention: row-major. A matrix argument is a slice plus a leading
//! dimension (`ld`, the distance between the starts of consecutive stored
//! rows), as in BLAS, so sub-blocks of larger buffers can be passed without
//! copying.
//!
//! # Implementation
//!
//! Our own BLIS/GotoBLAS-style kernel, written so that a training step
//! performs **no heap allocation** after its first call (the `gemm` and
//! `matrixmultiply` crates allocate a packing buffer on most calls):
//!
//! * Cache blocking: op(B) is cut into `KC x NC` blocks (512 x 4080, L3)
//!   packed into `NR`-column panels (one `KC x NR` panel streams from L2),
//!   op(A) into `MC x KC` blocks (144 x 512, L2) of `MR`-row panels. Block
//!   sizes are balanced (`k = 784` is two blocks of 392, not 512 + 272).
//!   Transposed operands are handled by the packing routines (AVX2 8 x 8
//!   register transposes where the stored layout is across the panel), so
//!   `A^T @ B` and `A @ B^T` cost no extra copy. An untransposed A is read in
//!   place instead of packed when the product is narrow (`n < 512`): each of
//!   its elements then feeds too few multiply-adds to amortise a copy.
//! * Packing buffers live in a per-thread workspace that only grows: memory is
//!   allocated on a thread's first call with a given (or larger) shape and
//!   reused afterwards. The test `repeated_calls_do_not_allocate` counts.
//! * Microkernels, picked once at run time: AVX2+FMA `6 x 16` (12 `ymm`
//!   accumulators, with 2- and 4-row variants for short edge tiles) on x86_64
//!   CPUs that have it; a portable `4 x 8` kernel the compiler vectorises
//!   otherwise. Edge tiles come from zero-padded panels and the kernel writes
//!   only the valid part of C. No AVX-512 kernel: its intrinsics need Rust
//!   1.89, above our MSRV, and the AVX2 kernel runs on those CPUs too.
//! * [`Parallelism::Rayon`] splits the dimension with more tiles (M or N)
//!   into one contiguous range per thread, each thread with its own
//!   workspace, once the product has at least 2^20 multiply-adds per thread
//!   (the columns when A is read in place, so B is not packed once per
//!   part). [`Parallelism::Shared`] cuts the same way into a few parts per
//!   thread, for workers of a busy pool to take when idle.
//!
//! Measured with `cargo run --release -p nnc-runtime --example gemm_bench
//! --features compare-gemm` on the development machine (AMD EPYC Zen 3,
//! 2 cores, AVX2+FMA, no AVX-512), GFLOP/s, best of 4 runs x 5 rounds, by on-CPU time
//! of the calling thread (the machine was shared, so wall-clock numbers
//! were lower for both), side by side with the `gemm` 0.19 crate this module
//! replaced:
//!
//! | m x k x n                         | threads | this module | `gemm` 0.19 |
//! |-----------------------------------|---------|-------------|-------------|
//! | 128x784x128 (dense fwd)           | 1       | 83          | 87          |
//! | 128x128x128                       | 1       | 85          | 88          |
//! | 784x128x128, A^T@B (weight grad)  | 1       | 83          | 86          |
//! | 128x128x784, A@B^T (input grad)   | 1       | 84          | 84          |
//! | 512x2048x2048                     | 1       | 81          | 85          |
//! | 2048x2048x2048 (wall clock)       | 2       | 80          | 78          |
//!
//! The inner loop itself is as fast as `gemm`'s; the few percent left are
//! packing and per-tile overhead.
//!
//! # Layout
//!
//! This file is the public face (types, bounds checks, the dispatch to a
//! kernel family); the rest is split by job: `driver` (cache blocking, the
//! loop nest, the split over rayon tasks, the per-thread packing
//! workspaces), `pack` (copying operands into panels), `kernel` (the
//! microkernel interface and its `generic` and `avx2` families) and
//! `indexed` (the implicit-im2col product of the convolution kernels).

use thiserror::Error;

mod driver;
mod indexed;
mod kernel;
mod pack;
#[cfg(test)]
pub(crate) mod tests;

pub use driver::reserve_workspaces;
pub(crate) use driver::workspaces_ready;
pub(crate) use indexed::{indexed, indexed_is_fast, pack_panel, Indexed, INDEXED_BLOCK};

use driver::{CPtr, Problem};
use kernel::Isa;
use pack::View;

/// How many threads a product may use.
///
/// Generated code decides this per call site: small products inside a
/// data-parallel worker should stay sequential (the workers already fill the
/// cores), while a single large product may fan out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// Run on the calling thread only.
    #[default]
    Sequential,
    /// Split the work over up to this many threads of the current rayon pool;
    /// `0` means "as many as the pool has".
    Rayon(usize),
    /// Cut a large product into a few parts per thread of the current rayon
    /// pool, for a pool whose threads are busy with other work: each part
    /// runs on the calling thread unless an idle worker takes it first. A
    /// data-parallel shard's products run this way, so a core that finishes
    /// its shard early takes parts of the slower core's products instead of
    /// waiting for it. On one thread it is [`Parallelism::Sequential`].
    Shared,
}

impl Parallelism {
    /// The most threads this setting allows (at least 1).
    pub(crate) fn max_threads(self) -> usize {
        match self {
            Parallelism::Sequential => 1,
            Parallelism::Rayon(0) => rayon::current_num_threads().max(1),
            Parallelism::Rayon(n) => n.min(rayon::current_num_threads()).max(1),
            Parallelism::Shared => rayon::current_num_threads().max(1),
        }
    }

    /// Parts per thread a product is cut into when it splits.
    fn parts_per_thread(self) -> usize {
        match self {
            Parallelism::Shared => SHARED_PARTS_PER_THREAD,
            _ => 1,
        }
    }
}

/// Parts per thread of a [`Parallelism::Shared`] product: enough that the
/// last parts of a busy thread's product are small next to the wait they
/// save, few enough that each part still fills whole tiles.
const SHARED_PARTS_PER_THREAD: usize = 4;

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    /// `op(X) = X`.
    No,
    /// `op(X) = X^T`: backward passes need this for `X^T @ dY` and `dY @ W^T`.
    Yes,
}

/// A read-only matrix operand: `data` holds the *stored* matrix row-major with
/// leading dimension `ld`; `trans` says whether the product uses it transposed.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// Backing storage; must cover every stored element.
    pub data: &'a [f32],
    /// Distance between consecutive stored rows (>= stored column count).
    pub ld: usize,
    /// Use the stored matrix as is or transposed.
    pub trans: Trans,
}

impl<'a> MatRef<'a> {
    /// A densely packed operand used as stored (`ld` = its column count).
    pub fn new(data: &'a [f32], ld: usize) -> Self {
        MatRef {
            data,
            ld,
            trans: Trans::No,
        }
    }

    /// A densely packed operand used transposed; `ld` is the column count of
    /// the *stored* matrix.
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        MatRef {
            data,
            ld,
            trans: Trans::Yes,
        }
    }
}

/// Why a product could not be run; always a caller bug in generated code,
/// reported instead of reading out of bounds.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GemmError {
    /// The leading dimension is smaller than the stored row length.
    #[error(
        "operand {operand}: leading dimension {ld} is smaller than the stored row length {cols}"
    )]
    LeadingDim {
        /// Which operand: "A", "B" or "C".
        operand: &'static str,
        /// The leading dimension passed.
        ld: usize,
        /// The stored row length it must cover.
        cols: usize,
    },
    /// The slice is too short for the stored matrix.
    #[error("operand {operand}: needs {needed} elements for a {rows}x{cols} matrix with ld {ld}, slice has {len}")]
    TooShort {
        /// Which operand: "A", "B" or "C".
        operand: &'static str,
        /// Stored rows.
        rows: usize,
        /// Stored columns.
        cols: usize,
        /// Leading dimension.
        ld: usize,
        /// Elements required.
        needed: usize,
        /// Elements present.
        len: usize,
    },
}

/// Checks that `len` elements cover a stored `rows x cols` matrix with row
/// stride `ld`; returns nothing on success.
fn check(
    operand: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), GemmError> {
    if ld < cols {
        return Err(GemmError::LeadingDim { operand, ld, cols });
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let needed = (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(cols))
        .unwrap_or(usize::MAX);
    if len < needed {
        return Err(GemmError::TooShort {
            operand,
            rows,
            cols,
            ld,
            needed,
            len,
        });
    }
    Ok(())
}

/// `C[m,n] = alpha * op(A)[m,k] @ op(B)[k,n] + beta * C`, row-major.
///
/// `c` holds C with leading dimension `ldc`. When `beta == 0` the old contents
/// of C are not read (BLAS semantics), so an uninitialised-looking workspace
/// full of NaNs is fine. Bounds are checked once up front. After the first
/// call on a thread with a given shape, no heap memory is allocated.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    par: Parallelism,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<(), GemmError> {
    sgemm_with(Isa::detect(), par, m, n, k, alpha, a, b, beta, c, ldc, None)
}

/// A function applied to the finished product, one row segment at a time:
/// `(row, first column, C[row, first column..][..len])`. It runs while the
/// block of C is still in cache, which is how generated code fuses a bias
/// add, an activation or an activation-gradient mask into the product (the
/// matmul epilogue).
pub type Epilogue<'e> = &'e (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// [`sgemm`], then `epilogue` on every element of C, each block of C handed
/// over right after its last depth block is accumulated (so C is written
/// once and read back from cache, not from memory). Every element is passed
/// exactly once, in no particular order across rows.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_then(
    par: Parallelism,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
) -> Result<(), GemmError> {
    sgemm_with(
        Isa::detect(),
        par,
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
        c,
        ldc,
        Some(epilogue),
    )
}

/// [`sgemm`] with an explicit kernel family (tests run every one the CPU has).
#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    isa: Isa,
    par: Parallelism,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: Option<Epilogue<'_>>,
) -> Result<(), GemmError> {
    // Stored shapes: op(A) is m x k, so A is stored m x k or k x m.
    let (ar, ac) = match a.trans {
        Trans::No => (m, k),
        Trans::Yes => (k, m),
    };
    let (br, bc) = match b.trans {
        Trans::No => (k, n),
        Trans::Yes => (n, k),
    };
    check("A", a.data.len(), ar, ac, a.ld)?;
    check("B", b.data.len(), br, bc, b.ld)?;
    check("C", c.len(), m, n, ldc)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 || alpha == 0.0 {
        // The product is empty or scaled away: only the beta part remains.
        for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
            for x in &mut row[..n] {
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
            if let Some(f) = epilogue {
                f(i, 0, &mut row[..n]);
            }
        }
        return Ok(());
    }
    let p = Problem {
        m,
        n,
        k,
        alpha,
        beta,
        a: View::of(a),
        b: View::of(b),
        c: CPtr {
            ptr: c.as_mut_ptr(),
            ld: ldc,
        },
        epilogue,
        row0: 0,
        col0: 0,
    };
    // SAFETY: `check` proved that every element of op(A) (m x k), op(B)
    // (k x n) and C (m x n, row stride ldc) lies inside its slice, and `c` is
    // borrowed uniquely for the whole call, so nothing else reads or writes C.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                driver::run::<kernel::avx2::Kernel>(p, par.max_threads(), par.parts_per_thread())
            }
            Isa::Generic => {
                driver::run::<kernel::generic::Kernel>(p, par.max_threads(), par.parts_per_thread())
            }
        }
    }
    Ok(())
}

/// `C = A @ B` for densely packed row-major matrices: the common forward case.
pub fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<(), GemmError> {
    sgemm(
        Parallelism::Sequential,
        m,
        n,
        k,
        1.0,
        MatRef::new(a, k),
        MatRef::new(b, n),
        0.0,
        c,
        n,
    )
}
