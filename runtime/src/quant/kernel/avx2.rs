//! The x86_64 families, one code path with two multiply steps:
//!
//! * AVX2: `vpmaddubsw` (u8 × i8, adjacent pairs into i16) then `vpmaddwd`
//!   against 1s (adjacent i16 pairs into i32) and `vpaddd`: 32
//!   multiply-adds per two multiply-port instructions. Exact because
//!   weights are 7-bit (a pair sum is at most `2 · 255 · 63 = 32130`, below
//!   i16 saturation).
//! * AVX-VNNI: `vpdpbusd` does all three in one instruction, without an
//!   intermediate i16, so twice the multiply-adds per instruction; its sums
//!   equal the AVX2 ones (nothing saturates in either).
//!
//! `vpdpbusd` is written as inline assembly: the AVX-VNNI intrinsics and
//! target feature were stabilised after Rust 1.85, our minimum version, and
//! the assembler accepts the instruction in any function (the CPU is
//! checked at run time, [`has_avx_vnni`]). CPUs with AVX512-VNNI and
//! AVX512VL but not AVX-VNNI (AMD Zen 4, Intel Ice Lake to Sapphire
//! Rapids server parts) run the same instruction on the same `ymm`
//! registers in its EVEX encoding ([`EVEX`]).

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;

use super::super::epilogue::{Kind, PanelParams, Sink};
use super::{blocks, tail_quad, Problem, Seg, Tile, KQ, MAX_MR, NR, QUAD_BYTES};

/// Whether the CPU has AVX-VNNI (CPUID leaf 7, sub-leaf 1, EAX bit 4).
/// Callers check AVX2 first, which also establishes that the OS saves the
/// `ymm` registers.
/// The multiply step of a family: `vpmaddubsw` + `vpmaddwd` (AVX2).
pub(in crate::quant) const NO_VNNI: u8 = 0;
/// `vpdpbusd`, VEX-encoded (AVX-VNNI).
pub(in crate::quant) const VEX: u8 = 1;
/// `vpdpbusd`, EVEX-encoded on `ymm` registers (AVX512-VNNI + AVX512VL).
pub(in crate::quant) const EVEX: u8 = 2;

pub(super) fn has_avx_vnni() -> bool {
    // SAFETY: CPUID exists on every x86_64 CPU, and leaf 7 on every CPU
    // with AVX2, the only callers (newer Rust declares the function safe).
    #[allow(unused_unsafe)]
    let leaf = unsafe { __cpuid_count(7, 1) };
    leaf.eax & (1 << 4) != 0
}

/// [`super::serial`] compiled for AVX2 (`VNNI`: with the AVX-VNNI tile):
/// the loop nest and the epilogue inline here, so both use AVX2 as well.
///
/// # Safety
/// As for [`super::serial`]; the CPU must support AVX2 (and AVX-VNNI with
/// `VNNI`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn serial<const VNNI: u8>(
    p: &Problem<'_>,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    // SAFETY: forwarded contract.
    unsafe { blocks::<Family<VNNI>>(p, rows, panels) }
}

/// The AVX2 (`VNNI == false`) or AVX-VNNI microkernel.
struct Family<const VNNI: u8>;

impl<const VNNI: u8> Tile for Family<VNNI> {
    // AVX2: 4 rows × 2 registers of channels are 8 accumulators, beside 2
    // weight registers, the broadcast activations, the 1s and a temporary
    // in the 16 `ymm` registers; the multiply ports bound the kernel, so
    // taller tiles would only spill. VNNI: no 1s and no temporary, and 12
    // accumulators cover `vpdpbusd`'s latency (5 cycles at 2 per cycle).
    const MR: usize = if VNNI != NO_VNNI { 6 } else { 4 };

    // Out of line, so that the tile is a leaf function that keeps its row
    // pointers and accumulators in registers (inlined into the loop nest,
    // the nest's live values crowd them out and LLVM recomputes row
    // addresses every step). The attribute goes here because rustc drops
    // `inline(never)` on `target_feature` functions; LLVM never inlines
    // those into this one, which lacks the feature.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        k: usize,
        mr: usize,
        nr: usize,
        rows: &[*const u8; MAX_MR],
        seg: Seg,
        panel: *const i8,
        acc: &mut [[i32; NR]; MAX_MR],
    ) {
        if seg.split(k) {
            // SAFETY: forwarded contract.
            unsafe { return split::<VNNI>(k, mr, nr, rows, seg, panel, acc) };
        }
        // SAFETY: forwarded contract (which includes the CPU features).
        // Short edge tiles (and batch-1 products) skip most repeated rows.
        // With VNNI, short tiles split the depth over several accumulator
        // sets (`CH`), or `vpdpbusd`'s latency would bound them.
        unsafe {
            // Panels of at most 8 channels use one register of them
            // (`W = 1`); with VNNI, two accumulator sets then keep 12
            // `vpdpbusd` in flight.
            match (mr, VNNI != NO_VNNI, nr <= 8) {
                (_, false, true) => tile::<4, VNNI, 1, 1>(k, rows, panel, acc),
                (1, false, _) => tile::<1, VNNI, 1, 2>(k, rows, panel, acc),
                (2, false, _) => tile::<2, VNNI, 1, 2>(k, rows, panel, acc),
                (_, false, _) => tile::<4, VNNI, 1, 2>(k, rows, panel, acc),
                (1 | 2, true, true) => tile::<2, VNNI, 4, 1>(k, rows, panel, acc),
                (_, true, true) => tile::<6, VNNI, 2, 1>(k, rows, panel, acc),
                (1, true, _) => tile::<1, VNNI, 4, 2>(k, rows, panel, acc),
                (2, true, _) => tile::<2, VNNI, 2, 2>(k, rows, panel, acc),
                (3 | 4, true, _) => tile::<4, VNNI, 1, 2>(k, rows, panel, acc),
                _ => tile::<6, VNNI, 1, 2>(k, rows, panel, acc),
            }
        }
    }

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
        // SAFETY: forwarded contract (the CPU has AVX2 in every family).
        unsafe { store_avx2(sink, pp, acc, i0, mr, j0, nr) }
    }
}

/// The f32 outputs of 8 channels: `(acc − zc) as f32 · mult + bias`,
/// ReLU'd if asked (`max` returns its second operand for a NaN, as
/// `f32::max(NaN, 0)` gives 0): `Sink::real`'s operations in its order.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(in crate::quant) unsafe fn real8(
    acc: __m256i,
    zc: __m256i,
    mult: __m256,
    bias: __m256,
    relu: bool,
) -> __m256 {
    let v = _mm256_sub_epi32(acc, zc);
    let y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), mult), bias);
    if relu {
        _mm256_max_ps(y, _mm256_setzero_ps())
    } else {
        y
    }
}

/// `quantize_one` of 8 values as i32 before the final clamp, which the
/// caller's saturating packs to u8 do: after the clamp to `[−256, 256]`
/// (NaN to −256; skipped after a ReLU, whose outputs are never below 0 or
/// NaN), `vcvtps2dq` rounds half to even (the default rounding mode) as
/// the magic-constant trick does, and the zero point is added to the
/// integer exactly.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(in crate::quant) unsafe fn quantize8(
    y: __m256,
    inv: __m256,
    zp: __m256i,
    relu: bool,
) -> __m256i {
    let mut t = _mm256_mul_ps(y, inv);
    if !relu {
        t = _mm256_max_ps(t, _mm256_set1_ps(-256.0));
    }
    let t = _mm256_min_ps(t, _mm256_set1_ps(256.0));
    _mm256_add_epi32(_mm256_cvtps_epi32(t), zp)
}

/// The bytes of `a` then `b` (8 i32 each, in `[−256, 511]`), clamped to
/// `[0, 255]` by the saturating packs, in lane order.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(in crate::quant) unsafe fn bytes16(a: __m256i, b: __m256i) -> __m128i {
    // The packs interleave 128-bit halves; the permutation undoes it.
    let packed = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_setzero_si256());
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_castsi256_si128(ordered)
}

/// The epilogue of a tile of full 16-channel rows stored contiguously (f32
/// or u8 outputs), in AVX2: the same values as [`Sink::store`]'s, bit for
/// bit, with fewer steps than LLVM's vectorisation of the scalar formula.
/// Anything else goes to [`Sink::store`].
///
/// # Safety
/// As for [`Sink::store`]; the CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_avx2(
    sink: &Sink<'_>,
    pp: &PanelParams,
    acc: &[[i32; NR]],
    i0: usize,
    mr: usize,
    j0: usize,
    nr: usize,
) {
    // SAFETY (whole body): the stores write elements (i0 + r, j0..j0 + 16)
    // of rows r < mr, the caller's to write; the loads read the tile and
    // the panel's 16 constants.
    unsafe {
        if nr != NR || sink.cs != 1 || matches!(sink.kind, Kind::I32(_)) {
            return sink.store(pp, acc, i0, mr, j0, nr);
        }
        // No closures over intrinsics: a closure may not get this
        // function's target features.
        let zc = [
            _mm256_loadu_si256(pp.zc.as_ptr().cast()),
            _mm256_loadu_si256(pp.zc.as_ptr().add(8).cast()),
        ];
        let mult = [
            _mm256_loadu_ps(pp.mult.as_ptr()),
            _mm256_loadu_ps(pp.mult.as_ptr().add(8)),
        ];
        let bias = [
            _mm256_loadu_ps(pp.bias.as_ptr()),
            _mm256_loadu_ps(pp.bias.as_ptr().add(8)),
        ];
        for (r, row) in acc.iter().enumerate().take(mr) {
            let at = (i0 + r) * sink.rs + j0;
            let a0 = _mm256_loadu_si256(row.as_ptr().cast());
            let a1 = _mm256_loadu_si256(row.as_ptr().add(8).cast());
            let y0 = real8(a0, zc[0], mult[0], bias[0], sink.relu);
            let y1 = real8(a1, zc[1], mult[1], bias[1], sink.relu);
            match sink.kind {
                Kind::F32(out) => {
                    _mm256_storeu_ps(out.add(at), y0);
                    _mm256_storeu_ps(out.add(at + 8), y1);
                }
                Kind::U8(out, inv, zp) => {
                    let (inv, zp) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zp as i32));
                    let q0 = quantize8(y0, inv, zp, sink.relu);
                    let q1 = quantize8(y1, inv, zp, sink.relu);
                    _mm_storeu_si128(out.add(at).cast(), bytes16(q0, q1));
                }
                Kind::I32(_) => unreachable!("handled above"),
            }
        }
    }
}

/// `acc += Σ_t a[4c + t] · b[4c + t]` in each i32 lane `c`, by AVX-VNNI's
/// `vpdpbusd` (u8 `a` × i8 `b`, no intermediate saturation).
///
/// `ENC` picks the encoding ([`VEX`] or [`EVEX`]).
///
/// # Safety
/// The CPU must support AVX-VNNI (`VEX`), or AVX512-VNNI and AVX512VL
/// (`EVEX`).
#[target_feature(enable = "avx2")]
#[inline]
pub(in crate::quant) unsafe fn dpbusd<const ENC: u8>(
    acc: __m256i,
    a: __m256i,
    b: __m256i,
) -> __m256i {
    let mut acc = acc;
    // SAFETY: the caller vouches for the extension; the instruction only
    // reads and writes these registers (`ymm_reg` allocates ymm0–15, which
    // both encodings address).
    unsafe {
        if ENC == EVEX {
            asm!(
                "{{evex}} vpdpbusd {acc}, {a}, {b}",
                acc = inout(ymm_reg) acc,
                a = in(ymm_reg) a,
                b = in(ymm_reg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        } else {
            asm!(
                "{{vex}} vpdpbusd {acc}, {a}, {b}",
                acc = inout(ymm_reg) acc,
                a = in(ymm_reg) a,
                b = in(ymm_reg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
    }
    acc
}

/// One depth-quad of `R` rows: `acc[r] += Σ_t a[r][t] · b[t][0..16]`, where
/// `a[r]` holds row r's four activation bytes broadcast to every 32-bit lane
/// and `b0`, `b1` the quad's 16 channels (four weights each).
///
/// # Safety
/// The CPU must support AVX2 (and AVX-VNNI with `VNNI`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quad<const R: usize, const VNNI: u8, const W: usize>(
    acc: &mut [[__m256i; 2]; R],
    a: [__m256i; R],
    b0: __m256i,
    b1: __m256i,
    ones: __m256i,
) {
    for (row, a) in acc.iter_mut().zip(a) {
        if VNNI != NO_VNNI {
            // SAFETY: the caller vouches for the extension.
            unsafe {
                row[0] = dpbusd::<VNNI>(row[0], a, b0);
                if W == 2 {
                    row[1] = dpbusd::<VNNI>(row[1], a, b1);
                }
            }
        } else {
            // Lane 2c of the i16 products is a0·w0 + a1·w1 of channel c,
            // lane 2c + 1 is a2·w2 + a3·w3; `vpmaddwd` with 1s sums them
            // into i32 lane c.
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones);
            row[0] = _mm256_add_epi32(row[0], p0);
            if W == 2 {
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones);
                row[1] = _mm256_add_epi32(row[1], p1);
            }
        }
    }
}

/// [`Tile::tile`] for rows split into runs (an implicit convolution's
/// patch rows): one set of accumulators, each run's quads at the run's
/// row pointers, which then step to the next run.
///
/// # Safety
/// As for [`Tile::tile`], `k` a whole number of runs; the CPU must support
/// AVX2 (and family `VNNI`).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn split<const VNNI: u8>(
    k: usize,
    mr: usize,
    nr: usize,
    rows: &[*const u8; MAX_MR],
    seg: Seg,
    panel: *const i8,
    acc: &mut [[i32; NR]; MAX_MR],
) {
    // SAFETY: forwarded contract. VNNI: 12 accumulators for full tiles, as
    // the plain tile; AVX2: 4 rows × 2 registers.
    unsafe {
        match (mr, VNNI != NO_VNNI, nr <= 8) {
            (1, _, true) => tile_runs::<1, VNNI, 1>(k, rows, seg, panel, acc),
            (1, _, false) => tile_runs::<1, VNNI, 2>(k, rows, seg, panel, acc),
            (2, _, true) => tile_runs::<2, VNNI, 1>(k, rows, seg, panel, acc),
            (2, _, false) => tile_runs::<2, VNNI, 2>(k, rows, seg, panel, acc),
            (_, false, true) => tile_runs::<4, VNNI, 1>(k, rows, seg, panel, acc),
            (_, false, false) => tile_runs::<4, VNNI, 2>(k, rows, seg, panel, acc),
            (3 | 4, true, true) => tile_runs::<4, VNNI, 1>(k, rows, seg, panel, acc),
            (3 | 4, true, false) => tile_runs::<4, VNNI, 2>(k, rows, seg, panel, acc),
            (_, true, true) => tile_runs::<6, VNNI, 1>(k, rows, seg, panel, acc),
            (_, true, false) => tile_runs::<6, VNNI, 2>(k, rows, seg, panel, acc),
        }
    }
}

/// [`split`]'s tile of `R` rows and `8 · W` channels.
///
/// # Safety
/// As for [`split`].
#[target_feature(enable = "avx2")]
unsafe fn tile_runs<const R: usize, const VNNI: u8, const W: usize>(
    k: usize,
    rows: &[*const u8; MAX_MR],
    seg: Seg,
    panel: *const i8,
    out: &mut [[i32; NR]; MAX_MR],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let mut av = [_mm256_setzero_si256(); R];
    let mut at: [*const u8; R] = std::array::from_fn(|r| rows[r]);
    let runs = k / (KQ * seg.quads);
    let mut b = panel;
    // SAFETY (whole body): run s's quads lie at `rows[r] + s · stride`
    // and the panel holds `runs · quads` quads of 64 bytes (caller's
    // contract); the loads are unaligned.
    unsafe {
        for _ in 0..runs {
            for q in 0..seg.quads {
                let b0 = _mm256_loadu_si256(b.cast());
                let b1 = if W == 2 {
                    _mm256_loadu_si256(b.add(32).cast())
                } else {
                    b0
                };
                for (v, p) in av.iter_mut().zip(&at) {
                    *v = _mm256_set1_epi32(p.add(q * KQ).cast::<i32>().read_unaligned());
                }
                quad::<R, VNNI, W>(&mut acc, av, b0, b1, ones);
                b = b.add(QUAD_BYTES);
            }
            for p in at.iter_mut() {
                *p = p.add(seg.stride);
            }
        }
        for (dst, v) in out.iter_mut().zip(acc) {
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), v[0]);
            if W == 2 {
                _mm256_storeu_si256(dst.as_mut_ptr().add(8).cast(), v[1]);
            }
        }
    }
}

/// A tile of `R ≤ MAX_MR` rows and `8 · W` channels (`W` = 1 or 2), its
/// depth-quads dealt round-robin to `CH` independent sets of accumulators
/// (summed at the end: integer sums do not depend on the order).
///
/// # Safety
/// As for [`Tile::tile`]; the CPU must support AVX2 (and AVX-VNNI with
/// `VNNI`).
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize, const VNNI: u8, const CH: usize, const W: usize>(
    k: usize,
    rows: &[*const u8; MAX_MR],
    panel: *const i8,
    out: &mut [[i32; NR]; MAX_MR],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[[_mm256_setzero_si256(); 2]; R]; CH];
    let (quads, rem) = (k / KQ, k % KQ);
    // Loops rather than closures over intrinsics: a closure does not get
    // this function's target features, and the intrinsic would become a
    // call.
    let mut av = [_mm256_setzero_si256(); R];
    // SAFETY (whole body): every row has k readable bytes and the panel
    // ⌈k/4⌉ quads of 64 bytes (caller's contract); the loads are unaligned.
    unsafe {
        let mut q = 0;
        while q < quads {
            for set in acc.iter_mut() {
                if q == quads {
                    break;
                }
                let b = panel.add(q * QUAD_BYTES);
                let b0 = _mm256_loadu_si256(b.cast());
                let b1 = if W == 2 {
                    _mm256_loadu_si256(b.add(32).cast())
                } else {
                    b0
                };
                for (r, v) in av.iter_mut().enumerate() {
                    *v = _mm256_set1_epi32(rows[r].add(q * KQ).cast::<i32>().read_unaligned());
                }
                quad::<R, VNNI, W>(set, av, b0, b1, ones);
                q += 1;
            }
        }
        if rem != 0 {
            let b = panel.add(quads * QUAD_BYTES);
            let b0 = _mm256_loadu_si256(b.cast());
            let b1 = _mm256_loadu_si256(b.add(32).cast());
            for (r, v) in av.iter_mut().enumerate() {
                let bytes = tail_quad(rows[r].add(quads * KQ), rem);
                *v = _mm256_set1_epi32(i32::from_le_bytes(bytes));
            }
            quad::<R, VNNI, W>(&mut acc[0], av, b0, b1, ones);
        }
        let (first, others) = acc.split_at_mut(1);
        for set in others {
            for (row, other) in first[0].iter_mut().zip(set) {
                for (a, b) in row.iter_mut().zip(other).take(W) {
                    *a = _mm256_add_epi32(*a, *b);
                }
            }
        }
        for (dst, v) in out.iter_mut().zip(first[0]) {
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), v[0]);
            if W == 2 {
                _mm256_storeu_si256(dst.as_mut_ptr().add(8).cast(), v[1]);
            }
        }
    }
}
