//! The portable kernel: plain arrays the compiler keeps in vector registers.

use super::{Microkernel, Tile};
use crate::gemm::pack::{pack, View};

const MR: usize = 4;
const NR: usize = 8;

/// `4 x 8` tiles, any CPU.
pub(in crate::gemm) struct Kernel;

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
            let b: &[f32; NR] = unsafe { &*t.b.add(p * t.b_rs).cast() };
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
