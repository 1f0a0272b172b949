//! The AVX2 family: `vpmaddubsw` (u8 × i8, adjacent pairs into i16) and
//! `vpmaddwd` against 1s (adjacent i16 pairs into i32), 32 multiply-adds
//! per pair of instructions. Exact because weights are 7-bit (a pair sum
//! is at most `2 · 255 · 63 = 32130`, below i16 saturation).

use std::arch::x86_64::*;
use std::ops::Range;

use super::{blocks, tail_quad, Problem, Tile, KQ, MR, NR, QUAD_BYTES};

/// [`super::serial`] compiled for AVX2: the loop nest and the epilogue
/// inline here, so both use AVX2 as well.
///
/// # Safety
/// As for [`super::serial`]; the CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn serial(p: &Problem<'_>, rows: Range<usize>, panels: Range<usize>) {
    // SAFETY: forwarded contract.
    unsafe { blocks::<Avx2>(p, rows, panels) }
}

/// The AVX2 microkernel.
struct Avx2;

impl Tile for Avx2 {
    // Out of line, so that the tile is a leaf function that keeps its row
    // pointers and accumulators in registers (inlined into the loop nest,
    // the nest's live values crowd them out and LLVM recomputes row
    // addresses every step). The attribute goes here because rustc drops
    // `inline(never)` on `target_feature` functions; LLVM never inlines
    // those into this one, which lacks the feature.
    #[inline(never)]
    unsafe fn tile(
        k: usize,
        mr: usize,
        rows: &[*const u8; MR],
        panel: *const i8,
        acc: &mut [[i32; NR]; MR],
    ) {
        // SAFETY: forwarded contract (which includes AVX2). Short edge
        // tiles (and batch-1 products) skip the repeated rows.
        unsafe {
            match mr {
                1 => tile::<1>(k, rows, panel, acc),
                2 => tile::<2>(k, rows, panel, acc),
                _ => tile::<MR>(k, rows, panel, acc),
            }
        }
    }
}

/// One depth-quad of `R` rows: `acc[r] += Σ_t a[r][t] · b[t][0..16]`, where
/// `a[r]` holds row r's four activation bytes broadcast to every 32-bit lane
/// and `b0`, `b1` the quad's 16 channels (four weights each).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quad<const R: usize>(
    acc: &mut [[__m256i; 2]; R],
    a: [__m256i; R],
    b0: __m256i,
    b1: __m256i,
    ones: __m256i,
) {
    for (row, a) in acc.iter_mut().zip(a) {
        // Lane 2c of the i16 products is a0·w0 + a1·w1 of channel c, lane
        // 2c + 1 is a2·w2 + a3·w3; `vpmaddwd` with 1s sums them into i32
        // lane c.
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones);
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones);
        row[0] = _mm256_add_epi32(row[0], p0);
        row[1] = _mm256_add_epi32(row[1], p1);
    }
}

/// A tile of `R ≤ MR` rows.
///
/// # Safety
/// As for [`Tile::tile`]; the CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize>(
    k: usize,
    rows: &[*const u8; MR],
    panel: *const i8,
    out: &mut [[i32; NR]; MR],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let (quads, rem) = (k / KQ, k % KQ);
    // Loops rather than closures over intrinsics: a closure does not get
    // this function's target features, and the intrinsic would become a
    // call.
    let mut av = [_mm256_setzero_si256(); R];
    // SAFETY (whole body): every row has k readable bytes and the panel
    // ⌈k/4⌉ quads of 64 bytes (caller's contract); the loads are unaligned.
    unsafe {
        for q in 0..quads {
            let b = panel.add(q * QUAD_BYTES);
            let b0 = _mm256_loadu_si256(b.cast());
            let b1 = _mm256_loadu_si256(b.add(32).cast());
            for r in 0..R {
                let x = rows[r].add(q * KQ).cast::<i32>().read_unaligned();
                av[r] = _mm256_set1_epi32(x);
            }
            quad(&mut acc, av, b0, b1, ones);
        }
        if rem != 0 {
            let b = panel.add(quads * QUAD_BYTES);
            let b0 = _mm256_loadu_si256(b.cast());
            let b1 = _mm256_loadu_si256(b.add(32).cast());
            for r in 0..R {
                let x = i32::from_le_bytes(tail_quad(rows[r].add(quads * KQ), rem));
                av[r] = _mm256_set1_epi32(x);
            }
            quad(&mut acc, av, b0, b1, ones);
        }
        for r in 0..R {
            _mm256_storeu_si256(out[r].as_mut_ptr().cast(), acc[r][0]);
            _mm256_storeu_si256(out[r].as_mut_ptr().add(8).cast(), acc[r][1]);
        }
    }
}
