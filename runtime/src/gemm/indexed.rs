//! Indexed products: the implicit im2col of the convolution kernels.

#[cfg(target_arch = "x86_64")]
use super::kernel::avx2;
use super::kernel::Isa;

/// Columns of B that [`indexed`] reads per block: the value the shared
/// scratch sizing (`nnc_spec::conv::implicit`) pads the convolution buffers to.
pub(crate) const INDEXED_BLOCK: usize = nnc_spec::conv::implicit::INDEXED_BLOCK;

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
    /// Which depth steps a 16-column block of C needs, given its first
    /// column (`None`: all `k`). The steps left out must multiply zeros in
    /// B: a convolution's padded border, whose taps some output rows never
    /// reach with a non-zero. Skipping them leaves every sum bit for bit
    /// as it was (a zero product added to a sum started at +0 changes
    /// nothing).
    pub depth: Option<&'a dyn Fn(usize) -> std::ops::Range<usize>>,
}

impl Indexed<'_> {
    /// The depth steps of the block starting at column `j0`, within `0..k`.
    pub(crate) fn depth_of(&self, j0: usize) -> std::ops::Range<usize> {
        let k = self.b_rows.len();
        match self.depth {
            Some(f) => {
                let r = f(j0);
                let hi = r.end.min(k);
                r.start.min(hi)..hi
            }
            None => 0..k,
        }
    }
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
            let depth = x.depth_of(j / INDEXED_BLOCK * INDEXED_BLOCK);
            let sum: f32 = a[depth.clone()]
                .iter()
                .zip(depth)
                .map(|(&v, p)| v * b_at(p, j))
                .sum();
            *out = if beta == 0.0 { sum } else { sum + beta * *out };
        }
    }
}
