//! Copying operands into the panels the microkernels stream, and the
//! strided view of an operand that packing reads.

#[cfg(target_arch = "x86_64")]
use super::kernel::avx2;
use super::{MatRef, Trans};

/// Depth steps ahead that [`pack`] prefetches a run of a strided operand.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PACK_PREFETCH_AHEAD: usize = 8;
/// Floats in a 4 KiB page: the stride from which [`pack`] prefetches.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PAGE_FLOATS: usize = 4096 / std::mem::size_of::<f32>();

/// op(X) as a strided view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) data: &'a [f32],
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl<'a> View<'a> {
    pub(super) fn of(x: MatRef<'a>) -> Self {
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
    pub(super) fn t(self) -> Self {
        View {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// The view whose `(0, 0)` is this one's `(i, j)`; that element must exist.
    pub(super) fn sub(self, i: usize, j: usize) -> Self {
        View {
            data: &self.data[i * self.rs + j * self.cs..],
            ..self
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
pub(super) unsafe fn pack<const W: usize>(
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
