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
//!   workspace, once the product has at least 2^20 multiply-adds per thread.
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

use thiserror::Error;

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
}

impl Parallelism {
    /// The most threads this setting allows (at least 1).
    fn max_threads(self) -> usize {
        match self {
            Parallelism::Sequential => 1,
            Parallelism::Rayon(0) => rayon::current_num_threads().max(1),
            Parallelism::Rayon(n) => n.min(rayon::current_num_threads()).max(1),
        }
    }
}

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
            Isa::Avx2 => run::<avx2::Kernel>(p, par.max_threads()),
            Isa::Generic => run::<generic::Kernel>(p, par.max_threads()),
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

// ---------------------------------------------------------------------------
// Indexed products: the implicit im2col of the convolution kernels.
// ---------------------------------------------------------------------------

/// Columns of B that [`indexed`] reads per block: the value the shared
/// scratch sizing (`nnc_geometry::implicit`) pads the convolution buffers to.
pub(crate) const INDEXED_BLOCK: usize = nnc_geometry::implicit::INDEXED_BLOCK;

/// The operands of [`indexed`]: matrices whose rows start at arbitrary
/// offsets of a slice, so a convolution can multiply its receptive fields
/// where they lie in the (padded) image instead of copying them out first.
///
/// Element `(i, p)` of A (`m x k`) is `a[a_rows[i] + p]`; element `(p, j)` of
/// B (`k x n`) is `b[(j / 16) * b_block + b_rows[p] + j % 16]`.
pub(crate) struct Indexed<'a> {
    /// Storage of A.
    pub a: &'a [f32],
    /// Start of each row of A (`m` entries).
    pub a_rows: &'a [usize],
    /// Storage of B.
    pub b: &'a [f32],
    /// Start of each row of B's first 16-column block (`k` entries).
    pub b_rows: &'a [usize],
    /// Distance between consecutive 16-column blocks of B.
    pub b_block: usize,
}

/// `C[m, n] = A @ B + beta * C` (row stride `ldc`) for [`Indexed`] operands,
/// `m = a_rows.len()`, `k = b_rows.len()`; C is not read when `beta == 0`.
///
/// B is read in whole blocks of 16 columns, the last one past `n` too, so `b`
/// must hold them (the results of those columns are dropped). No packing, no
/// allocation: every tile streams its `k` rows of A and B once.
///
/// # Panics
/// If an operand does not fit its slice: an nnc bug, never a user error.
pub(crate) fn indexed(n: usize, x: &Indexed<'_>, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k) = (x.a_rows.len(), x.b_rows.len());
    if m == 0 || n == 0 {
        return;
    }
    let blocks = n.div_ceil(INDEXED_BLOCK);
    let a_end = x.a_rows.iter().max().map_or(0, |&r| r + k);
    let b_end = x
        .b_rows
        .iter()
        .max()
        .map_or(0, |&r| (blocks - 1) * x.b_block + r + INDEXED_BLOCK);
    assert!(
        a_end <= x.a.len() && b_end <= x.b.len() && n <= ldc && (m - 1) * ldc + n <= c.len(),
        "nnc internal error: indexed product operands do not fit ({m}x{k}x{n})"
    );
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assert above bounds every read of A and B and every
        // write of C; `detect` saw AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::indexed(n, x, beta, c, ldc) },
        Isa::Generic => indexed_generic(n, x, beta, c, ldc),
    }
}

/// Packs 16 rows whose depth is contiguous (`lines[t][q]`, `q < depth`)
/// into one B panel for [`indexed`]: `dst[q * 16 + t] = lines[t][q]` (a
/// transpose; 8 x 8 register blocks with AVX2).
///
/// # Panics
/// If `dst` or a line is shorter than needed: an nnc bug.
pub(crate) fn pack_panel(dst: &mut [f32], lines: &[&[f32]; INDEXED_BLOCK], depth: usize) {
    assert!(dst.len() >= INDEXED_BLOCK * depth && lines.iter().all(|l| l.len() >= depth));
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx2 {
        // SAFETY: AVX2 detected; lengths asserted above (and again inside).
        unsafe { avx2::pack_rows::<INDEXED_BLOCK>(dst, lines, depth) };
        return;
    }
    for (q, out) in dst.chunks_exact_mut(INDEXED_BLOCK).take(depth).enumerate() {
        for (o, line) in out.iter_mut().zip(lines) {
            *o = line[q];
        }
    }
}

/// Whether [`indexed`] runs a vector kernel on this CPU (else it is plain
/// loops, and callers had better copy into a packed GEMM instead).
pub(crate) fn indexed_is_fast() -> bool {
    Isa::detect() != Isa::Generic
}

/// [`indexed`] in plain loops (any CPU; also the tests' second opinion).
pub(crate) fn indexed_generic(n: usize, x: &Indexed<'_>, beta: f32, c: &mut [f32], ldc: usize) {
    let b_at =
        |p: usize, j: usize| x.b[(j / INDEXED_BLOCK) * x.b_block + x.b_rows[p] + j % INDEXED_BLOCK];
    for (i, &ar) in x.a_rows.iter().enumerate() {
        let a = &x.a[ar..][..x.b_rows.len()];
        for (j, out) in c[i * ldc..][..n].iter_mut().enumerate() {
            let sum: f32 = a.iter().enumerate().map(|(p, &v)| v * b_at(p, j)).sum();
            *out = if beta == 0.0 { sum } else { sum + beta * *out };
        }
    }
}

// ---------------------------------------------------------------------------
// Implementation.
// ---------------------------------------------------------------------------

/// Depth of a packed block (the shared `k` dimension). Deeper blocks mean
/// fewer passes over C (each loads and stores every tile once); a `KC x NR`
/// panel of B (32 KiB for the AVX2 kernel) no longer fits in L1 beside the
/// A panels, but L2 feeds the kernel's two B loads per step with room to
/// spare. Measured on an AVX2 Zen 3, interleaved in one process, 512 against
/// 256: 1.8–3.5% faster on one thread on all of W2's products and on square
/// 512 and 1024, within ±1.5% on two threads. (The result of a product
/// depends on `KC`, never on the thread count.)
const KC: usize = 512;
/// Rows of op(A) per block: an `MC x KC` block of A (288 KiB) stays in L2.
const MC: usize = 144;
/// Columns of op(B) per block: a `KC x NC` block of B (8 MiB) stays in L3.
const NC: usize = 4080;
/// Below this many columns of C, an untransposed A is read in place instead
/// of packed: packing costs about one store per element of A, while each
/// element only feeds `n` multiply-adds.
const PACK_A_MIN_N: usize = 512;
/// Depth steps ahead that [`pack`] prefetches a run of a strided operand.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PACK_PREFETCH_AHEAD: usize = 8;
/// Floats in a 4 KiB page: the stride from which [`pack`] prefetches.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PAGE_FLOATS: usize = 4096 / std::mem::size_of::<f32>();
/// Multiply-adds a rayon task must at least get before a product is split.
const MIN_WORK_PER_THREAD: usize = 1 << 20;
/// Floats of slack in front of each buffer, to align its start to 64 bytes.
const ALIGN_SLACK: usize = 16;

/// Kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Portable Rust, vectorised by the compiler for the target baseline.
    Generic,
    /// x86_64 AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best family this CPU runs, detected on first use and cached.
    fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
            Isa::Generic
        })
    }
}

/// op(X) as a strided view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn of(x: MatRef<'a>) -> Self {
        match x.trans {
            Trans::No => View {
                data: x.data,
                rs: x.ld,
                cs: 1,
            },
            Trans::Yes => View {
                data: x.data,
                rs: 1,
                cs: x.ld,
            },
        }
    }

    /// The transposed view (same storage).
    fn t(self) -> Self {
        View {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// The view whose `(0, 0)` is this one's `(i, j)`; that element must exist.
    fn sub(self, i: usize, j: usize) -> Self {
        View {
            data: &self.data[i * self.rs + j * self.cs..],
            ..self
        }
    }
}

/// C as a raw pointer, so that threads can write disjoint column ranges of
/// the same rows (which `&mut` slices cannot express).
#[derive(Debug, Clone, Copy)]
struct CPtr {
    ptr: *mut f32,
    ld: usize,
}

// SAFETY: a `CPtr` is only shared between the tasks of one `run`, which write
// disjoint blocks of C while the caller's `&mut [f32]` borrow is held.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// The sub-matrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must be an element of the matrix this points to.
    unsafe fn sub(self, i: usize, j: usize) -> Self {
        CPtr {
            // SAFETY: in bounds by the caller's contract.
            ptr: unsafe { self.ptr.add(i * self.ld + j) },
            ld: self.ld,
        }
    }
}

/// One product, bounds already checked: `C = alpha * op(A) @ op(B) + beta * C`.
#[derive(Clone, Copy)]
struct Problem<'a> {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    a: View<'a>,
    b: View<'a>,
    c: CPtr,
    /// Applied to each finished block of C.
    epilogue: Option<Epilogue<'a>>,
    /// Where this (sub-)problem's C starts in the caller's C, so the
    /// epilogue sees the caller's row and column numbers.
    row0: usize,
    col0: usize,
}

/// One microkernel call: `C[..mr, ..nr] = alpha * Apanel @ Bpanel + beta * C`.
///
/// Element `(r, p)` of the A panel (`r < MR`, `p < kc`) is at
/// `a + r * a_rs + p * a_cs`; the B panel is packed: element `(p, j)` at
/// `b + p * NR + j`; panel rows and columns past `mr x nr` are zero padding.
/// The kernel writes only the tile's `mr x nr` top-left corner to C (row
/// stride `ldc`); C is not read when `beta == 0`.
#[derive(Debug, Clone, Copy)]
struct Tile {
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
}

/// A register-blocked microkernel.
trait Microkernel {
    /// Rows of a tile.
    const MR: usize;
    /// Columns of a tile.
    const NR: usize;

    /// [`pack`] into `MR`-row panels.
    ///
    /// # Safety
    /// The CPU must support the kernel's instructions.
    unsafe fn pack_a(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize);

    /// [`pack`] into `NR`-row panels (rows of op(B)^T).
    ///
    /// # Safety
    /// As for [`Microkernel::pack_a`].
    unsafe fn pack_b(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize);

    /// Runs one tile.
    ///
    /// # Safety
    /// Every A element `(r, p)`, `r < MR, p < kc`, and B element `(p, j)`,
    /// `j < NR`, must be readable; C must be writable for `mr x nr` elements
    /// at row stride `ldc` and not accessed by anyone else meanwhile; the CPU
    /// must support the kernel's instructions.
    unsafe fn tile(t: &Tile);
}

/// Per-thread packing buffers; they only grow.
struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = const {
        std::cell::RefCell::new(Workspace { a: Vec::new(), b: Vec::new() })
    };
}

/// Runs `f` with this thread's workspace.
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        // Unreachable in practice (kernels never call back into `sgemm`), but
        // a fresh workspace is correct, merely slower.
        Err(_) => f(&mut Workspace {
            a: Vec::new(),
            b: Vec::new(),
        }),
    })
}

/// Floats a packing buffer can ever need (blocks are at most `MC` or `NC`
/// rows plus a partial tile, by `KC` deep), which [`aligned`] reserves the
/// first time a buffer grows.
const WORKSPACE_MAX: usize = (NC + 16) * KC + ALIGN_SLACK;

/// Gives the calling thread and every thread of the current rayon pool its
/// packing buffers now (address space for the largest block; see
/// the buffers' first growth), so no later product allocates: without this, a worker that
/// first runs part of a product several steps into training allocates its
/// buffers then. Building a [`crate::parallel::StepRunner`] does this.
pub fn reserve_workspaces() {
    let reserve = || {
        with_workspace(|ws| {
            for buf in [&mut ws.a, &mut ws.b] {
                if buf.capacity() < WORKSPACE_MAX {
                    buf.reserve_exact(WORKSPACE_MAX - buf.len());
                }
            }
        })
    };
    reserve();
    rayon::broadcast(|_| reserve());
}

/// `len` floats of `buf`, starting at a 64-byte boundary when the allocator
/// allows it; grows `buf` only when it is too small.
///
/// The first growth reserves the most any product can need, so each buffer
/// is allocated once per thread: which worker runs which part of a product
/// varies from step to step, and a worker meeting a larger part than before
/// must not allocate mid-training. The reservation is address space; only
/// the floats in use are ever written, so the resident set grows with use.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + ALIGN_SLACK {
        if buf.capacity() < len + ALIGN_SLACK {
            buf.reserve_exact(WORKSPACE_MAX.max(len + ALIGN_SLACK) - buf.len());
        }
        buf.resize(len + ALIGN_SLACK, 0.0);
    }
    let off = buf.as_ptr().align_offset(64);
    let off = if off < ALIGN_SLACK { off } else { 0 };
    &mut buf[off..off + len]
}

/// Splits a product over up to `threads` rayon tasks and runs it.
///
/// # Safety
/// Every element of op(A), op(B) and C must be in bounds of its storage, C
/// must not be accessed by anyone else during the call, and the CPU must
/// support `K`'s instructions.
unsafe fn run<K: Microkernel>(p: Problem<'_>, threads: usize) {
    let work = p.m.saturating_mul(p.n).saturating_mul(p.k);
    let threads = threads.min(work / MIN_WORK_PER_THREAD).max(1);
    // Split the dimension with more tiles; each task gets whole tiles.
    let split_n = p.n.div_ceil(K::NR) >= p.m.div_ceil(K::MR);
    let (len, unit) = if split_n { (p.n, K::NR) } else { (p.m, K::MR) };
    let units = len.div_ceil(unit);
    let threads = threads.min(units);
    if threads <= 1 {
        // SAFETY: forwarded contract.
        with_workspace(|ws| unsafe { serial::<K>(p, ws) });
        return;
    }
    let chunk = units.div_ceil(threads) * unit;
    use rayon::prelude::*;
    (0..len.div_ceil(chunk)).into_par_iter().for_each(|t| {
        let start = t * chunk;
        let size = chunk.min(len - start);
        // SAFETY: `start` indexes an existing row or column, so the
        // sub-views start inside their matrices; tasks get disjoint column
        // (or row) ranges of C, so no element is written by two of them.
        let part = unsafe {
            if split_n {
                Problem {
                    n: size,
                    b: p.b.sub(0, start),
                    c: p.c.sub(0, start),
                    col0: p.col0 + start,
                    ..p
                }
            } else {
                Problem {
                    m: size,
                    a: p.a.sub(start, 0),
                    c: p.c.sub(start, 0),
                    row0: p.row0 + start,
                    ..p
                }
            }
        };
        // SAFETY: forwarded contract, restricted to this task's block.
        with_workspace(|ws| unsafe { serial::<K>(part, ws) });
    });
}

/// `n` split into equal blocks of at most `max`, rounded up to `unit`.
fn block(n: usize, max: usize, unit: usize) -> usize {
    n.div_ceil(n.div_ceil(max)).div_ceil(unit) * unit
}

/// The product on the calling thread.
///
/// # Safety
/// As for [`run`].
unsafe fn serial<K: Microkernel>(p: Problem<'_>, ws: &mut Workspace) {
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = block(p.k, KC, 1);
    let mc_max = block(p.m, MC, mr);
    let nc_max = block(p.n, NC, nr);
    // An untransposed A (`cs == 1`) of a narrow product is read in place;
    // only a ragged last panel is packed (zero-padded) then.
    let pack_a = p.a.cs != 1 || p.n >= PACK_A_MIN_N;
    let a_len = if pack_a { mc_max * kc_max } else { mr * kc_max };
    let Workspace { a: a_buf, b: b_buf } = ws;
    let a_buf = aligned(a_buf, a_len);
    let b_buf = aligned(b_buf, nc_max * kc_max);

    for j0 in (0..p.n).step_by(nc_max) {
        let nc = nc_max.min(p.n - j0);
        for (kb, p0) in (0..p.k).step_by(kc_max).enumerate() {
            let kc = kc_max.min(p.k - p0);
            // Later depth blocks accumulate onto the first one's result.
            let beta = if kb == 0 { p.beta } else { 1.0 };
            // Columns of op(B) are rows of op(B)^T: pack those into panels.
            let b_panels = &mut b_buf[..nc.div_ceil(nr) * nr * kc];
            // SAFETY: the caller vouches for the CPU features.
            unsafe { K::pack_b(b_panels, p.b.t().sub(j0, p0), nc, kc) };
            for i0 in (0..p.m).step_by(mc_max) {
                let mc = mc_max.min(p.m - i0);
                let a_blk = p.a.sub(i0, p0);
                // Rows [packed_from, mc) of this block come from `a_buf`.
                let packed_from = if pack_a { 0 } else { mc / mr * mr };
                if packed_from < mc {
                    let rows = mc - packed_from;
                    let a_panels = &mut a_buf[..rows.div_ceil(mr) * mr * kc];
                    // SAFETY: as above.
                    unsafe { K::pack_a(a_panels, a_blk.sub(packed_from, 0), rows, kc) };
                }
                for jr in (0..nc).step_by(nr) {
                    let b_panel = &b_panels[jr * kc..][..nr * kc];
                    for ir in (0..mc).step_by(mr) {
                        let (a, a_rs, a_cs) = if ir >= packed_from {
                            let panel = &a_buf[(ir - packed_from) * kc..][..mr * kc];
                            (panel.as_ptr(), 1, mr)
                        } else {
                            (a_blk.sub(ir, 0).data.as_ptr(), a_blk.rs, 1)
                        };
                        let t = Tile {
                            kc,
                            a,
                            a_rs,
                            a_cs,
                            b: b_panel.as_ptr(),
                            // SAFETY: (i0 + ir, j0 + jr) is an element of C.
                            c: unsafe { p.c.sub(i0 + ir, j0 + jr) }.ptr,
                            ldc: p.c.ld,
                            alpha: p.alpha,
                            beta,
                            mr: mr.min(mc - ir),
                            nr: nr.min(nc - jr),
                        };
                        // SAFETY: the A panel is either packed (`MR * kc`
                        // floats of `a_buf`) or rows ir..ir+MR <= mc of the
                        // block in place, all inside A by `check`; the B panel
                        // holds `NR * kc` floats; the tile's `mr x nr` corner
                        // lies inside C, which this call owns; the caller
                        // guarantees the CPU features.
                        unsafe { K::tile(&t) };
                    }
                }
                // The block is final after the last depth block: hand it to
                // the epilogue while it is still in cache.
                if let Some(f) = p.epilogue.filter(|_| p0 + kc == p.k) {
                    for r in 0..mc {
                        // SAFETY: row i0 + r, columns j0..j0 + nc are inside
                        // this task's part of C, which no one else touches
                        // during the call.
                        let row =
                            unsafe { std::slice::from_raw_parts_mut(p.c.sub(i0 + r, j0).ptr, nc) };
                        f(p.row0 + i0 + r, p.col0 + j0, row);
                    }
                }
            }
        }
    }
}

/// Packs the first `rows` rows of `src` (depth `depth`) into `W`-row panels:
/// element `(r, p)` goes to `dst[(r / W) * W * depth + p * W + r % W]`; rows of
/// the last panel past `rows` are zero.
///
/// # Safety
/// If `avx2` (used to transpose 16-row panels whose depth is contiguous), the
/// CPU must support AVX2.
unsafe fn pack<const W: usize>(
    dst: &mut [f32],
    src: View<'_>,
    rows: usize,
    depth: usize,
    avx2: bool,
) {
    for (q, panel) in dst.chunks_exact_mut(W * depth).enumerate() {
        let r0 = q * W;
        let live = W.min(rows - r0);
        let src = src.sub(r0, 0);
        if src.rs == 1 {
            // Each depth step's `live` values are contiguous: copy runs.
            for (p, out) in panel.chunks_exact_mut(W).enumerate() {
                // Runs a page or more apart defeat the hardware prefetchers
                // (they stop at 4 KiB page boundaries), so the loads would
                // miss one after another: fetch the run a few steps ahead by
                // hand. (1–2% of W2's products, measured interleaved.)
                #[cfg(target_arch = "x86_64")]
                if src.cs >= PAGE_FLOATS {
                    if let Some(ahead) = src.data.get((p + PACK_PREFETCH_AHEAD) * src.cs..) {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                        let first = ahead.as_ptr();
                        // SAFETY: a prefetch reads nothing observable and
                        // cannot fault; both addresses are inside `src.data`
                        // or just past the run's end.
                        unsafe {
                            _mm_prefetch::<_MM_HINT_T0>(first.cast());
                            _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(live - 1).cast());
                        }
                    }
                }
                let run = &src.data[p * src.cs..];
                if live == W {
                    out.copy_from_slice(&run[..W]);
                } else {
                    out[..live].copy_from_slice(&run[..live]);
                    out[live..].fill(0.0);
                }
            }
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2 && (W == 16 || W == 6) && live == W && src.cs == 1 {
            let lines: [&[f32]; W] = std::array::from_fn(|r| &src.data[r * src.rs..][..depth]);
            // SAFETY: the caller vouches for AVX2.
            unsafe { avx2::pack_rows(panel, &lines, depth) };
            continue;
        }
        let _ = avx2;
        // General gather, one source row at a time (contiguous when
        // `cs == 1`, the untransposed-A case).
        for r in 0..live {
            let line = &src.data[r * src.rs..];
            for (p, out) in panel.chunks_exact_mut(W).enumerate() {
                out[r] = line[p * src.cs];
            }
        }
        if live < W {
            for out in panel.chunks_exact_mut(W) {
                out[live..].fill(0.0);
            }
        }
    }
}

/// The portable kernel: plain arrays the compiler keeps in vector registers.
mod generic {
    use super::{pack, Microkernel, Tile, View};

    const MR: usize = 4;
    const NR: usize = 8;

    /// `4 x 8` tiles, any CPU.
    pub(super) struct Kernel;

    impl Microkernel for Kernel {
        const MR: usize = MR;
        const NR: usize = NR;

        unsafe fn pack_a(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize) {
            // SAFETY: no CPU features claimed.
            unsafe { pack::<MR>(dst, src, rows, depth, false) };
        }

        unsafe fn pack_b(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize) {
            // SAFETY: no CPU features claimed.
            unsafe { pack::<NR>(dst, src, rows, depth, false) };
        }

        unsafe fn tile(t: &Tile) {
            let mut acc = [[0f32; NR]; MR];
            for p in 0..t.kc {
                // SAFETY: (r, p) and (p, j) are in the panels (trait contract).
                let b: &[f32; NR] = unsafe { &*t.b.add(p * NR).cast() };
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    let a = unsafe { *t.a.add(r * t.a_rs + p * t.a_cs) };
                    for (x, &y) in row.iter_mut().zip(b) {
                        *x += a * y;
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(t.mr) {
                for (j, &x) in row.iter().enumerate().take(t.nr) {
                    // SAFETY: (r, j) is inside the tile's C corner.
                    let c = unsafe { &mut *t.c.add(r * t.ldc + j) };
                    *c = if t.beta == 0.0 {
                        t.alpha * x
                    } else {
                        t.alpha * x + t.beta * *c
                    };
                }
            }
        }
    }
}

/// The AVX2 + FMA kernel and packing helper.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{pack, Microkernel, Tile, View};
    use std::arch::x86_64::*;

    const MR: usize = 6;
    const NR: usize = 16;
    // The indexed product runs these tiles; the convolution's scratch sizing
    // (`nnc_geometry::implicit`, shared with the compiler) assumes them.
    const _: () = assert!(MR == nnc_geometry::implicit::TILE_ROWS);
    const _: () = assert!(NR == super::INDEXED_BLOCK);

    /// `6 x 16` tiles: 12 accumulators, 2 B loads and 1 A broadcast in the
    /// 16 `ymm` registers; 12 FMAs per 8 loads keeps both FMA ports busy.
    pub(super) struct Kernel;

    impl Microkernel for Kernel {
        const MR: usize = MR;
        const NR: usize = NR;

        unsafe fn pack_a(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize) {
            // SAFETY: the caller vouches for AVX2 (trait contract).
            unsafe { pack::<MR>(dst, src, rows, depth, true) };
        }

        unsafe fn pack_b(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize) {
            // SAFETY: as above.
            unsafe { pack::<NR>(dst, src, rows, depth, true) };
        }

        unsafe fn tile(t: &Tile) {
            // SAFETY: forwarded contract (which includes AVX2 + FMA support).
            unsafe { tile(t) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile(t: &Tile) {
        // SAFETY: forwarded contract. Short edge tiles (always packed) skip
        // the rows that are only zero padding.
        unsafe {
            if t.a_rs == 1 && t.a_cs == MR {
                match t.mr {
                    1 | 2 => kernel::<2, true>(t),
                    3 | 4 => kernel::<4, true>(t),
                    _ => kernel::<MR, true>(t),
                }
            } else {
                kernel::<MR, false>(t)
            }
        }
    }

    /// One tile of at most `R` rows; `PACKED`: the A panel is packed
    /// (`a_rs == 1, a_cs == MR`), else it is read in place with its strides.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const R: usize, const PACKED: bool>(t: &Tile) {
        // Start fetching the C tile now: its rows are `ldc` apart and are
        // often cache misses (or conflict misses when `ldc` is a multiple of
        // 1024); the loads then overlap the multiply loop instead of
        // stalling the stores after it.
        for r in 0..t.mr {
            // SAFETY: rows r < mr, columns 0 and nr - 1 are in the C tile.
            unsafe {
                let row = t.c.add(r * t.ldc);
                _mm_prefetch::<_MM_HINT_T0>(row.cast());
                _mm_prefetch::<_MM_HINT_T0>(row.add(t.nr - 1).cast());
            }
        }
        // SAFETY: forwarded contract.
        unsafe {
            let acc = if PACKED {
                // Constant offsets, one pointer bump per step.
                accumulate::<R>(t.kc, |p| t.b.add(p * NR), |p, r| t.a.add(p * MR + r))
            } else {
                // One pointer per row, so no row's address waits on
                // another's (a chain of adds would cap the loop's speed).
                let rows: [*const f32; R] = std::array::from_fn(|r| t.a.add(r * t.a_rs));
                accumulate::<R>(t.kc, |p| t.b.add(p * NR), |p, r| rows[r].add(p * t.a_cs))
            };
            store(t, acc)
        }
    }

    /// [`super::indexed`] on AVX2: one `6 x 16` tile at a time, B read in
    /// place through its row table (one extra load per depth step).
    ///
    /// # Safety
    /// The operands must fit their slices as `super::indexed` asserts; the
    /// CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn indexed(
        n: usize,
        x: &super::Indexed<'_>,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        let (m, k) = (x.a_rows.len(), x.b_rows.len());
        for j0 in (0..n).step_by(NR) {
            // SAFETY: block j0 / 16 lies inside `b` (caller's contract).
            let b = unsafe { x.b.as_ptr().add(j0 / NR * x.b_block) };
            let b_rows = x.b_rows.as_ptr();
            for i0 in (0..m).step_by(MR) {
                let mr = MR.min(m - i0);
                // Rows past `mr` repeat the last one: read, never stored.
                let row = |r: usize| {
                    // SAFETY: a_rows[i] + k <= a.len() for every row i.
                    unsafe { x.a.as_ptr().add(x.a_rows[i0 + r.min(mr - 1)]) }
                };
                let t = Tile {
                    kc: k,
                    a: std::ptr::null(),
                    a_rs: 0,
                    a_cs: 0,
                    b: std::ptr::null(),
                    // SAFETY: (i0, j0) is an element of C (caller's contract).
                    c: unsafe { c.as_mut_ptr().add(i0 * ldc + j0) },
                    ldc,
                    alpha: 1.0,
                    beta,
                    mr,
                    nr: NR.min(n - j0),
                };
                // SAFETY: A rows hold k floats from their start, B rows 16
                // from `b + b_rows[p]`, for p < k; the store writes the
                // tile's mr x nr corner of C only.
                unsafe {
                    let b_of = |p: usize| b.add(*b_rows.add(p));
                    match mr {
                        1 | 2 => {
                            let rows: [*const f32; 2] = std::array::from_fn(row);
                            store(&t, accumulate::<2>(k, b_of, |p, r| rows[r].add(p)));
                        }
                        3 | 4 => {
                            let rows: [*const f32; 4] = std::array::from_fn(row);
                            store(&t, accumulate::<4>(k, b_of, |p, r| rows[r].add(p)));
                        }
                        _ => {
                            let rows: [*const f32; MR] = std::array::from_fn(row);
                            store(&t, accumulate::<MR>(k, b_of, |p, r| rows[r].add(p)));
                        }
                    }
                }
            }
        }
    }

    /// The `kc`-step loop: sums `A[r, p] * B[p, 0..16]` for `r < R` into
    /// `2 * R` registers; `a(p, r)` gives the address of `A[r, p]`, `b(p)`
    /// the address of `B[p, 0]` (16 contiguous floats).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn accumulate<const R: usize>(
        kc: usize,
        b: impl Fn(usize) -> *const f32,
        a: impl Fn(usize, usize) -> *const f32,
    ) -> [[__m256; 2]; R] {
        // SAFETY (whole body): reads stay inside the A and B panels, per the
        // trait contract.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for p in 0..kc {
                let bp = b(p);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a(p, r));
                    row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(x, b1, row[1]);
                }
            }
            acc
        }
    }

    /// Writes `alpha * acc + beta * C` to the tile's `mr x nr` corner of C
    /// (`mr <= R`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store<const R: usize>(t: &Tile, mut acc: [[__m256; 2]; R]) {
        // SAFETY (whole body): writes stay inside the tile's C corner, per
        // the trait contract.
        unsafe {
            let alpha = _mm256_set1_ps(t.alpha);
            for row in &mut acc {
                row[0] = _mm256_mul_ps(row[0], alpha);
                row[1] = _mm256_mul_ps(row[1], alpha);
            }
            if t.mr == R && t.nr == NR {
                let beta = _mm256_set1_ps(t.beta);
                for (r, row) in acc.iter().enumerate() {
                    let c = t.c.add(r * t.ldc);
                    for (h, &x) in row.iter().enumerate() {
                        let c = c.add(8 * h);
                        let v = if t.beta == 0.0 {
                            x
                        } else if t.beta == 1.0 {
                            _mm256_add_ps(x, _mm256_loadu_ps(c))
                        } else {
                            _mm256_fmadd_ps(beta, _mm256_loadu_ps(c), x)
                        };
                        _mm256_storeu_ps(c, v);
                    }
                }
            } else {
                let mut tmp = [[0f32; NR]; R];
                for (out, row) in tmp.iter_mut().zip(&acc) {
                    _mm256_storeu_ps(out.as_mut_ptr(), row[0]);
                    _mm256_storeu_ps(out.as_mut_ptr().add(8), row[1]);
                }
                for (r, xs) in tmp.iter().enumerate().take(t.mr) {
                    for (j, &x) in xs.iter().enumerate().take(t.nr) {
                        let c = &mut *t.c.add(r * t.ldc + j);
                        *c = if t.beta == 0.0 { x } else { x + t.beta * *c };
                    }
                }
            }
        }
    }

    /// Packs `W` (6 or 16) rows whose depth is contiguous (`rows[r][p]`) into
    /// one panel `dst[p * W + r]`, transposing 8 x 8 blocks in registers.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_rows<const W: usize>(
        dst: &mut [f32],
        rows: &[&[f32]; W],
        depth: usize,
    ) {
        assert!(W == 6 || W == 16);
        assert!(dst.len() >= W * depth && rows.iter().all(|r| r.len() >= depth));
        let full = depth / 8 * 8;
        for p in (0..full).step_by(8) {
            for h in (0..W).step_by(8) {
                // SAFETY: p + 8 <= depth <= every row's length; the stores
                // write dst[(p + q) * W + h ..][..min(8, W - h)] for q < 8,
                // inside `W * depth <= dst.len()` (asserted above).
                unsafe {
                    let v: [__m256; 8] = std::array::from_fn(|i| {
                        if h + i < W {
                            _mm256_loadu_ps(rows[h + i].as_ptr().add(p))
                        } else {
                            _mm256_setzero_ps()
                        }
                    });
                    for (q, x) in transpose8(v).into_iter().enumerate() {
                        let out = dst.as_mut_ptr().add((p + q) * W + h);
                        if W == 16 {
                            _mm256_storeu_ps(out, x);
                        } else {
                            // Six lanes: four, then two.
                            _mm_storeu_ps(out, _mm256_castps256_ps128(x));
                            let hi = _mm256_extractf128_ps::<1>(x);
                            _mm_store_sd(out.add(4).cast(), _mm_castps_pd(hi));
                        }
                    }
                }
            }
        }
        for p in full..depth {
            for (r, row) in rows.iter().enumerate() {
                dst[p * W + r] = row[p];
            }
        }
    }

    /// Transposes an 8 x 8 block held as 8 row vectors.
    #[target_feature(enable = "avx2")]
    unsafe fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(v[0], v[1]);
        let t1 = _mm256_unpackhi_ps(v[0], v[1]);
        let t2 = _mm256_unpacklo_ps(v[2], v[3]);
        let t3 = _mm256_unpackhi_ps(v[2], v[3]);
        let t4 = _mm256_unpacklo_ps(v[4], v[5]);
        let t5 = _mm256_unpackhi_ps(v[4], v[5]);
        let t6 = _mm256_unpacklo_ps(v[6], v[7]);
        let t7 = _mm256_unpackhi_ps(v[6], v[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The oracle: textbook triple loop in f64 over explicit index formulas.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        alpha: f64,
        a: &MatRef<'_>,
        b: &MatRef<'_>,
        beta: f64,
        c: &[f32],
        ldc: usize,
    ) -> Vec<f64> {
        let at = |i: usize, p: usize| match a.trans {
            Trans::No => a.data[i * a.ld + p],
            Trans::Yes => a.data[p * a.ld + i],
        } as f64;
        let bt = |p: usize, j: usize| match b.trans {
            Trans::No => b.data[p * b.ld + j],
            Trans::Yes => b.data[j * b.ld + p],
        } as f64;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += at(i, p) * bt(p, j);
                }
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * ldc + j] as f64
                };
                out[i * n + j] = alpha * s + old;
            }
        }
        out
    }

    fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.uniform_f32(-1.0, 1.0)).collect()
    }

    /// Compares a product's C (`want.len() / n` rows of stride `ldc`)
    /// with the f64 oracle `want` (dense, `n` columns): every element
    /// within `tol * (1 + |want|)` (NaN never is), and the columns past `n`
    /// bit-identical to `c0`, C before the product. `label` names the case.
    fn close_to_naive(
        label: &str,
        c: &[f32],
        c0: &[f32],
        want: &[f64],
        (n, ldc): (usize, usize),
        tol: f64,
    ) -> Result<(), String> {
        for (i, w_row) in want.chunks_exact(n).enumerate() {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    if got.to_bits() != c0[i * ldc + j].to_bits() {
                        return Err(format!("{label}: C[{i},{j}] past n written"));
                    }
                    continue;
                }
                let w = w_row[j];
                let err = (f64::from(got) - w).abs();
                if err.is_nan() || err > tol * (1.0 + w.abs()) {
                    return Err(format!("{label}: C[{i},{j}] = {got}, want {w}"));
                }
            }
        }
        Ok(())
    }

    /// [`close_to_naive`] as an assertion.
    #[track_caller]
    fn assert_close_to_naive(
        label: &str,
        c: &[f32],
        c0: &[f32],
        want: &[f64],
        shape: (usize, usize),
        tol: f64,
    ) {
        if let Err(e) = close_to_naive(label, c, c0, want, shape, tol) {
            panic!("{e}");
        }
    }

    #[test]
    fn matches_naive_on_random_shapes_transposes_and_strides() {
        let mut rng = Rng::new(7);
        for case in 0..120 {
            let m = 1 + rng.below(40) as usize;
            let n = 1 + rng.below(40) as usize;
            let k = 1 + rng.below(70) as usize;
            let ta = if rng.below(2) == 0 {
                Trans::No
            } else {
                Trans::Yes
            };
            let tb = if rng.below(2) == 0 {
                Trans::No
            } else {
                Trans::Yes
            };
            let pad = rng.below(3) as usize;
            let (ar, ac) = if ta == Trans::No { (m, k) } else { (k, m) };
            let (br, bc) = if tb == Trans::No { (k, n) } else { (n, k) };
            let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
            let av = random(&mut rng, ar * lda);
            let bv = random(&mut rng, br * ldb);
            let c0 = random(&mut rng, m * ldc);
            let alpha = [1.0, 0.5, -2.0][case % 3];
            let beta = [0.0, 1.0, 0.25][(case / 3) % 3];
            let a = MatRef {
                data: &av,
                ld: lda,
                trans: ta,
            };
            let b = MatRef {
                data: &bv,
                ld: ldb,
                trans: tb,
            };
            let want = naive(m, n, k, alpha as f64, &a, &b, beta as f64, &c0, ldc);
            let par = if case % 4 == 0 {
                Parallelism::Rayon(2)
            } else {
                Parallelism::Sequential
            };
            let mut cv = c0.clone();
            sgemm(par, m, n, k, alpha, a, b, beta, &mut cv, ldc).unwrap();
            assert_close_to_naive(
                &format!("case {case} ({m}x{k}x{n} {ta:?} {tb:?})"),
                &cv,
                &c0,
                &want,
                (n, ldc),
                1e-5 * (k as f64).sqrt(),
            );
        }
    }

    #[test]
    fn padding_outside_c_is_untouched() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let mut c = [9.0; 6]; // 2x2 with ldc 3
        sgemm(
            Parallelism::Sequential,
            2,
            2,
            2,
            1.0,
            MatRef::new(&a, 2),
            MatRef::new(&b, 2),
            0.0,
            &mut c,
            3,
        )
        .unwrap();
        assert_eq!(c, [1.0, 2.0, 9.0, 3.0, 4.0, 9.0]);
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let a = [1.0, 2.0];
        let b = [3.0, 4.0];
        let mut c = [f32::NAN; 4];
        matmul(2, 1, 2, &a, &b, &mut c).unwrap();
        assert_eq!(c, [3.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn k_zero_scales_c() {
        let mut c = [2.0, 4.0];
        sgemm(
            Parallelism::Sequential,
            1,
            2,
            0,
            1.0,
            MatRef::new(&[], 0),
            MatRef::new(&[], 2),
            0.5,
            &mut c,
            2,
        )
        .unwrap();
        assert_eq!(c, [1.0, 2.0]);
    }

    #[test]
    fn short_slices_are_errors_not_panics() {
        let a = [0.0; 5];
        let b = [0.0; 6];
        let mut c = [0.0; 4];
        let err = matmul(2, 3, 2, &a, &b, &mut c).unwrap_err();
        assert!(
            matches!(err, GemmError::TooShort { operand: "A", .. }),
            "{err}"
        );
        let err = sgemm(
            Parallelism::Sequential,
            2,
            2,
            3,
            1.0,
            MatRef::new(&[0.0; 6], 2),
            MatRef::new(&b, 2),
            0.0,
            &mut c,
            2,
        )
        .unwrap_err();
        assert!(
            matches!(err, GemmError::LeadingDim { operand: "A", .. }),
            "{err}"
        );
        let err = matmul(2, 3, 2, &[0.0; 6], &b, &mut [0.0; 3]).unwrap_err();
        assert!(
            matches!(err, GemmError::TooShort { operand: "C", .. }),
            "{err}"
        );
    }

    /// Every kernel family this CPU can run.
    fn kernels() -> Vec<Isa> {
        let mut v = vec![Isa::Generic];
        if Isa::detect() != Isa::Generic {
            v.push(Isa::detect());
        }
        v
    }

    /// Runs one product with every kernel against the oracle; C starts as
    /// NaN when `beta == 0` (which must not be read) and the padding of C
    /// past column `n` must come back bit-identical.
    #[allow(clippy::too_many_arguments)]
    fn check_product(
        rng: &mut Rng,
        par: Parallelism,
        (m, n, k): (usize, usize, usize),
        (ta, tb): (Trans, Trans),
        pad: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<(), String> {
        let (ar, ac) = if ta == Trans::No { (m, k) } else { (k, m) };
        let (br, bc) = if tb == Trans::No { (k, n) } else { (n, k) };
        let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
        let av = random(rng, ar * lda);
        let bv = random(rng, br * ldb);
        let c0 = if beta == 0.0 {
            vec![f32::NAN; m * ldc]
        } else {
            random(rng, m * ldc)
        };
        let a = MatRef {
            data: &av,
            ld: lda,
            trans: ta,
        };
        let b = MatRef {
            data: &bv,
            ld: ldb,
            trans: tb,
        };
        let want = naive(m, n, k, alpha as f64, &a, &b, beta as f64, &c0, ldc);
        for isa in kernels() {
            let mut cv = c0.clone();
            sgemm_with(isa, par, m, n, k, alpha, a, b, beta, &mut cv, ldc, None)
                .map_err(|e| e.to_string())?;
            // The same product with an epilogue that must see every element
            // of C exactly once, with the caller's row and column numbers.
            let visits: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
            let ep = |row: usize, col0: usize, seg: &mut [f32]| {
                for (j, x) in seg.iter_mut().enumerate() {
                    visits[row * n + col0 + j].fetch_add(1, Ordering::Relaxed);
                    *x = *x * 2.0 + row as f32 - 0.5 * (col0 + j) as f32;
                }
            };
            let mut ce = c0.clone();
            sgemm_with(
                isa,
                par,
                m,
                n,
                k,
                alpha,
                a,
                b,
                beta,
                &mut ce,
                ldc,
                Some(&ep),
            )
            .map_err(|e| e.to_string())?;
            for i in 0..m {
                for j in 0..n {
                    let seen = visits[i * n + j].load(Ordering::Relaxed);
                    if seen != 1 {
                        return Err(format!("{isa:?}: epilogue saw ({i},{j}) {seen} times"));
                    }
                    let want = cv[i * ldc + j] * 2.0 + i as f32 - 0.5 * j as f32;
                    let got = ce[i * ldc + j];
                    if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                        return Err(format!(
                            "{isa:?}: epilogue result ({i},{j}) {got} vs {want}"
                        ));
                    }
                }
            }
            close_to_naive(
                &format!(
                    "{isa:?} {m}x{k}x{n} {ta:?} {tb:?} pad {pad} alpha {alpha} beta {beta} {par:?}"
                ),
                &cv,
                &c0,
                &want,
                (n, ldc),
                1e-5 * (k as f64).sqrt(),
            )?;
        }
        Ok(())
    }

    fn trans(t: bool) -> Trans {
        if t {
            Trans::Yes
        } else {
            Trans::No
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Random small shapes (every edge-tile combination of both kernels),
        /// all four transpose combinations, leading-dimension padding,
        /// alpha/beta including beta = 0 over a NaN-filled C.
        #[test]
        fn random_small_products_match_naive(
            m in 1usize..80,
            n in 1usize..80,
            k in 1usize..80,
            ta: bool,
            tb: bool,
            pad in 0usize..3,
            alpha in proptest::sample::select(vec![1.0f32, -0.5, 3.0]),
            beta in proptest::sample::select(vec![0.0f32, 1.0, -0.75]),
            seed: u64,
        ) {
            let mut rng = Rng::new(seed);
            let r = check_product(
                &mut rng,
                Parallelism::Sequential,
                (m, n, k),
                (trans(ta), trans(tb)),
                pad,
                alpha,
                beta,
            );
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }

    #[test]
    fn products_crossing_every_block_boundary_match_naive() {
        let mut rng = Rng::new(11);
        // (m, n, k): m > MC, k > KC, n >= PACK_A_MIN_N (packed A) and below
        // (A read in place), n > NC, and shapes split over rayon along n and
        // along m.
        let shapes = [
            (150, 520, 600),
            (151, 97, 515),
            (13, 4200, 5),
            (5, 3, 1000),
            (300, 40, 200),
        ];
        for (s, &shape) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for par in [Parallelism::Sequential, Parallelism::Rayon(0)] {
                    let (alpha, beta) = [(1.0, 0.0), (0.5, 1.0), (-1.0, 0.25)][s % 3];
                    let pad = s % 2;
                    check_product(
                        &mut rng,
                        par,
                        shape,
                        (trans(ta), trans(tb)),
                        pad,
                        alpha,
                        beta,
                    )
                    .unwrap();
                }
            }
        }
    }

    /// Counts heap allocations per thread, so that tests running
    /// concurrently in this binary do not disturb each other's counts.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static COUNT: Cell<usize> = const { Cell::new(0) };
        }

        struct Counting;

        fn bump() {
            // `try_with`: the count has no destructor, but be safe anyway
            // during thread teardown.
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }

        // SAFETY: forwards to `System`, only adding a thread-local count.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                bump();
                // SAFETY: forwarded contract.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: forwarded contract.
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                bump();
                // SAFETY: forwarded contract.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        /// Allocations made so far by the calling thread.
        pub(super) fn allocations() -> usize {
            COUNT.with(Cell::get)
        }
    }

    /// The indexed product (implicit im2col) on random row tables: the AVX2
    /// kernel (where the CPU has it) and the plain loops against f64 sums;
    /// C beyond `n` columns untouched, NaN in C ignored when `beta == 0`.
    #[test]
    fn indexed_product_matches_naive() {
        let mut rng = Rng::new(11);
        for case in 0..300 {
            let m = 1 + rng.below(14) as usize;
            let k = 1 + rng.below(40) as usize;
            let n = 1 + rng.below(50) as usize;
            let blocks = n.div_ceil(INDEXED_BLOCK);
            let a_rows: Vec<usize> = (0..m).map(|_| rng.below(30) as usize).collect();
            let b_rows: Vec<usize> = (0..k).map(|_| rng.below(30) as usize).collect();
            let b_block = INDEXED_BLOCK + rng.below(20) as usize;
            let a = random(&mut rng, 30 + k);
            let b = random(&mut rng, (blocks - 1) * b_block + 30 + INDEXED_BLOCK);
            let x = Indexed {
                a: &a,
                a_rows: &a_rows,
                b: &b,
                b_rows: &b_rows,
                b_block,
            };
            let ldc = n + rng.below(3) as usize;
            let beta = [0.0, 1.0, 0.5][case % 3];
            let c0: Vec<f32> = random(&mut rng, m * ldc)
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    if beta == 0.0 && i % 7 == 0 {
                        f32::NAN
                    } else {
                        v
                    }
                })
                .collect();
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut sum = 0f64;
                    for p in 0..k {
                        let bv = b[(j / INDEXED_BLOCK) * b_block + b_rows[p] + j % INDEXED_BLOCK];
                        sum += f64::from(a[a_rows[i] + p]) * f64::from(bv);
                    }
                    if beta != 0.0 {
                        sum += f64::from(beta) * f64::from(c0[i * ldc + j]);
                    }
                    want[i * n + j] = sum;
                }
            }
            let generic = |c: &mut [f32]| indexed_generic(n, &x, beta, c, ldc);
            let dispatched = |c: &mut [f32]| indexed(n, &x, beta, c, ldc);
            for (name, run) in [
                ("generic", &generic as &dyn Fn(&mut [f32])),
                ("dispatched", &dispatched),
            ] {
                let mut c = c0.clone();
                run(&mut c);
                assert_close_to_naive(
                    &format!("{name} case {case} ({m}x{k}x{n})"),
                    &c,
                    &c0,
                    &want,
                    (n, ldc),
                    1e-4,
                );
            }
        }
    }

    #[test]
    fn repeated_calls_do_not_allocate() {
        let mut rng = Rng::new(3);
        let (m, n, k) = (150, 600, 300);
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let mut c = vec![0.0; m * n];
        // The shapes of one training step of a dense layer, every kernel.
        let mut step = |isa| {
            for (ta, tb) in [(false, false), (true, false), (false, true)] {
                let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
                let a = MatRef {
                    data: &a,
                    ld: lda,
                    trans: trans(ta),
                };
                let b = MatRef {
                    data: &b,
                    ld: ldb,
                    trans: trans(tb),
                };
                for (mm, nn) in [(m, n), (m, 100), (7, 9)] {
                    sgemm_with(
                        isa,
                        Parallelism::Sequential,
                        mm,
                        nn,
                        k,
                        1.0,
                        a,
                        b,
                        0.0,
                        &mut c,
                        n,
                        None,
                    )
                    .unwrap();
                }
            }
        };
        for isa in kernels() {
            step(isa);
            let before = counting::allocations();
            step(isa);
            step(isa);
            let n = counting::allocations() - before;
            assert_eq!(n, 0, "{isa:?}: {n} allocations after warm-up");
        }
        // A thread that first meets a small product does not allocate for a
        // larger one: which worker gets which part of a product varies.
        std::thread::spawn(move || {
            let mut c = vec![0.0; m * n];
            let mut product = |mm: usize, nn: usize, isa| {
                let (a, b) = (MatRef::new(&a, k), MatRef::new(&b, n));
                let par = Parallelism::Sequential;
                sgemm_with(isa, par, mm, nn, k, 1.0, a, b, 0.0, &mut c, n, None).unwrap();
            };
            for isa in kernels() {
                product(7, 9, isa);
                let before = counting::allocations();
                product(m, n, isa);
                let n = counting::allocations() - before;
                assert_eq!(n, 0, "{isa:?}: {n} allocations for a larger product");
            }
        })
        .join()
        .unwrap();
        // The counter does count.
        let before = counting::allocations();
        drop(std::hint::black_box(vec![1u8; 3]));
        assert_eq!(counting::allocations() - before, 1);
    }
}
