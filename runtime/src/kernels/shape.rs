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

/// Permutes axes: output axis `i` is input axis `perm[i]`.
pub fn transpose(out: &mut [f32], x: &[f32], x_dims: &[usize], perm: &[usize]) {
    let rank = x_dims.len();
    let mut in_strides = [0usize; MAX_RANK];
    let mut s = 1;
    for i in (0..rank).rev() {
        in_strides[i] = s;
        s *= x_dims[i];
    }
    let mut out_dims = [0usize; MAX_RANK];
    let mut strides = [0usize; MAX_RANK];
    for (i, &p) in perm.iter().enumerate() {
        out_dims[i] = x_dims[p];
        strides[i] = in_strides[p];
    }
    let zero = [0usize; MAX_RANK];
    for_each_broadcast(&out_dims[..rank], &strides, &zero, |o, xi, _, n, dx, _| {
        for (j, r) in out[o..o + n].iter_mut().enumerate() {
            *r = x[xi + j * dx];
        }
    });
}
