//! The f32 kernels generated code calls for ops that are not a plain loop,
//! one file per op family of the compiler (`compiler/src/ops/`; its `leaf`
//! family has no kernels): `elementwise` (broadcasting arithmetic and the
//! activations), `matmul`, `quant` (fake quantization), `reduce`,
//! `softmax`, `shape` (broadcast, sum-to, transpose), `loss`, [`conv`]
//! (convolution and pooling), [`norm`] (batch normalisation and dropout)
//! and [`sequence`] (layer normalisation, embeddings, concatenation and
//! slicing, the causal mask).
//! This file holds what they share: strided iteration under broadcasting,
//! and [`io`] and [`inputs`], which carve one kernel call's regions out of
//! the workspace.
//!
//! Generated code names the kernels of the first seven families flat, as
//! `kernels::…` (their modules are private and re-exported here), and the
//! last three by module, as `nnc_runtime::{conv, norm, sequence}::…` (the
//! crate root re-exports those modules): one stable path per kernel, which
//! the golden files of generated code pin.
//!
//! Each mirrors one op's f64 semantics in the compiler's reference
//! interpreter; the generated-code equivalence tests hold them to it. Shapes
//! are passed as `&[usize]` row-major dimension lists. None of these
//! allocate: training steps must not touch the heap.

pub mod conv;
mod elementwise;
mod loss;
mod matmul;
pub mod norm;
mod quant;
mod reduce;
pub mod sequence;
mod shape;
mod softmax;
#[cfg(test)]
mod tests;

pub use elementwise::{gelu, gelu_grad, normal_cdf, sigmoid, zip_broadcast};
pub use loss::{binary_cross_entropy, cross_entropy, cross_entropy_grad, one_hot};
pub use matmul::{
    matmul, matmul_t, matmul_then, parallel_gemm, with_parallel_gemm, with_shared_gemm,
    ParallelGemm,
};
pub use quant::{fake_quant, fake_quant_mask, fake_quant_scale};
pub use reduce::{reduce, Reduce};
pub use shape::{broadcast, sum_to, transpose};
pub use softmax::softmax;

/// The most dimensions a kernel handles (the language's tensors are small-rank).
pub const MAX_RANK: usize = 8;

/// Row-major strides of `dims`, right-aligned to `rank` with 0 for broadcast
/// (missing or size-1 where the output is larger) dimensions.
fn broadcast_strides(dims: &[usize], out_dims: &[usize]) -> [usize; MAX_RANK] {
    let rank = out_dims.len();
    let mut strides = [0usize; MAX_RANK];
    let mut s = 1;
    for i in (0..dims.len()).rev() {
        let o = rank - dims.len() + i;
        strides[o] = if dims[i] == 1 && out_dims[o] != 1 {
            0
        } else {
            s
        };
        s *= dims[i];
    }
    strides
}

/// Calls `f(out_index, a_index, b_index)` for every output element, with
/// the operands' indices under broadcasting. The innermost dimension runs in
/// a tight loop.
fn for_each_broadcast(
    out_dims: &[usize],
    sa: &[usize; MAX_RANK],
    sb: &[usize; MAX_RANK],
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
) {
    let total: usize = out_dims.iter().product();
    if total == 0 {
        return;
    }
    if out_dims.is_empty() {
        f(0, 0, 0, 1, 0, 0);
        return;
    }
    // Merge trailing dimensions that every operand steps through as one
    // (a bias `[C, 1, 1]` over `[N, C, H, W]` runs rows of H·W, not of W):
    // the per-row index arithmetic is the cost of short rows.
    let (mut dims, mut sa, mut sb) = ([0usize; MAX_RANK], *sa, *sb);
    let mut rank = out_dims.len();
    dims[..rank].copy_from_slice(out_dims);
    while rank >= 2 {
        let (i, j) = (rank - 2, rank - 1);
        if sa[i] != sa[j] * dims[j] || sb[i] != sb[j] * dims[j] {
            break;
        }
        dims[i] *= dims[j];
        (sa[i], sb[i]) = (sa[j], sb[j]);
        rank -= 1;
    }
    let out_dims = &dims[..rank];
    let inner = out_dims[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut idx = [0usize; MAX_RANK];
    let mut o = 0;
    while o < total {
        let (mut a, mut b) = (0, 0);
        for d in 0..rank - 1 {
            a += idx[d] * sa[d];
            b += idx[d] * sb[d];
        }
        f(o, a, b, inner, ia, ib);
        o += inner;
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            if idx[d] < out_dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Splits a workspace into the output region (mutable) and input regions
/// (shared) of one kernel call, each given as `(start, len)`. Regions come
/// from the compiler's memory plan; an input overlapping the output is a bug
/// in nnc.
pub fn io<'a, const N: usize>(
    ws: &'a mut [f32],
    out: (usize, usize),
    inputs: [(usize, usize); N],
) -> ([&'a [f32]; N], &'a mut [f32]) {
    let out = out.0..out.0 + out.1;
    let inputs = inputs.map(|(s, l)| s..s + l);
    let (left, rest) = ws.split_at_mut(out.start);
    let (mid, right) = rest.split_at_mut(out.end - out.start);
    let (left, right): (&'a [f32], &'a [f32]) = (left, right);
    let ins = inputs.map(|r| {
        if r.end <= out.start {
            &left[r]
        } else if r.start >= out.end {
            &right[r.start - out.end..r.end - out.end]
        } else {
            panic!("nnc internal error: kernel input {r:?} overlaps its output {out:?}")
        }
    });
    (ins, mid)
}

/// Read-only workspace regions of one kernel call whose output is
/// elsewhere (a parameter's gradient, computed straight into the gradient
/// buffer), each given as `(start, len)`.
pub fn inputs<const N: usize>(ws: &[f32], inputs: [(usize, usize); N]) -> [&[f32]; N] {
    inputs.map(|(s, l)| &ws[s..s + l])
}
