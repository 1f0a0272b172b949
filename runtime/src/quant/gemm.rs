//! The int8 product generated code calls: u8 activations `[m, k]` × packed
//! i8 weights `[k, n]` → exact i32 accumulators, requantized in the
//! epilogue; bounds checks, and the split over rayon tasks.

use super::epilogue::{Kind, Sink};
use super::kernel::{serial, Isa, Seg, ROW_UNIT};
use super::{ActQuant, PackedWeights, QuantError, MAX_DEPTH};
use crate::gemm::Parallelism;

/// Multiply-adds a rayon task must at least get before a product is split
/// (twice the f32 GEMM's threshold: an int8 multiply-add costs about half).
const MIN_WORK_PER_THREAD: usize = 1 << 21;

/// The activation operand: `m` rows of `k` bytes, row `i` starting at
/// `data[i · ld]` (so a sub-block of a larger buffer can be passed), all
/// quantized with `quant`.
#[derive(Debug, Clone, Copy)]
pub struct QMatRef<'a> {
    /// The bytes; must cover `(m − 1) · ld + k` of them.
    pub data: &'a [u8],
    /// Distance between the starts of consecutive rows (`≥ k`).
    pub ld: usize,
    /// The activations' scale and zero point.
    pub quant: ActQuant,
}

impl<'a> QMatRef<'a> {
    /// An operand of rows `ld` bytes apart.
    pub fn new(data: &'a [u8], ld: usize, quant: ActQuant) -> Self {
        QMatRef { data, ld, quant }
    }
}

/// What the f32 and u8 outputs apply after scaling: a per-channel bias,
/// then ReLU.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `n` biases in f32, added after scaling (see the module docs for why
    /// they are not quantized).
    pub bias: Option<&'a [f32]>,
    /// Clamp negative outputs to 0 (after the bias).
    pub relu: bool,
}

/// Where a product's result goes and in which format; the output matrix is
/// row-major `[m, n]` with leading dimension `ldc` (see [`qgemm`]).
/// Elements outside the `m × n` block are never touched.
#[derive(Debug)]
pub enum Output<'a> {
    /// The exact accumulators `Σ_k (a[i, k] − zp_a) · q[k, n]`, zero point
    /// folded in, nothing scaled: for tests and for integer-only consumers.
    I32(&'a mut [i32]),
    /// The layer's f32 output
    /// `y = Σ_k (a − zp_a) · q · (scale_a · s[n]) + bias[n]` (ReLU'd if
    /// asked), computed in f32 as `(acc as f32) · (scale_a · s[n]) +
    /// bias[n]`: within a few f32 ulps of the exact value, and the same
    /// bits on every CPU and thread count.
    F32(&'a mut [f32], Epilogue<'a>),
    /// The next layer's u8 input: the f32 output above quantized with that
    /// layer's [`ActQuant`] (exactly what [`quantize_u8`](super::quantize_u8)
    /// would make of [`Output::F32`]'s values), never materialised in f32.
    U8(&'a mut [u8], Epilogue<'a>, ActQuant),
}

impl Output<'_> {
    /// The destination's length.
    pub(super) fn len(&self) -> usize {
        match self {
            Output::I32(d) => d.len(),
            Output::F32(d, _) => d.len(),
            Output::U8(d, ..) => d.len(),
        }
    }

    /// How the epilogue writes to this destination, element `(i, j)` at
    /// `i · rs + j · cs`.
    pub(super) fn sink(&mut self, rs: usize, cs: usize) -> Sink<'_> {
        let (kind, ep) = match self {
            Output::I32(d) => (Kind::I32(d.as_mut_ptr()), Epilogue::default()),
            Output::F32(d, ep) => (Kind::F32(d.as_mut_ptr()), *ep),
            Output::U8(d, ep, q) => (
                Kind::U8(d.as_mut_ptr(), q.inv_scale(), f32::from(q.zero_point())),
                *ep,
            ),
        };
        Sink {
            kind,
            rs,
            cs,
            bias: ep.bias,
            relu: ep.relu,
        }
    }

    /// The bias, if any.
    pub(super) fn bias(&self) -> Option<&[f32]> {
        match self {
            Output::I32(_) => None,
            Output::F32(_, ep) | Output::U8(_, ep, _) => ep.bias,
        }
    }
}

/// One product, bounds already checked.
pub(super) struct Problem<'a> {
    /// Rows of the product.
    pub(super) m: usize,
    /// The activations, row `i` at `a[i · lda..][..k]`.
    pub(super) a: &'a [u8],
    pub(super) lda: usize,
    /// The activations' zero point and scale.
    pub(super) zp: i32,
    pub(super) a_scale: f32,
    pub(super) w: &'a PackedWeights,
    pub(super) sink: Sink<'a>,
    /// Rows read in place from a convolution's padded input (then `lda`
    /// is unused).
    pub(super) implicit: Option<Implicit>,
}

/// The rows of an implicit convolution's patch matrix: row `i` (output
/// pixel `(i / ow, i % ow)`) starts at byte `i / ow · row_step + i % ow ·
/// px_step` of the padded channels-last input, one run of quads per kernel
/// row (`seg`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Implicit {
    /// Output pixels per output row.
    pub(super) ow: usize,
    /// Bytes between the patches of two output rows' first pixels.
    pub(super) row_step: usize,
    /// Bytes between the patches of two neighbouring pixels of a row.
    pub(super) px_step: usize,
    /// The runs of a patch row.
    pub(super) seg: Seg,
}

/// Fails unless `len` elements hold a `rows × cols` matrix with leading
/// dimension `ld`.
pub(super) fn check_operand(
    operand: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), QuantError> {
    let needed = match rows {
        0 => Some(0),
        r => (r - 1).checked_mul(ld).and_then(|x| x.checked_add(cols)),
    };
    if ld < cols || needed.is_none_or(|needed| needed > len) {
        return Err(QuantError::Operand {
            operand,
            rows,
            cols,
            ld,
            len,
        });
    }
    Ok(())
}

/// Fails unless the depth fits an exact i32 accumulator and the bias (if
/// any) has one value per output channel.
pub(super) fn check_weights(w: &PackedWeights, bias: Option<&[f32]>) -> Result<(), QuantError> {
    if w.depth() > MAX_DEPTH {
        return Err(QuantError::TooDeep(w.depth()));
    }
    match bias {
        Some(b) if b.len() != w.outputs() => Err(QuantError::Length {
            what: "bias",
            expected: w.outputs(),
            found: b.len(),
        }),
        _ => Ok(()),
    }
}

/// The int8 matrix product with its fused epilogue: for `i < m`,
/// `j < n = w.outputs()`, output `(i, j)` at `ldc · i + j` of `out` is
/// `acc[i, j] = Σ_k (a[i, k] − zp_a) · q[k, j]` (exact i32, `k =
/// w.depth()`), delivered as [`Output`] says.
///
/// `a` is read in place (no packing), so the call needs no scratch memory
/// and never allocates. With [`Parallelism::Rayon`], large products split
/// into row (or channel) ranges over the rayon pool; the result is
/// bit-identical for any thread count (integer sums are exact and each
/// output element goes through the same f32 epilogue). The kernel family
/// is detected once: AVX-VNNI, else AVX512-VNNI, else AVX2, else portable
/// Rust; all give the same bits.
///
/// Fails, before touching anything, if an operand is too short or its
/// leading dimension too small, the bias does not have `n` values, or the
/// depth exceeds [`MAX_DEPTH`].
pub fn qgemm(
    par: Parallelism,
    m: usize,
    a: QMatRef<'_>,
    w: &PackedWeights,
    out: Output<'_>,
    ldc: usize,
) -> Result<(), QuantError> {
    qgemm_with(Isa::detect(), par, m, a, w, out, ldc)
}

/// The kernel family [`qgemm`] and [`conv2d`](super::conv2d) run on this
/// CPU: `"avx-vnni"`, `"avx512-vnni"`, `"avx2"` or `"portable"` (for
/// benchmark reports).
pub fn kernel_family() -> &'static str {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => "avx-vnni",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => "avx512-vnni",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2",
        Isa::Portable => "portable",
    }
}

/// [`qgemm`] with an explicit kernel family (tests run every one).
pub(super) fn qgemm_with(
    isa: Isa,
    par: Parallelism,
    m: usize,
    a: QMatRef<'_>,
    w: &PackedWeights,
    mut out: Output<'_>,
    ldc: usize,
) -> Result<(), QuantError> {
    check_weights(w, out.bias())?;
    check_operand("A", a.data.len(), m, w.depth(), a.ld)?;
    check_operand("C", out.len(), m, w.outputs(), ldc)?;
    let p = Problem {
        m,
        a: a.data,
        lda: a.ld,
        zp: i32::from(a.quant.zero_point()),
        a_scale: a.quant.scale(),
        w,
        sink: out.sink(ldc, 1),
        implicit: None,
    };
    // SAFETY: the checks above put every row of A and every output element
    // in bounds, and `out` stays borrowed for the whole call; `isa` is
    // either detected or (in tests) one of `Isa::all()`.
    unsafe { run(isa, &p, max_threads(par)) };
    Ok(())
}

/// The most threads `par` allows (at least 1).
pub(super) fn max_threads(par: Parallelism) -> usize {
    match par {
        Parallelism::Sequential => 1,
        Parallelism::Rayon(0) => rayon::current_num_threads().max(1),
        Parallelism::Rayon(n) => n.min(rayon::current_num_threads()).max(1),
        // One part per thread: int8 inference runs on an otherwise idle pool.
        Parallelism::Shared => rayon::current_num_threads().max(1),
    }
}

/// Runs a checked product on up to `threads` rayon tasks, split along
/// whichever of rows or 16-channel panels has more tiles.
///
/// # Safety
/// `p`'s activation rows and output elements must be in bounds, the output
/// must not be accessed by anyone else during the call, and the CPU must
/// support `isa`.
pub(super) unsafe fn run(isa: Isa, p: &Problem<'_>, threads: usize) {
    let (m, n, k) = (p.m, p.w.outputs(), p.w.depth());
    if m == 0 || n == 0 {
        return;
    }
    let panels = p.w.panel_count();
    let work = m.saturating_mul(n).saturating_mul(k.max(1));
    let threads = threads.min(work / MIN_WORK_PER_THREAD).max(1);
    let row_tiles = m.div_ceil(ROW_UNIT);
    let split_rows = row_tiles >= panels;
    let units = if split_rows { row_tiles } else { panels };
    let threads = threads.min(units);
    if threads <= 1 {
        // SAFETY: forwarded contract; this call owns the whole output.
        unsafe { serial(isa, p, 0..m, 0..panels) };
        return;
    }
    let chunk = units.div_ceil(threads);
    use rayon::prelude::*;
    (0..units.div_ceil(chunk)).into_par_iter().for_each(|t| {
        let (u0, u1) = (t * chunk, ((t + 1) * chunk).min(units));
        // SAFETY: forwarded contract; tasks get disjoint row ranges (whole
        // tiles) or disjoint panel ranges, so no output element is written
        // by two of them.
        unsafe {
            if split_rows {
                serial(isa, p, u0 * ROW_UNIT..(u1 * ROW_UNIT).min(m), 0..panels)
            } else {
                serial(isa, p, 0..m, u0..u1)
            }
        }
    });
}
