//! Convolution and pooling kernels over NCHW tensors, for generated code.
//!
//! A 2-D convolution is lowered, one sample and one group at a time, to
//! matrix products. Stride-1 layers (almost every layer of a modern CNN, and
//! both of LeNet's) on CPUs with the AVX2 kernel take the implicit GEMM of
//! `implicit.rs`: the microkernel reads receptive fields where they lie in a
//! zero-padded copy of the image (forward and both gradients; 2.3–4× faster
//! than the column matrix on LeNet's layers, see `examples/conv_bench.rs`).
//! Every other layer goes through [`columns`]: `im2col` copies every
//! receptive field of the input into a column of a
//! `[C/groups · KH · KW, OH · OW]` matrix, and the weights
//! `[O/groups, C/groups · KH · KW]` multiply it into the output
//! `[O/groups, OH · OW]` (the Caffe layout; the output is NCHW without a
//! transpose). The backward products use the same matrix: the input gradient
//! is `Wᵀ @ dY` scattered back by `col2im`, the weight gradient `dY @ colsᵀ`
//! accumulated over the batch (the GEMM reads `cols` transposed, no copy).
//! A 1×1 convolution with stride 1 and no padding needs neither: the input
//! already is the matrix.
//!
//! The column matrix and the implicit products' padded copies live in
//! `scratch`, a region of the generated model's
//! workspace that the compiler's memory planner places like any other
//! value (live only during the kernel); its length is
//! [`Conv2d::scratch_len`]. No kernel here allocates.
//!
//! Pooling is plain loops: max pooling pads with −∞ and routes the gradient
//! to the first maximum of each window (in row-major window order); average
//! pooling divides by the full window size, padding included (PyTorch's
//! `count_include_pad=True`).
//!
//! This file dispatches between the two convolution paths and splits the
//! workspace for them; `implicit.rs` is the implicit GEMM, `columns.rs` the
//! column matrix, `pool.rs` the pooling loops and `reference.rs` the f64
//! oracle the tests hold the others to.

#[doc(hidden)]
pub mod columns;
mod implicit;
mod pool;
#[doc(hidden)]
pub mod reference;
mod split;

pub use columns::{col2im, im2col};
pub use pool::{avg_pool2d, avg_pool2d_grad, max_pool2d, max_pool2d_grad, Pool2d};

/// The geometry of a 2-D convolution; defined in `nnc-spec`, which the
/// compiler shares to size the workspace (generated code names this path).
pub use nnc_spec::Conv2d;

/// One output extent (see [`nnc_spec::out_len`]).
pub use nnc_spec::out_len;

/// The implicit-GEMM plan, when `g` takes that path on this CPU.
fn implicit_plan(g: &Conv2d) -> Option<implicit::Plan> {
    if g.pointwise() || !crate::gemm::indexed_is_fast() {
        return None;
    }
    implicit::Plan::of(g)
}

/// Panics (an nnc bug, never a user error) unless the slices fit.
fn check(g: &Conv2d, b: usize, x: usize, wt: usize, y: usize, scratch: usize) {
    let (oh, ow) = g.out_hw();
    let ok = g.groups > 0
        && g.c % g.groups == 0
        && g.o % g.groups == 0
        && x == b * g.c * g.h * g.w
        && wt == g.o * g.k()
        && y == b * g.o * oh * ow
        && scratch >= g.scratch_len();
    assert!(
        ok,
        "nnc internal error: conv2d slices do not fit {g:?} at batch {b}"
    );
}

/// `y[b, O, OH, OW] = conv2d(x[b, C, H, W], w[O, C/groups, KH, KW])`
/// (cross-correlation, as in every framework).
pub fn conv2d(g: &Conv2d, b: usize, y: &mut [f32], x: &[f32], w: &[f32], scratch: &mut [f32]) {
    conv2d_then(g, b, y, x, w, scratch, |_, _| {});
}

/// [`conv2d`], then `epilogue(i, sample)` over each sample's finished
/// output, where `sample` is `y[i..][..O·OH·OW]`: the loop generated code
/// fuses a convolution's bias add and activation into, run while the
/// sample's output is still in cache (one pass over the output instead of
/// a broadcasting add and an activation, each over the whole batch).
pub fn conv2d_then(
    g: &Conv2d,
    b: usize,
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    scratch: &mut [f32],
    epilogue: impl Fn(usize, &mut [f32]) + Sync,
) {
    check(g, b, x.len(), w.len(), y.len(), scratch.len());
    let plan = implicit_plan(g);
    let (oh, ow) = g.out_hw();
    let (x_per, y_per) = (g.c * g.h * g.w, g.o * oh * ow);
    // Samples `n0..n0 + n` (in `y`, `x`): the epilogue sees where they lie
    // in the whole batch.
    let run = |n0: usize, n: usize, y: &mut [f32], x: &[f32], scratch: &mut [f32]| {
        let epilogue = |i: usize, sample: &mut [f32]| epilogue(n0 * y_per + i, sample);
        match &plan {
            Some(p) => implicit::conv2d(g, p, n, y, x, w, scratch, &epilogue),
            None => columns::conv2d(g, n, y, x, w, scratch, &epilogue),
        }
    };
    let parts = split::parts(b, g.k() * y_per);
    if parts <= 1 {
        return run(0, b, y, x, scratch);
    }
    // Split across the pool (generated `predict`): each part takes its
    // thread's own scratch, since the workspace's region is one run's.
    let len = g.scratch_len();
    let ready = || match &plan {
        Some(p) => implicit::tables_ready(p),
        None => crate::gemm::workspaces_ready(),
    };
    let reserved = split::reserve_scratch(len, &ready, &|| {
        if let Some(p) = &plan {
            implicit::reserve_tables(p);
        }
    });
    if reserved && plan.is_none() {
        // The column matrix's products pack on every worker too.
        crate::gemm::reserve_workspaces();
    }
    split::samples(b, parts, y, y_per, x, x_per, |n0, n, y, x| {
        split::with_scratch(len, |scratch| run(n0, n, y, x, scratch))
    });
}

/// The gradient of [`conv2d`] with respect to its input: `dx[b, C, H, W]`
/// from `dy[b, O, OH, OW]` and the weights.
pub fn conv2d_grad_input(
    g: &Conv2d,
    b: usize,
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    scratch: &mut [f32],
) {
    check(g, b, dx.len(), w.len(), dy.len(), scratch.len());
    match implicit_plan(g) {
        Some(p) => implicit::conv2d_grad_input(g, &p, b, dx, dy, w, scratch),
        None => columns::conv2d_grad_input(g, b, dx, dy, w, scratch),
    }
}

/// The gradient of [`conv2d`] with respect to its weights: `dw[O, C/groups,
/// KH, KW]`, summed over the batch, from the input and `dy[b, O, OH, OW]`.
pub fn conv2d_grad_weight(
    g: &Conv2d,
    b: usize,
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    scratch: &mut [f32],
) {
    check(g, b, x.len(), dw.len(), dy.len(), scratch.len());
    match implicit_plan(g) {
        Some(p) if b > 0 => implicit::conv2d_grad_weight(g, &p, b, dw, x, dy, scratch),
        _ => columns::conv2d_grad_weight(g, b, dw, x, dy, scratch),
    }
}

/// [`crate::kernels::io`] for kernels that also take scratch space: splits
/// the workspace into the inputs (read-only), the output and the scratch
/// region, given as `(start, len)`. The three kinds of region must not
/// overlap (the memory planner guarantees it).
pub fn io_scratch<'a, const N: usize>(
    ws: &'a mut [f32],
    out: (usize, usize),
    scratch: (usize, usize),
    inputs: [(usize, usize); N],
) -> ([&'a [f32]; N], &'a mut [f32], &'a mut [f32]) {
    let (o, s) = (out.0..out.0 + out.1, scratch.0..scratch.0 + scratch.1);
    let swapped = s.start < o.start;
    let (first, second) = if swapped { (&s, &o) } else { (&o, &s) };
    assert!(
        first.end <= second.start,
        "nnc internal error: kernel output {o:?} overlaps its scratch {s:?}"
    );
    let (left, rest) = ws.split_at_mut(first.start);
    let (a, rest) = rest.split_at_mut(first.len());
    let (mid, rest) = rest.split_at_mut(second.start - first.end);
    let (bb, right) = rest.split_at_mut(second.len());
    let (left, mid, right): (&'a [f32], &'a [f32], &'a [f32]) = (left, mid, right);
    let (f_end, s_start, s_end) = (first.end, second.start, second.end);
    let ins = inputs.map(|(st, len)| {
        let r = st..st + len;
        if r.end <= first.start {
            &left[r]
        } else if r.start >= f_end && r.end <= s_start {
            &mid[r.start - f_end..r.end - f_end]
        } else if r.start >= s_end {
            &right[r.start - s_end..r.end - s_end]
        } else {
            panic!("nnc internal error: kernel input {r:?} overlaps its output or scratch")
        }
    });
    if swapped {
        (ins, bb, a)
    } else {
        (ins, a, bb)
    }
}
