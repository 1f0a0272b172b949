//! The loop nest around the microkernel: cache blocking, the split of a
//! product over rayon tasks, and the per-thread packing workspaces.

use super::kernel::{Microkernel, Tile};
use super::pack::View;
use super::Epilogue;

/// Depth of a packed block (the shared `k` dimension). Deeper blocks mean
/// fewer passes over C (each loads and stores every tile once); a `KC x NR`
/// panel of B (32 KiB for the AVX2 kernel) no longer fits in L1 beside the
/// A panels, but L2 feeds the kernel's two B loads per step with room to
/// spare. Measured on an AVX2 Zen 3, interleaved in one process, 512 against
/// 256: 1.8–3.5% faster on one thread on all of W2's products and on square
/// 512 and 1024, within ±1.5% on two threads. (The result of a product
/// depends on `KC`, never on the thread count.)
const KC: usize = 512;
/// Rows of op(A) per block: an `MC x KC` block of A (288 KiB) stays in L2.
const MC: usize = 144;
/// Columns of op(B) per block: a `KC x NC` block of B (8 MiB) stays in L3.
const NC: usize = 4080;
/// Below this many columns of C, an untransposed A is read in place instead
/// of packed: packing costs about one store per element of A, while each
/// element only feeds `n` multiply-adds.
const PACK_A_MIN_N: usize = 512;
/// Up to this many rows of op(A), an op(B) whose rows are contiguous is
/// read in place instead of packed: each of its panels then feeds at most
/// one tile, so a copy would cost as much as the product reads (a batch-1
/// `predict` packed its whole weight matrix on every call).
const B_IN_PLACE_MAX_M: usize = 6;
/// Multiply-adds a rayon task must at least get before a product is split.
const MIN_WORK_PER_THREAD: usize = 1 << 20;
/// Floats of slack in front of each buffer, to align its start to 64 bytes.
const ALIGN_SLACK: usize = 16;

/// C as a raw pointer, so that threads can write disjoint column ranges of
/// the same rows (which `&mut` slices cannot express).
#[derive(Debug, Clone, Copy)]
pub(super) struct CPtr {
    pub(super) ptr: *mut f32,
    pub(super) ld: usize,
}

// SAFETY: a `CPtr` is only shared between the tasks of one `run`, which write
// disjoint blocks of C while the caller's `&mut [f32]` borrow is held.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// The sub-matrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must be an element of the matrix this points to.
    unsafe fn sub(self, i: usize, j: usize) -> Self {
        CPtr {
            // SAFETY: in bounds by the caller's contract.
            ptr: unsafe { self.ptr.add(i * self.ld + j) },
            ld: self.ld,
        }
    }
}

/// One product, bounds already checked: `C = alpha * op(A) @ op(B) + beta * C`.
#[derive(Clone, Copy)]
pub(super) struct Problem<'a> {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) a: View<'a>,
    pub(super) b: View<'a>,
    pub(super) c: CPtr,
    /// Applied to each finished block of C.
    pub(super) epilogue: Option<Epilogue<'a>>,
    /// Where this (sub-)problem's C starts in the caller's C, so the
    /// epilogue sees the caller's row and column numbers.
    pub(super) row0: usize,
    pub(super) col0: usize,
}

/// Per-thread packing buffers; they only grow.
struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = const {
        std::cell::RefCell::new(Workspace { a: Vec::new(), b: Vec::new() })
    };
}

/// Runs `f` with this thread's workspace.
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        // Unreachable in practice (kernels never call back into `sgemm`), but
        // a fresh workspace is correct, merely slower.
        Err(_) => f(&mut Workspace {
            a: Vec::new(),
            b: Vec::new(),
        }),
    })
}

/// Floats a packing buffer can ever need (blocks are at most `MC` or `NC`
/// rows plus a partial tile, by `KC` deep), which [`aligned`] reserves the
/// first time a buffer grows.
const WORKSPACE_MAX: usize = (NC + 16) * KC + ALIGN_SLACK;

/// Gives the calling thread and every thread of the current rayon pool its
/// packing buffers now (address space for the largest block; see
/// the buffers' first growth), so no later product allocates: without this, a worker that
/// first runs part of a product several steps into training allocates its
/// buffers then. Building a [`crate::parallel::StepRunner`] does this.
pub fn reserve_workspaces() {
    let reserve = || {
        with_workspace(|ws| {
            for buf in [&mut ws.a, &mut ws.b] {
                if buf.capacity() < WORKSPACE_MAX {
                    buf.reserve_exact(WORKSPACE_MAX - buf.len());
                }
            }
        })
    };
    reserve();
    rayon::broadcast(|_| reserve());
}

/// Whether the calling thread's packing buffers hold their reservation
/// (what [`reserve_workspaces`] gives every thread).
pub(crate) fn workspaces_ready() -> bool {
    with_workspace(|ws| ws.a.capacity() >= WORKSPACE_MAX && ws.b.capacity() >= WORKSPACE_MAX)
}

/// `len` floats of `buf`, starting at a 64-byte boundary when the allocator
/// allows it; grows `buf` only when it is too small.
///
/// The first growth reserves the most any product can need, so each buffer
/// is allocated once per thread: which worker runs which part of a product
/// varies from step to step, and a worker meeting a larger part than before
/// must not allocate mid-training. The reservation is address space; only
/// the floats in use are ever written, so the resident set grows with use.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + ALIGN_SLACK {
        if buf.capacity() < len + ALIGN_SLACK {
            buf.reserve_exact(WORKSPACE_MAX.max(len + ALIGN_SLACK) - buf.len());
        }
        buf.resize(len + ALIGN_SLACK, 0.0);
    }
    let off = buf.as_ptr().align_offset(64);
    let off = if off < ALIGN_SLACK { off } else { 0 };
    &mut buf[off..off + len]
}

/// Splits a product over up to `threads` threads of the current rayon pool,
/// `per_thread` parts each, and runs it. Each part is whole tiles of C, and
/// every element of C is summed in the same order however the product is
/// cut, so the result never depends on the split.
///
/// # Safety
/// Every element of op(A), op(B) and C must be in bounds of its storage, C
/// must not be accessed by anyone else during the call, and the CPU must
/// support `K`'s instructions.
pub(super) unsafe fn run<K: Microkernel>(p: Problem<'_>, threads: usize, per_thread: usize) {
    let work = p.m.saturating_mul(p.n).saturating_mul(p.k);
    let parts = if threads <= 1 {
        1
    } else {
        (threads * per_thread)
            .min(work / MIN_WORK_PER_THREAD)
            .max(1)
    };
    // Split the dimension with more tiles, or the columns when A is read in
    // place (`serial`): every row part would pack all of B again, while
    // column parts each pack their own columns and only read A. Each part
    // gets whole tiles.
    let (m_tiles, n_tiles) = (p.m.div_ceil(K::MR), p.n.div_ceil(K::NR));
    let a_in_place = p.a.cs == 1 && p.n < PACK_A_MIN_N;
    let split_n = n_tiles >= m_tiles || (a_in_place && n_tiles >= parts);
    let (len, unit) = if split_n { (p.n, K::NR) } else { (p.m, K::MR) };
    let units = len.div_ceil(unit);
    let parts = parts.min(units);
    if parts <= 1 {
        // SAFETY: forwarded contract.
        with_workspace(|ws| unsafe { serial::<K>(p, ws) });
        return;
    }
    let chunk = units.div_ceil(parts) * unit;
    use rayon::prelude::*;
    (0..len.div_ceil(chunk)).into_par_iter().for_each(|t| {
        let start = t * chunk;
        let size = chunk.min(len - start);
        // SAFETY: `start` indexes an existing row or column, so the
        // sub-views start inside their matrices; tasks get disjoint column
        // (or row) ranges of C, so no element is written by two of them.
        let part = unsafe {
            if split_n {
                Problem {
                    n: size,
                    b: p.b.sub(0, start),
                    c: p.c.sub(0, start),
                    col0: p.col0 + start,
                    ..p
                }
            } else {
                Problem {
                    m: size,
                    a: p.a.sub(start, 0),
                    c: p.c.sub(start, 0),
                    row0: p.row0 + start,
                    ..p
                }
            }
        };
        // SAFETY: forwarded contract, restricted to this task's block.
        with_workspace(|ws| unsafe { serial::<K>(part, ws) });
    });
}

/// `n` split into equal blocks of at most `max`, rounded up to `unit`.
fn block(n: usize, max: usize, unit: usize) -> usize {
    n.div_ceil(n.div_ceil(max)).div_ceil(unit) * unit
}

/// The product on the calling thread.
///
/// # Safety
/// As for [`run`].
unsafe fn serial<K: Microkernel>(p: Problem<'_>, ws: &mut Workspace) {
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = block(p.k, KC, 1);
    let mc_max = block(p.m, MC, mr);
    let nc_max = block(p.n, NC, nr);
    // An untransposed A (`cs == 1`) of a narrow product is read in place;
    // only a ragged last panel is packed (zero-padded) then.
    let pack_a = p.a.cs != 1 || p.n >= PACK_A_MIN_N;
    // A single such row the kernel can read in place needs no packing either.
    let a_row_in_place = !pack_a && p.m == 1 && K::ONE_ROW_IN_PLACE;
    let a_len = if pack_a { mc_max * kc_max } else { mr * kc_max };
    // Full panels of an in-place B come from B itself; only a ragged last
    // panel is packed (zero-padded).
    let b_in_place = p.b.cs == 1 && p.m <= B_IN_PLACE_MAX_M.min(mr);
    let b_len = if b_in_place {
        nr * kc_max
    } else {
        nc_max * kc_max
    };
    let Workspace { a: a_buf, b: b_buf } = ws;
    let a_buf = aligned(a_buf, a_len);
    let b_buf = aligned(b_buf, b_len);

    for j0 in (0..p.n).step_by(nc_max) {
        let nc = nc_max.min(p.n - j0);
        for (kb, p0) in (0..p.k).step_by(kc_max).enumerate() {
            let kc = kc_max.min(p.k - p0);
            // Later depth blocks accumulate onto the first one's result.
            let beta = if kb == 0 { p.beta } else { 1.0 };
            // Columns [0, in_place) of this block are read from op(B) in
            // place; the rest come packed from `b_buf`.
            let in_place = if b_in_place { nc / nr * nr } else { 0 };
            if in_place < nc {
                // Columns of op(B) are rows of op(B)^T: pack those into panels.
                let cols = nc - in_place;
                let b_panels = &mut b_buf[..cols.div_ceil(nr) * nr * kc];
                // SAFETY: the caller vouches for the CPU features.
                unsafe { K::pack_b(b_panels, p.b.t().sub(j0 + in_place, p0), cols, kc) };
            }
            for i0 in (0..p.m).step_by(mc_max) {
                let mc = mc_max.min(p.m - i0);
                let a_blk = p.a.sub(i0, p0);
                // Rows [packed_from, mc) of this block come from `a_buf`.
                let packed_from = if pack_a {
                    0
                } else if a_row_in_place {
                    mc
                } else {
                    mc / mr * mr
                };
                if packed_from < mc {
                    let rows = mc - packed_from;
                    let a_panels = &mut a_buf[..rows.div_ceil(mr) * mr * kc];
                    // SAFETY: as above.
                    unsafe { K::pack_a(a_panels, a_blk.sub(packed_from, 0), rows, kc) };
                }
                let tile = |ir: usize, jr: usize, b: *const f32, b_rs: usize| {
                    let (a, a_rs, a_cs) = if ir >= packed_from {
                        let panel = &a_buf[(ir - packed_from) * kc..][..mr * kc];
                        (panel.as_ptr(), 1, mr)
                    } else {
                        (a_blk.sub(ir, 0).data.as_ptr(), a_blk.rs, 1)
                    };
                    Tile {
                        kc,
                        a,
                        a_rs,
                        a_cs,
                        b,
                        b_rs,
                        // SAFETY: (i0 + ir, j0 + jr) is an element of C.
                        c: unsafe { p.c.sub(i0 + ir, j0 + jr) }.ptr,
                        ldc: p.c.ld,
                        alpha: p.alpha,
                        beta,
                        mr: mr.min(mc - ir),
                        nr: nr.min(nc - jr),
                    }
                };
                // SAFETY (every kernel call below): the A panel is either
                // packed (`MR * kc` floats of `a_buf`) or rows ir..ir+MR <=
                // mc of the block in place (row ir alone when
                // `a_row_in_place`, which the kernel allows), all inside A
                // by `check`; a packed B panel holds `NR * kc` floats, an
                // in-place one is columns j0 + jr.. + NR <= n of op(B) over
                // kc rows, inside B by `check`; the tiles' `mr x nr` corners
                // lie inside C, which this call owns; the caller guarantees
                // the CPU features.
                if in_place > 0 {
                    // In place only when m <= MR: one row of tiles.
                    let b = p.b.sub(p0, j0).data.as_ptr();
                    unsafe { K::row_of_tiles(&tile(0, 0, b, p.b.rs), in_place / nr, nr) };
                }
                for jr in (in_place..nc).step_by(nr) {
                    let b_panel = &b_buf[(jr - in_place) * kc..][..nr * kc];
                    for ir in (0..mc).step_by(mr) {
                        unsafe { K::tile(&tile(ir, jr, b_panel.as_ptr(), nr)) };
                    }
                }
                // The block is final after the last depth block: hand it to
                // the epilogue while it is still in cache.
                if let Some(f) = p.epilogue.filter(|_| p0 + kc == p.k) {
                    for r in 0..mc {
                        // SAFETY: row i0 + r, columns j0..j0 + nc are inside
                        // this task's part of C, which no one else touches
                        // during the call.
                        let row =
                            unsafe { std::slice::from_raw_parts_mut(p.c.sub(i0 + r, j0).ptr, nc) };
                        f(p.row0 + i0 + r, p.col0 + j0, row);
                    }
                }
            }
        }
    }
}
