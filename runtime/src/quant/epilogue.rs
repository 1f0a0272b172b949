//! The GEMM's epilogue: i32 accumulators of one tile, still hot, turned
//! into the layer's output (corrected i32, f32, or the next layer's u8) and
//! stored.
//!
//! The arithmetic is plain Rust shared by every kernel family (the x86
//! driver inlines it under `target_feature`, where the compiler vectorises
//! it); Rust never reassociates or contracts float operations, so all
//! families produce the same bits.

use super::packed::{PackedWeights, NR};
use super::scheme::quantize_one;

/// What one output element becomes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// `acc − zp · colsum`, as i32.
    I32(*mut i32),
    /// `(acc − zp · colsum) · (scale_a · s[n]) + bias[n]`, ReLU'd if asked.
    F32(*mut f32),
    /// The f32 value quantized with `(inv_scale, zero_point)`.
    U8(*mut u8, f32, f32),
}

/// Where and how a product's output is written: element `(i, j)` at
/// offset `i · rs + j · cs` of the destination (`cs == 1` for row-major
/// matrices; the convolution writes NCHW planes with `rs == 1`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sink<'a> {
    pub(super) kind: Kind,
    pub(super) rs: usize,
    pub(super) cs: usize,
    /// `n` biases (checked by the caller).
    pub(super) bias: Option<&'a [f32]>,
    pub(super) relu: bool,
}

// SAFETY: the destination pointer is only written through by the tasks of
// one product, each at its own disjoint set of elements, while the caller's
// `&mut` borrow of the destination is held.
unsafe impl Send for Sink<'_> {}
// SAFETY: as above.
unsafe impl Sync for Sink<'_> {}

/// The per-channel constants of one 16-channel panel, computed once per
/// panel and shared by its row tiles.
pub(super) struct PanelParams {
    /// `zp · Σ_k q[k, j]`.
    pub(super) zc: [i32; NR],
    /// `scale_a · s[j]`.
    pub(super) mult: [f32; NR],
    /// `bias[j]`, 0 past the last channel or without a bias.
    pub(super) bias: [f32; NR],
}

impl PanelParams {
    /// The constants of panel `p` for activations with zero point `zp` and
    /// scale `a_scale`.
    #[inline(always)]
    pub(super) fn new(
        w: &PackedWeights,
        p: usize,
        zp: i32,
        a_scale: f32,
        bias: Option<&[f32]>,
    ) -> Self {
        let (sums, scales) = (w.panel_colsums(p), w.panel_scales(p));
        let j0 = p * NR;
        let nr = NR.min(w.outputs() - j0);
        let b = bias.map_or([0.0; NR], |bias| {
            std::array::from_fn(|j| if j < nr { bias[j0 + j] } else { 0.0 })
        });
        PanelParams {
            zc: std::array::from_fn(|j| zp * sums[j]),
            mult: std::array::from_fn(|j| a_scale * scales[j]),
            bias: b,
        }
    }
}

impl<'a> Sink<'a> {
    /// The sink of a sub-product whose output `(0, 0)` is this one's element
    /// at offset `offset` and whose channel 0 is this one's channel `j0`
    /// (one group of one sample of a convolution).
    ///
    /// # Safety
    /// `offset` must lie inside the destination, and `j0` inside the bias
    /// (if any).
    pub(super) unsafe fn shifted(self, offset: usize, j0: usize) -> Sink<'a> {
        // SAFETY: in bounds by the caller's contract.
        let kind = unsafe {
            match self.kind {
                Kind::I32(p) => Kind::I32(p.add(offset)),
                Kind::F32(p) => Kind::F32(p.add(offset)),
                Kind::U8(p, inv, zp) => Kind::U8(p.add(offset), inv, zp),
            }
        };
        Sink {
            kind,
            bias: self.bias.map(|b| &b[j0..]),
            ..self
        }
    }

    /// Finishes rows `0..mr` of a tile whose top-left output element is
    /// `(i0, j0)`: the first `nr` values of each accumulator row go out.
    ///
    /// # Safety
    /// Elements `(i0 + r, j0 + c)`, `r < mr`, `c < nr`, must lie inside the
    /// destination and belong to this task alone.
    #[inline(always)]
    pub(super) unsafe fn store(
        &self,
        pp: &PanelParams,
        acc: &[[i32; NR]],
        i0: usize,
        mr: usize,
        j0: usize,
        nr: usize,
    ) {
        // (Computing only 8 lanes for panels of at most 8 channels was
        // tried: LLVM vectorised it worse, more instructions per row.)
        // SAFETY: forwarded contract.
        unsafe { self.store_n::<NR>(pp, acc, i0, mr, j0, nr) }
    }

    /// [`Sink::store`] computing the first `N ≥ nr` lanes.
    ///
    /// # Safety
    /// As for [`Sink::store`].
    #[inline(always)]
    unsafe fn store_n<const N: usize>(
        &self,
        pp: &PanelParams,
        acc: &[[i32; NR]],
        i0: usize,
        mr: usize,
        j0: usize,
        nr: usize,
    ) {
        for (r, row) in acc.iter().enumerate().take(mr) {
            // Exact: |acc|, |zc| and their difference stay below
            // MAX_DEPTH · 255 · 63 ≤ i32::MAX (checked by the caller).
            let v: [i32; N] = std::array::from_fn(|c| row[c] - pp.zc[c]);
            let at = (i0 + r) * self.rs + j0 * self.cs;
            // SAFETY (all arms): the caller's contract covers every element
            // `write` touches.
            unsafe {
                match self.kind {
                    Kind::I32(out) => write(out.add(at), self.cs, &v, nr),
                    Kind::F32(out) => {
                        let y = self.real(pp, &v);
                        write(out.add(at), self.cs, &y, nr)
                    }
                    Kind::U8(out, inv, zp) => {
                        let y = self.real(pp, &v);
                        let q: [u8; N] = std::array::from_fn(|c| quantize_one(y[c], inv, zp));
                        write_bytes(out.add(at), self.cs, &q, nr)
                    }
                }
            }
        }
    }

    /// `v · mult + bias`, then ReLU if asked: the f32 output values (the
    /// i32 → f32 conversion rounds to nearest once beyond 2^24).
    #[inline(always)]
    fn real<const N: usize>(&self, pp: &PanelParams, v: &[i32; N]) -> [f32; N] {
        let y: [f32; N] = std::array::from_fn(|c| v[c] as f32 * pp.mult[c] + pp.bias[c]);
        if self.relu {
            y.map(|x| x.max(0.0))
        } else {
            y
        }
    }
}

/// Stores `vals[..nr]` at `dst`, `dst + cs`, ….
///
/// # Safety
/// Those `nr` elements must be writable and not accessed by anyone else.
#[inline(always)]
unsafe fn write<T: Copy, const N: usize>(dst: *mut T, cs: usize, vals: &[T; N], nr: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        if cs == 1 && nr == N {
            // A fixed-size copy: one or two vector stores (a copy of
            // variable length would become a `memcpy` call per row).
            dst.cast::<[T; N]>().write_unaligned(*vals);
        } else {
            for (c, &v) in vals.iter().enumerate().take(nr) {
                *dst.add(c * cs) = v;
            }
        }
    }
}

/// [`write`] for bytes: a contiguous partial row (a channels-last tensor
/// with fewer than 16 channels) as two overlapping fixed-size stores, the
/// same bytes written twice where they overlap, instead of one store per
/// byte.
///
/// # Safety
/// As for [`write`].
#[inline(always)]
unsafe fn write_bytes<const N: usize>(dst: *mut u8, cs: usize, vals: &[u8; N], nr: usize) {
    /// Bytes `0..M` and `nr − M..nr` of `vals` (`M ≤ nr ≤ 2M`).
    ///
    /// # Safety
    /// `dst..dst + nr` must be writable.
    #[inline(always)]
    unsafe fn two<const M: usize, const N: usize>(dst: *mut u8, vals: &[u8; N], nr: usize) {
        let head: [u8; M] = vals[..M].try_into().expect("M ≤ nr");
        let tail: [u8; M] = vals[nr - M..nr].try_into().expect("M ≤ nr");
        // SAFETY: both stores lie in dst..dst + nr.
        unsafe {
            dst.cast::<[u8; M]>().write_unaligned(head);
            dst.add(nr - M).cast::<[u8; M]>().write_unaligned(tail);
        }
    }
    // SAFETY (all arms): forwarded contract.
    unsafe {
        match (cs, nr) {
            (1, nr) if nr == N => write(dst, cs, vals, nr),
            (1, 8..) => two::<8, N>(dst, vals, nr),
            (1, 4..8) => two::<4, N>(dst, vals, nr),
            (1, 2..4) => two::<2, N>(dst, vals, nr),
            _ => write(dst, cs, vals, nr),
        }
    }
}
