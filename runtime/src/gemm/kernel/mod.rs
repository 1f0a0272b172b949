//! The microkernel interface and its families: which one runs is decided
//! once per process from the CPU's features.

use super::pack::View;

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
pub(super) mod generic;

/// Kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// Portable Rust, vectorised by the compiler for the target baseline.
    Generic,
    /// x86_64 AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best family this CPU runs, detected on first use and cached.
    pub(super) fn detect() -> Isa {
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

/// One microkernel call: `C[..mr, ..nr] = alpha * Apanel @ Bpanel + beta * C`.
///
/// Element `(r, p)` of the A panel (`r < MR`, `p < kc`) is at
/// `a + r * a_rs + p * a_cs`; element `(p, j)` of the B panel at
/// `b + p * b_rs + j` (`b_rs == NR` when packed, B's row stride when read
/// in place); panel rows and columns past `mr x nr` are zero padding.
/// The kernel writes only the tile's `mr x nr` top-left corner to C (row
/// stride `ldc`); C is not read when `beta == 0`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tile {
    pub(super) kc: usize,
    pub(super) a: *const f32,
    pub(super) a_rs: usize,
    pub(super) a_cs: usize,
    pub(super) b: *const f32,
    pub(super) b_rs: usize,
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) mr: usize,
    pub(super) nr: usize,
}

/// A register-blocked microkernel.
pub(super) trait Microkernel {
    /// Rows of a tile.
    const MR: usize;
    /// Columns of a tile.
    const NR: usize;

    /// [`pack`](super::pack::pack) into `MR`-row panels.
    ///
    /// # Safety
    /// The CPU must support the kernel's instructions.
    unsafe fn pack_a(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize);

    /// [`pack`](super::pack::pack) into `NR`-row panels (rows of op(B)^T).
    ///
    /// # Safety
    /// As for [`Microkernel::pack_a`].
    unsafe fn pack_b(dst: &mut [f32], src: View<'_>, rows: usize, depth: usize);

    /// Whether [`Microkernel::tile`] reads only row 0 of an A panel read
    /// in place (not packed) when `mr == 1`, so a one-row product need not
    /// pack (and zero-pad) its A row.
    const ONE_ROW_IN_PLACE: bool = false;

    /// Runs one tile.
    ///
    /// # Safety
    /// Every A element `(r, p)`, `r < MR, p < kc`, and B element `(p, j)`,
    /// `j < NR`, must be readable (only row 0 of an in-place A when `mr ==
    /// 1` and [`Microkernel::ONE_ROW_IN_PLACE`]); C must be writable for `mr
    /// x nr` elements at row stride `ldc` and not accessed by anyone else
    /// meanwhile; the CPU must support the kernel's instructions.
    unsafe fn tile(t: &Tile);

    /// Runs `panels` full tiles (`nr == NR`) side by side: tile `q` is `t`
    /// with its B panel at `t.b + q * b_step` and its C at `t.c + q * NR`.
    /// Each element comes out exactly as [`Microkernel::tile`] computes it;
    /// a kernel may interleave the tiles so that a product of one row is
    /// not bound by the latency of one tile's accumulation chains.
    ///
    /// # Safety
    /// As for [`Microkernel::tile`], for every one of the tiles.
    unsafe fn row_of_tiles(t: &Tile, panels: usize, b_step: usize) {
        for q in 0..panels {
            let tile = Tile {
                // SAFETY: each tile lies inside the operands (caller's contract).
                b: unsafe { t.b.add(q * b_step) },
                // SAFETY: as above.
                c: unsafe { t.c.add(q * Self::NR) },
                ..*t
            };
            // SAFETY: forwarded contract.
            unsafe { Self::tile(&tile) };
        }
    }
}
