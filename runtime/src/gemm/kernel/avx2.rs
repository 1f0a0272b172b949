//! The AVX2 + FMA kernel and packing helper.

use super::{Microkernel, Tile};
use crate::gemm::pack::{pack, View};
use crate::gemm::{Indexed, INDEXED_BLOCK};
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;
// The indexed product runs these tiles; the convolution's scratch sizing
// (`nnc_spec::conv::implicit`, shared with the compiler) assumes them.
const _: () = assert!(MR == nnc_spec::conv::implicit::TILE_ROWS);
const _: () = assert!(NR == INDEXED_BLOCK);

/// `6 x 16` tiles: 12 accumulators, 2 B loads and 1 A broadcast in the
/// 16 `ymm` registers; 12 FMAs per 8 loads keeps both FMA ports busy.
pub(in crate::gemm) struct Kernel;

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

    const ONE_ROW_IN_PLACE: bool = true;

    unsafe fn tile(t: &Tile) {
        // SAFETY: forwarded contract (which includes AVX2 + FMA support).
        unsafe { tile(t) }
    }

    unsafe fn row_of_tiles(t: &Tile, panels: usize, b_step: usize) {
        // SAFETY: forwarded contract (which includes AVX2 + FMA support).
        unsafe { row_of_tiles(t, panels, b_step) }
    }
}

/// Tiles of one row four at a time: one tile of one row has only two
/// accumulation chains, each FMA waiting for the previous one, so the
/// loop would run at a quarter of the FMA ports' rate; four tiles side by
/// side keep eight chains in flight. (This is what a batch-1 `predict`'s
/// dense layers run.)
#[target_feature(enable = "avx2,fma")]
unsafe fn row_of_tiles(t: &Tile, panels: usize, b_step: usize) {
    let mut q = 0;
    if t.mr == 1 {
        while q + 4 <= panels {
            // SAFETY: tiles q..q + 4 lie inside the operands (caller's
            // contract).
            unsafe { row4(t, q, b_step) };
            q += 4;
        }
    }
    for q in q..panels {
        let tile = Tile {
            // SAFETY: as above, tile q.
            b: unsafe { t.b.add(q * b_step) },
            // SAFETY: as above.
            c: unsafe { t.c.add(q * NR) },
            ..*t
        };
        // SAFETY: forwarded contract, tile q.
        unsafe { self::tile(&tile) };
    }
}

/// Tiles `q0..q0 + 4` of [`row_of_tiles`] for one row (`mr == 1`): the
/// same FMA per element and depth step, in the same order, and the same
/// store as [`kernel`], so the results are bit-identical to four calls of
/// [`tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn row4(t: &Tile, q0: usize, b_step: usize) {
    // SAFETY (whole body): A row 0 and the four B panels are readable for
    // `kc` depth steps and the four C tiles writable (caller's contract).
    unsafe {
        let b = t.b.add(q0 * b_step);
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for p in 0..t.kc {
            let x = _mm256_broadcast_ss(&*t.a.add(p * t.a_cs));
            let bp = b.add(p * t.b_rs);
            for (q, row) in acc.iter_mut().enumerate() {
                let bq = bp.add(q * b_step);
                row[0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bq), row[0]);
                row[1] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bq.add(8)), row[1]);
            }
        }
        for (q, row) in acc.into_iter().enumerate() {
            let tile = Tile {
                c: t.c.add((q0 + q) * NR),
                nr: NR,
                ..*t
            };
            store::<1>(&tile, [row]);
        }
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
        } else if t.mr == 1 {
            // One row read in place (`ONE_ROW_IN_PLACE`): rows past it
            // may not exist.
            kernel::<1, false>(t)
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
            accumulate::<R>(t.kc, |p| t.b.add(p * t.b_rs), |p, r| t.a.add(p * MR + r))
        } else {
            // One pointer per row, so no row's address waits on
            // another's (a chain of adds would cap the loop's speed).
            let rows: [*const f32; R] = std::array::from_fn(|r| t.a.add(r * t.a_rs));
            accumulate::<R>(
                t.kc,
                |p| t.b.add(p * t.b_rs),
                |p, r| rows[r].add(p * t.a_cs),
            )
        };
        store(t, acc)
    }
}

/// [`indexed`](fn@crate::gemm::indexed) on AVX2: one `6 x 16` tile at a time, B read in
/// place through its row table (one extra load per depth step).
///
/// # Safety
/// The operands must fit their slices as `gemm::indexed` asserts; the
/// CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(in crate::gemm) unsafe fn indexed(
    n: usize,
    x: &Indexed<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let m = x.a_rows.len();
    for j0 in (0..n).step_by(NR) {
        // SAFETY: block j0 / 16 lies inside `b` (caller's contract).
        let b = unsafe { x.b.as_ptr().add(j0 / NR * x.b_block) };
        // Only this block's depth steps: A rows and the row table start
        // at `lo` (`depth_of` keeps the range within `0..k`).
        let depth = x.depth_of(j0);
        let (lo, k) = (depth.start, depth.len());
        // SAFETY: lo <= b_rows.len().
        let b_rows = unsafe { x.b_rows.as_ptr().add(lo) };
        for i0 in (0..m).step_by(MR) {
            let mr = MR.min(m - i0);
            // Rows past `mr` repeat the last one: read, never stored.
            let row = |r: usize| {
                // SAFETY: a_rows[i] + b_rows.len() <= a.len() for every
                // row i, and lo + k <= b_rows.len().
                unsafe { x.a.as_ptr().add(x.a_rows[i0 + r.min(mr - 1)] + lo) }
            };
            let t = Tile {
                kc: k,
                a: std::ptr::null(),
                a_rs: 0,
                a_cs: 0,
                b: std::ptr::null(),
                b_rs: NR,
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
pub(in crate::gemm) unsafe fn pack_rows<const W: usize>(
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
