//! Shape kernels: broadcasting a tensor, its adjoint (summing back down to
//! a shape), and axis permutation.

use super::{broadcast_strides, for_each_broadcast, MAX_RANK};

/// Broadcasts `x` to `out_dims`.
pub fn broadcast(out: &mut [f32], out_dims: &[usize], x: &[f32], x_dims: &[usize]) {
    let sx = broadcast_strides(x_dims, out_dims);
    let zero = [0usize; MAX_RANK];
    for_each_broadcast(out_dims, &sx, &zero, |o, xi, _, n, dx, _| {
        let row = &mut out[o..o + n];
        if dx == 0 {
            row.fill(x[xi]);
        } else {
            row.copy_from_slice(&x[xi..xi + n]);
        }
    });
}

/// Sums `x` (shape `x_dims`) down to `out_dims`, which broadcasts to `x_dims`:
/// the adjoint of [`broadcast`].
pub fn sum_to(out: &mut [f32], out_dims: &[usize], x: &[f32], x_dims: &[usize]) {
    out.fill(0.0);
    let so = broadcast_strides(out_dims, x_dims);
    let zero = [0usize; MAX_RANK];
    for_each_broadcast(x_dims, &zero, &so, |xi, _, oi, n, _, d_o| {
        let row = &x[xi..xi + n];
        if d_o == 0 {
            out[oi] += sum_row(row);
        } else {
            for (o, &v) in out[oi..oi + n].iter_mut().zip(row) {
                *o += v;
            }
        }
    });
}

/// Lanes [`sum_row`] keeps: four AVX2 registers' worth.
const SUM_LANES: usize = 32;

/// The sum of a row, in a fixed order: lane `l` sums elements `l`,
/// `l + 32`, …, then the lanes are added pairwise and the tail after them.
/// A plain `iter().sum()` is one chain of dependent additions (one per
/// four cycles); the lanes are independent, so the compiler keeps them in
/// vector registers (a convolution's bias gradient sums whole channels of
/// `[batch, C, H, W]`: 300 k floats a step for LeNet's first layer). The
/// order depends only on the row's length, so results stay bit-identical
/// across thread counts.
fn sum_row(row: &[f32]) -> f32 {
    let mut acc = [0.0f32; SUM_LANES];
    let chunks = row.chunks_exact(SUM_LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut width = SUM_LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    tail.iter().fold(acc[0], |s, &v| s + v)
}

/// Side of the square blocks [`transpose`] copies a two-axis swap in: a
/// block's reads span 8 cache lines of the input, its writes 8 rows of the
/// output, so both stay in L1.
const TRANSPOSE_BLOCK: usize = 8;

/// Permutes axes: output axis `i` is input axis `perm[i]`.
///
/// Attention transposes every head's queries, keys and values (and their
/// gradients) this way, so it runs as plain copies where it can: output
/// axes that the input steps through as one are merged, a last axis the
/// input holds contiguously is copied row by row, and any other pair of
/// last axes is copied in square blocks. A per-element walk of the index
/// arithmetic cost ~9 instructions an element there (12 % of W4's step).
pub fn transpose(out: &mut [f32], x: &[f32], x_dims: &[usize], perm: &[usize]) {
    let rank = x_dims.len();
    let mut in_strides = [0usize; MAX_RANK];
    let mut s = 1;
    for i in (0..rank).rev() {
        in_strides[i] = s;
        s *= x_dims[i];
    }
    // Output dims and the input stride of each, with axes the input steps
    // through as one merged, and axes of length 1 dropped.
    let (mut dims, mut strides, mut r) = ([0usize; MAX_RANK], [0usize; MAX_RANK], 0);
    for &p in perm {
        let (n, st) = (x_dims[p], in_strides[p]);
        if n == 1 {
            continue;
        }
        if r > 0 && strides[r - 1] == st * n {
            dims[r - 1] *= n;
            strides[r - 1] = st;
        } else {
            dims[r] = n;
            strides[r] = st;
            r += 1;
        }
    }
    let total: usize = dims[..r].iter().product();
    if total == 0 || out.is_empty() {
        return;
    }
    if r == 0 || (r == 1 && strides[0] == 1) {
        out.copy_from_slice(&x[..out.len()]);
        return;
    }
    // The last two output axes form one `p × q` plane per outer index (a
    // single axis is a plane of one row).
    let (p, sp, q, sq, outer) = if r == 1 {
        (1, 0, dims[0], strides[0], 0)
    } else {
        (
            dims[r - 2],
            strides[r - 2],
            dims[r - 1],
            strides[r - 1],
            r - 2,
        )
    };
    let plane = p * q;
    let mut idx = [0usize; MAX_RANK];
    for o in (0..total).step_by(plane) {
        let base: usize = (0..outer).map(|d| idx[d] * strides[d]).sum();
        let dst = &mut out[o..o + plane];
        if sq == 1 {
            for (i, row) in dst.chunks_exact_mut(q).enumerate() {
                let at = base + i * sp;
                row.copy_from_slice(&x[at..at + q]);
            }
        } else {
            for i0 in (0..p).step_by(TRANSPOSE_BLOCK) {
                for j0 in (0..q).step_by(TRANSPOSE_BLOCK) {
                    for i in i0..(i0 + TRANSPOSE_BLOCK).min(p) {
                        let row = &mut dst[i * q..(i + 1) * q];
                        let at = base + i * sp;
                        for j in j0..(j0 + TRANSPOSE_BLOCK).min(q) {
                            row[j] = x[at + j * sq];
                        }
                    }
                }
            }
        }
        for d in (0..outer).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}
