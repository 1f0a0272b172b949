//! The microkernels (tiles of up to 6 rows × 16 channels of i32
//! accumulators over the full depth), the loop nest that walks a product's
//! tiles and hands each finished tile to the epilogue, and the choice
//! between the kernel families: portable, AVX2 and AVX-VNNI.

use std::ops::Range;

use super::epilogue::{PanelParams, Sink};
use super::gemm::Problem;
use super::packed::{KQ, NR, QUAD_BYTES};

/// How a tile's depth-quads lie along its activation rows: runs of
/// `quads` quads (four bytes each), the starts of two
/// runs `stride` bytes apart. A plain matrix row is one run
/// ([`Seg::DENSE`]); an implicit convolution's patch row is one run per
/// kernel row, read in place from the padded input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seg {
    /// Quads per run.
    pub(super) quads: usize,
    /// Bytes from one run's start to the next's.
    pub(super) stride: usize,
}

impl Seg {
    /// One run: quad `q` at byte `4q` of the row.
    pub(super) const DENSE: Seg = Seg {
        quads: usize::MAX,
        stride: 0,
    };

    /// The byte offset of quad `q` from the row's start.
    #[inline(always)]
    pub(super) fn offset(self, q: usize) -> usize {
        if self.quads == usize::MAX {
            q * KQ
        } else {
            q / self.quads * self.stride + q % self.quads * KQ
        }
    }

    /// Whether a row of depth `k` spans more than one run.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn split(self, k: usize) -> bool {
        self.quads < k.div_ceil(KQ)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;

/// The most rows a family's tile has (the accumulator buffers' size).
pub(super) const MAX_MR: usize = 6;

/// Rows per unit when a product is split over threads: a multiple of every
/// family's tile height, so tasks get whole tiles.
pub(super) const ROW_UNIT: usize = 12;

/// Rows of A per cache block: the block (at most this many bytes of
/// activations) is reused for every panel of weights, so it should stay in
/// L2 while they stream past.
const A_BLOCK_BYTES: usize = 192 * 1024;

/// Kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// Portable Rust.
    Portable,
    /// x86_64 AVX2 (`vpmaddubsw`, `vpmaddwd`).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86_64 AVX2 plus AVX-VNNI (`vpdpbusd` on `ymm` registers).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// x86_64 AVX2 plus AVX512-VNNI and AVX512VL (`vpdpbusd`, EVEX-encoded,
    /// on `ymm` registers).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Isa {
    /// The best family this CPU runs, detected once.
    pub(super) fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                return if avx2::has_avx_vnni() {
                    Isa::AvxVnni
                } else if is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("avx512vl")
                {
                    Isa::Avx512Vnni
                } else {
                    Isa::Avx2
                };
            }
            Isa::Portable
        })
    }

    /// Every family this CPU runs (the tests hold them to each other).
    #[cfg(test)]
    pub(super) fn all() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        match Isa::detect() {
            Isa::AvxVnni => v.extend([Isa::Avx2, Isa::AvxVnni]),
            Isa::Avx512Vnni => v.extend([Isa::Avx2, Isa::Avx512Vnni]),
            Isa::Avx2 => v.push(Isa::Avx2),
            Isa::Portable => {}
        }
        v
    }
}

/// The part of a product one task computes: row tiles and panels of `p`.
///
/// # Safety
/// `p`'s operands must be in bounds as `qgemm` checks, this task must own
/// output rows `rows` × columns of `panels`, and the CPU must support
/// `isa`.
pub(super) unsafe fn serial(isa: Isa, p: &Problem<'_>, rows: Range<usize>, panels: Range<usize>) {
    // SAFETY: forwarded contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::serial::<{ avx2::NO_VNNI }>(p, rows, panels),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => avx2::serial::<{ avx2::VEX }>(p, rows, panels),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx2::serial::<{ avx2::EVEX }>(p, rows, panels),
            Isa::Portable => blocks::<Portable>(p, rows, panels),
        }
    }
}

/// A family's microkernel.
pub(super) trait Tile {
    /// Rows of a full tile (at most [`MAX_MR`], dividing [`ROW_UNIT`]).
    const MR: usize;

    /// Writes `Σ_k A[rows[r], k] · panel[k, j]` over depth `k` into
    /// `acc[r][j]`, `r < mr ≤ MR`, `j < nr ≤ 16` (quad `q` of row `r` at
    /// `rows[r] + seg.offset(q)`; a split row's depth is a whole number of
    /// runs); rows `mr..MAX_MR` only
    /// repeat row `mr − 1` and may be skipped, and lanes `nr..16` may be
    /// left holding anything (a panel of at most 8 channels, e.g. LeNet's
    /// first convolution, then needs half the multiply-adds).
    ///
    /// # Safety
    /// Each row must be readable at its quads' bytes (`k` bytes from its
    /// start with [`Seg::DENSE`]), the panel for `⌈k / 4⌉ · 64` bytes, and
    /// the CPU must support the family.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        k: usize,
        mr: usize,
        nr: usize,
        rows: &[*const u8; MAX_MR],
        seg: Seg,
        panel: *const i8,
        acc: &mut [[i32; NR]; MAX_MR],
    );

    /// The epilogue of a tile: [`Sink::store`], which a family may
    /// specialise (bit for bit).
    ///
    /// # Safety
    /// As for [`Sink::store`], and the CPU must support the family.
    #[inline(always)]
    unsafe fn store(
        sink: &Sink<'_>,
        pp: &PanelParams,
        acc: &[[i32; NR]],
        i0: usize,
        mr: usize,
        j0: usize,
        nr: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { sink.store(pp, acc, i0, mr, j0, nr) }
    }
}

/// The loop nest: row blocks (sized for L2), then panels (one panel, `k ×
/// 16` bytes, stays in L1 across the block's row tiles), then row tiles;
/// each tile runs over the whole depth, so its accumulators are final and
/// go straight to the epilogue. Inlined into each family's entry point, so
/// the x86 ones compile the epilogue with AVX2 too.
///
/// # Safety
/// As for [`serial`], with `T` a family the CPU supports.
#[inline(always)]
pub(super) unsafe fn blocks<T: Tile>(p: &Problem<'_>, rows: Range<usize>, panels: Range<usize>) {
    let (k, n) = (p.w.depth(), p.w.outputs());
    let mc = (A_BLOCK_BYTES / k.max(1)).max(ROW_UNIT) / ROW_UNIT * ROW_UNIT;
    let mut acc = [[0i32; NR]; MAX_MR];
    for i0 in rows.clone().step_by(mc) {
        let i1 = (i0 + mc).min(rows.end);
        for panel in panels.clone() {
            let j0 = panel * NR;
            let nr = NR.min(n - j0);
            let pp = PanelParams::new(p.w, panel, p.zp, p.a_scale, p.sink.bias);
            let b = p.w.panel(panel).as_ptr();
            for it in (i0..i1).step_by(T::MR) {
                let mr = T::MR.min(i1 - it);
                // Rows past `mr` repeat the last valid one: computed, never
                // stored, and never out of bounds.
                let row_ptrs: [*const u8; MAX_MR] = std::array::from_fn(|r| {
                    let i = it + r.min(mr - 1);
                    match p.implicit {
                        None => p.a[i * p.lda..].as_ptr(),
                        Some(c) => p.a[i / c.ow * c.row_step + i % c.ow * c.px_step..].as_ptr(),
                    }
                });
                let seg = p.implicit.map_or(Seg::DENSE, |c| c.seg);
                // SAFETY: each row holds its k bytes (`qgemm` checked `(m −
                // 1) · lda + k ≤ len`; an implicit convolution's padded
                // input holds every patch's runs), the panel holds ⌈k/4⌉
                // quads; this task owns the tile's outputs; the caller
                // vouches for the CPU.
                unsafe {
                    T::tile(k, mr, nr, &row_ptrs, seg, b, &mut acc);
                    T::store(&p.sink, &pp, &acc[..mr], it, mr, j0, nr);
                }
            }
        }
    }
}

/// The last, partial depth-quad of a row (`rem = k % 4` bytes from `src`),
/// zero-extended to four bytes (the packed weights there are zero too).
///
/// # Safety
/// `src` must be readable for `rem < 4` bytes.
#[inline(always)]
pub(super) unsafe fn tail_quad(src: *const u8, rem: usize) -> [u8; 4] {
    // Spelled out: a copy of variable length becomes a `memcpy` call.
    // SAFETY: bytes 0..rem are readable by the caller's contract.
    unsafe {
        match rem {
            0 => [0; 4],
            1 => [*src, 0, 0, 0],
            2 => [*src, *src.add(1), 0, 0],
            _ => [*src, *src.add(1), *src.add(2), 0],
        }
    }
}

/// Rows of the portable family's tiles.
const PORTABLE_MR: usize = 4;

/// The portable family: the same packed layout, 32-bit multiply-adds.
struct Portable;

impl Tile for Portable {
    const MR: usize = PORTABLE_MR;

    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        k: usize,
        _mr: usize,
        _nr: usize,
        rows: &[*const u8; MAX_MR],
        seg: Seg,
        panel: *const i8,
        acc: &mut [[i32; NR]; MAX_MR],
    ) {
        let (rows, acc) = (
            rows[..PORTABLE_MR].try_into(),
            (&mut acc[..PORTABLE_MR]).try_into(),
        );
        // SAFETY: forwarded contract.
        unsafe { portable_tile(k, rows.expect("4 rows"), seg, panel, acc.expect("4 rows")) }
    }
}

/// [`Portable`]'s tile.
///
/// # Safety
/// As for [`Tile::tile`].
unsafe fn portable_tile(
    k: usize,
    rows: &[*const u8; PORTABLE_MR],
    seg: Seg,
    panel: *const i8,
    acc: &mut [[i32; NR]; PORTABLE_MR],
) {
    const MR: usize = PORTABLE_MR;
    *acc = [[0; NR]; MR];
    let quads = k / KQ;
    let rem = k % KQ;
    let step = |acc: &mut [[i32; NR]; MR], q: usize, a: &[[u8; 4]; MR]| {
        // SAFETY: quad q < ⌈k/4⌉ lies inside the panel.
        let b: &[i8; QUAD_BYTES] = unsafe { &*panel.add(q * QUAD_BYTES).cast() };
        for (row, a) in acc.iter_mut().zip(a) {
            for (j, s) in row.iter_mut().enumerate() {
                let w = &b[j * KQ..][..KQ];
                *s += (0..KQ)
                    .map(|t| i32::from(a[t]) * i32::from(w[t]))
                    .sum::<i32>();
            }
        }
    };
    for q in 0..quads {
        // SAFETY: quad q's four bytes of each row are readable.
        let a: [[u8; 4]; MR] =
            std::array::from_fn(|r| unsafe { *rows[r].add(seg.offset(q)).cast() });
        step(acc, q, &a);
    }
    if rem != 0 {
        // SAFETY: the last quad's `rem` bytes of each row are readable.
        let a: [[u8; 4]; MR] =
            std::array::from_fn(|r| unsafe { tail_quad(rows[r].add(seg.offset(quads)), rem) });
        step(acc, quads, &a);
    }
}
