//! The f32 kernels generated code calls for ops that are not a plain loop:
//! broadcasting arithmetic, transposes, reductions, softmax and losses.
//!
//! Each mirrors one op's f64 semantics in the compiler's reference
//! interpreter; the generated-code equivalence tests hold them to it. Shapes
//! are passed as `&[usize]` row-major dimension lists. None of these
//! allocate: training steps must not touch the heap.

use crate::gemm::{sgemm, sgemm_then, MatRef, Parallelism};

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

/// `out = f(a, b)` elementwise with numpy broadcasting.
pub fn zip_broadcast(
    out: &mut [f32],
    out_dims: &[usize],
    a: &[f32],
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    f: impl Fn(f32, f32) -> f32,
) {
    let sa = broadcast_strides(a_dims, out_dims);
    let sb = broadcast_strides(b_dims, out_dims);
    for_each_broadcast(out_dims, &sa, &sb, |o, ai, bi, n, da, db| {
        let row = &mut out[o..o + n];
        match (da, db) {
            (1, 1) => {
                for ((r, &x), &y) in row.iter_mut().zip(&a[ai..ai + n]).zip(&b[bi..bi + n]) {
                    *r = f(x, y);
                }
            }
            (1, 0) => {
                let y = b[bi];
                for (r, &x) in row.iter_mut().zip(&a[ai..ai + n]) {
                    *r = f(x, y);
                }
            }
            (0, 1) => {
                let x = a[ai];
                for (r, &y) in row.iter_mut().zip(&b[bi..bi + n]) {
                    *r = f(x, y);
                }
            }
            _ => {
                for (j, r) in row.iter_mut().enumerate() {
                    *r = f(a[ai + j * da], b[bi + j * db]);
                }
            }
        }
    });
}

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
            out[oi] += row.iter().sum::<f32>();
        } else {
            for (o, &v) in out[oi..oi + n].iter_mut().zip(row) {
                *o += v;
            }
        }
    });
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

/// The reductions of the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
}

/// Splits `dims` around reduced axes into (outer, reduced, inner) products
/// when the reduced axes are contiguous; `None` otherwise.
fn contiguous(dims: &[usize], axes: &[bool]) -> Option<(usize, usize, usize)> {
    let first = axes.iter().position(|&a| a)?;
    let last = axes.iter().rposition(|&a| a)?;
    if axes[first..=last].iter().any(|&a| !a) {
        return None;
    }
    let p = |r: &[usize]| r.iter().product::<usize>();
    Some((
        p(&dims[..first]),
        p(&dims[first..=last]),
        p(&dims[last + 1..]),
    ))
}

/// Reduces `x` over the axes flagged in `axes` (length = rank). The output
/// holds the kept dimensions in order (the same layout with or without
/// keepdims).
pub fn reduce(kind: Reduce, out: &mut [f32], x: &[f32], dims: &[usize], axes: &[bool]) {
    let init = match kind {
        Reduce::Max => f32::NEG_INFINITY,
        _ => 0.0,
    };
    out.fill(init);
    let count: usize = dims
        .iter()
        .zip(axes)
        .filter(|(_, &a)| a)
        .map(|(d, _)| d)
        .product();
    if let Some((outer, red, inner)) = contiguous(dims, axes) {
        for o in 0..outer {
            let dst = &mut out[o * inner..(o + 1) * inner];
            for r in 0..red {
                let src = &x[(o * red + r) * inner..(o * red + r + 1) * inner];
                match kind {
                    Reduce::Max => {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d = d.max(s);
                        }
                    }
                    _ => {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    } else {
        // General case: map every input index to its output index.
        let rank = dims.len();
        let mut out_strides = [0usize; MAX_RANK];
        let mut s = 1;
        for i in (0..rank).rev() {
            if !axes[i] {
                out_strides[i] = s;
                s *= dims[i];
            }
        }
        let zero = [0usize; MAX_RANK];
        for_each_broadcast(dims, &zero, &out_strides, |xi, _, oi, n, _, d_o| {
            for j in 0..n {
                let d = &mut out[oi + j * d_o];
                let v = x[xi + j];
                *d = if kind == Reduce::Max {
                    d.max(v)
                } else {
                    *d + v
                };
            }
        });
    }
    if kind == Reduce::Mean {
        let inv = 1.0 / count as f32;
        for d in out.iter_mut() {
            *d *= inv;
        }
    }
}

/// Softmax (or log-softmax) of `x` viewed as `[outer, n, inner]` over the
/// middle axis, computed stably.
pub fn softmax(out: &mut [f32], x: &[f32], outer: usize, n: usize, inner: usize, log: bool) {
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..n {
                m = m.max(x[at(k)]);
            }
            let mut z = 0.0f32;
            for k in 0..n {
                z += (x[at(k)] - m).exp();
            }
            let lse = z.ln() + m;
            for k in 0..n {
                out[at(k)] = if log {
                    x[at(k)] - lse
                } else {
                    (x[at(k)] - lse).exp()
                };
            }
        }
    }
}

/// Mean over rows of `-log softmax(logits)[label]`, for `logits` of shape
/// `[labels.len(), classes]`. Labels are validated by the caller.
pub fn cross_entropy(logits: &[f32], labels: &[u32], classes: usize) -> f32 {
    let mut total = 0.0f64;
    for (row, &l) in logits.chunks_exact(classes).zip(labels) {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let z: f32 = row.iter().map(|&v| (v - m).exp()).sum();
        total += f64::from(z.ln() + m - row[l as usize]);
    }
    (total / labels.len().max(1) as f64) as f32
}

/// Mean binary cross-entropy of `sigmoid(z)` against `t`, from the logits.
pub fn binary_cross_entropy(z: &[f32], t: &[f32]) -> f32 {
    let total: f64 = z
        .iter()
        .zip(t)
        .map(|(&z, &t)| f64::from(z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()))
        .sum();
    (total / z.len().max(1) as f64) as f32
}

/// One-hot rows for `labels` over `classes`.
pub fn one_hot(out: &mut [f32], labels: &[u32], classes: usize) {
    out.fill(0.0);
    for (row, &l) in out.chunks_exact_mut(classes).zip(labels) {
        row[l as usize] = 1.0;
    }
}

thread_local! {
    /// How this thread's matrix products may split (see [`with_parallel_gemm`]).
    static GEMM_PARALLELISM: std::cell::Cell<Parallelism> =
        const { std::cell::Cell::new(Parallelism::Sequential) };
}

/// Runs `f` with every matrix product it makes on this thread split across
/// the current rayon pool (intra-op parallelism). Products split by whole
/// tiles of the output, so the result is the same on any number of threads.
/// Outside, products stay on the calling thread: data-parallel workers
/// already fill the cores.
pub fn with_parallel_gemm<R>(f: impl FnOnce() -> R) -> R {
    let before = GEMM_PARALLELISM.with(|p| p.replace(Parallelism::Rayon(0)));
    // Restores the setting even if `f` unwinds.
    struct Restore(Parallelism);
    impl Drop for Restore {
        fn drop(&mut self) {
            GEMM_PARALLELISM.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

fn gemm_parallelism() -> Parallelism {
    GEMM_PARALLELISM.with(|p| p.get())
}

/// The gradient of mean cross-entropy with respect to the logits, in one
/// pass per row: `out = (softmax(logits) - one_hot(labels)) * scale`, with
/// the softmax computed stably (max subtracted). The compiler rewrites the
/// gradient's softmax, one-hot, subtract and scale into this one kernel.
pub fn cross_entropy_grad(
    out: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    scale: f32,
) {
    let rows = out
        .chunks_exact_mut(classes)
        .zip(logits.chunks_exact(classes));
    for ((o, row), &l) in rows.zip(labels) {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut z = 0.0f32;
        for (o, &v) in o.iter_mut().zip(row) {
            let e = (v - m).exp();
            *o = e;
            z += e;
        }
        let s = scale / z;
        for o in o.iter_mut() {
            *o *= s;
        }
        o[l as usize] -= scale;
    }
}

/// `out[..., m, n] = a[..., m, k] @ b[..., k, n]` over `batches` leading
/// matrices; `b` is shared by all of them when `b_shared`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    batches: usize,
    m: usize,
    k: usize,
    n: usize,
    b_shared: bool,
) {
    let par = gemm_parallelism();
    let result = if b_shared {
        // One product: the leading dimensions fold into the rows.
        sgemm(
            par,
            batches * m,
            n,
            k,
            1.0,
            MatRef::new(a, k),
            MatRef::new(b, n),
            0.0,
            out,
            n,
        )
    } else {
        (0..batches).try_for_each(|i| {
            sgemm(
                par,
                m,
                n,
                k,
                1.0,
                MatRef::new(&a[i * m * k..(i + 1) * m * k], k),
                MatRef::new(&b[i * k * n..(i + 1) * k * n], n),
                0.0,
                &mut out[i * m * n..(i + 1) * m * n],
                n,
            )
        })
    };
    // Shapes are fixed by the compiler's shape rules; a mismatch here is a
    // bug in nnc, not in the user's data.
    if let Err(e) = result {
        panic!("nnc internal error: matmul shapes disagree: {e}");
    }
}

/// `out[m, n] = op(a) @ op(b)` for single matrices whose operands may be
/// stored transposed: with `ta`, `a` holds the `[k, m]` matrix whose
/// transpose is used; with `tb`, `b` holds `[n, k]`. The compiler folds a
/// transpose that only feeds matrix products into the product this way, so
/// backward passes (`Xᵀ @ dY`, `dY @ Wᵀ`) copy nothing.
#[allow(clippy::too_many_arguments)]
pub fn matmul_t(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) {
    let (a, b) = operands(a, b, (m, k, n), ta, tb);
    if let Err(e) = sgemm(gemm_parallelism(), m, n, k, 1.0, a, b, 0.0, out, n) {
        panic!("nnc internal error: matmul shapes disagree: {e}");
    }
}

/// The GEMM operands of an `[m, k] @ [k, n]` product whose slices may hold
/// the transposes.
fn operands<'a>(
    a: &'a [f32],
    b: &'a [f32],
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
) -> (MatRef<'a>, MatRef<'a>) {
    let a = if ta {
        MatRef::transposed(a, m)
    } else {
        MatRef::new(a, k)
    };
    let b = if tb {
        MatRef::transposed(b, k)
    } else {
        MatRef::new(b, n)
    };
    (a, b)
}

/// [`matmul_t`], then `epilogue(i, segment)` over the finished product,
/// where `segment` is `out[i..][..segment.len()]`; each element is passed
/// exactly once, while its block of the product is still in cache. This is
/// the matmul epilogue generated code fuses bias adds, activations and
/// activation-gradient masks into.
#[allow(clippy::too_many_arguments)]
pub fn matmul_then(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    epilogue: impl Fn(usize, &mut [f32]) + Sync,
) {
    let (a, b) = operands(a, b, (m, k, n), ta, tb);
    let ep = |row: usize, col: usize, seg: &mut [f32]| epilogue(row * n + col, seg);
    if let Err(e) = sgemm_then(gemm_parallelism(), m, n, k, 1.0, a, b, 0.0, out, n, &ep) {
        panic!("nnc internal error: matmul shapes disagree: {e}");
    }
}

/// The standard normal CDF in f32, via erf.
pub fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU (exact erf form).
pub fn gelu(x: f32) -> f32 {
    x * normal_cdf(x)
}

/// The derivative of GELU: `Φ(x) + x·φ(x)`.
pub fn gelu_grad(x: f32) -> f32 {
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
    normal_cdf(x) + x * pdf
}

/// Logistic sigmoid, without overflow for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_matches_index_arithmetic() {
        // [2, 3] + [3] and [2, 1] * [1, 3]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [10.0, 20.0, 30.0];
        let mut out = [0.0; 6];
        zip_broadcast(&mut out, &[2, 3], &a, &[2, 3], &b, &[3], |x, y| x + y);
        assert_eq!(out, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        zip_broadcast(
            &mut out,
            &[2, 3],
            &[1.0, 2.0],
            &[2, 1],
            &b,
            &[1, 3],
            |x, y| x * y,
        );
        assert_eq!(out, [10.0, 20.0, 30.0, 20.0, 40.0, 60.0]);
        let mut s = [0.0; 3];
        sum_to(&mut s, &[3], &a, &[2, 3]);
        assert_eq!(s, [5.0, 7.0, 9.0]);
        let mut s = [0.0; 2];
        sum_to(&mut s, &[2, 1], &a, &[2, 3]);
        assert_eq!(s, [6.0, 15.0]);
    }

    /// The row-major index of multi-index `ix` in `dims` under numpy
    /// broadcasting (`dims` right-aligned, size-1 dimensions repeat).
    fn naive_index(ix: &[usize], dims: &[usize]) -> usize {
        let off = ix.len() - dims.len();
        dims.iter().enumerate().fold(0, |acc, (d, &n)| {
            acc * n + if n == 1 { 0 } else { ix[off + d] }
        })
    }

    fn multi_index(mut flat: usize, dims: &[usize]) -> Vec<usize> {
        let mut ix = vec![0; dims.len()];
        for d in (0..dims.len()).rev() {
            ix[d] = flat % dims[d];
            flat /= dims[d];
        }
        ix
    }

    /// Random shapes up to rank 5, each operand broadcasting in random
    /// dimensions (the row merging must never change an index).
    #[test]
    fn broadcasting_kernels_equal_index_arithmetic_on_random_shapes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..500 {
            let rank = 1 + next(5);
            let out: Vec<usize> = (0..rank).map(|_| 1 + next(4)).collect();
            let operand = |next: &mut dyn FnMut(usize) -> usize| -> Vec<usize> {
                let skip = next(rank + 1).min(rank - 1);
                out[skip..]
                    .iter()
                    .map(|&n| if next(3) == 0 { 1 } else { n })
                    .collect()
            };
            let (ad, bd) = (operand(&mut next), operand(&mut next));
            let len = |d: &[usize]| d.iter().product::<usize>();
            let a: Vec<f32> = (0..len(&ad)).map(|i| (i % 7) as f32).collect();
            // Small values: every sum is exact in f32, whatever its order.
            let b: Vec<f32> = (0..len(&bd)).map(|i| (i * 7 % 5) as f32 + 0.5).collect();
            let mut got = vec![f32::NAN; len(&out)];
            zip_broadcast(&mut got, &out, &a, &ad, &b, &bd, |x, y| x * 8.0 + y);
            let mut sum = vec![0.0f32; len(&ad)];
            for (flat, g) in got.iter().enumerate() {
                let ix = multi_index(flat, &out);
                let (x, y) = (a[naive_index(&ix, &ad)], b[naive_index(&ix, &bd)]);
                assert_eq!(*g, x * 8.0 + y, "{out:?} {ad:?} {bd:?} at {ix:?}");
                sum[naive_index(&ix, &ad)] += got[flat];
            }
            let mut got_sum = vec![f32::NAN; len(&ad)];
            sum_to(&mut got_sum, &ad, &got, &out);
            assert_eq!(got_sum, sum, "sum_to {out:?} -> {ad:?}");
            let mut perm: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                perm.swap(i, next(i + 1));
            }
            let mut t = vec![f32::NAN; got.len()];
            transpose(&mut t, &got, &out, &perm);
            let tdims: Vec<usize> = perm.iter().map(|&p| out[p]).collect();
            for (flat, v) in t.iter().enumerate() {
                let ix = multi_index(flat, &tdims);
                let mut src = vec![0; rank];
                for (i, &p) in perm.iter().enumerate() {
                    src[p] = ix[i];
                }
                assert_eq!(
                    *v,
                    got[naive_index(&src, &out)],
                    "transpose {out:?} {perm:?}"
                );
            }
        }
    }

    #[test]
    fn transpose_and_reduce() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut t = [0.0; 6];
        transpose(&mut t, &a, &[2, 3], &[1, 0]);
        assert_eq!(t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let mut r = [0.0; 3];
        reduce(Reduce::Sum, &mut r, &a, &[2, 3], &[true, false]);
        assert_eq!(r, [5.0, 7.0, 9.0]);
        let mut r = [0.0; 2];
        reduce(Reduce::Max, &mut r, &a, &[2, 3], &[false, true]);
        assert_eq!(r, [3.0, 6.0]);
        let mut r = [0.0; 1];
        reduce(Reduce::Mean, &mut r, &a, &[2, 3], &[true, true]);
        assert_eq!(r, [3.5]);
        // Non-contiguous axes 0 and 2 of [2, 2, 2].
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let mut r = [0.0; 2];
        reduce(Reduce::Sum, &mut r, &x, &[2, 2, 2], &[true, false, true]);
        assert_eq!(r, [0.0 + 1.0 + 4.0 + 5.0, 2.0 + 3.0 + 6.0 + 7.0]);
    }

    #[test]
    fn losses_have_closed_forms() {
        let logits = [0.0f32; 8];
        let ce = cross_entropy(&logits, &[0, 3], 4);
        assert!((ce - 4f32.ln()).abs() < 1e-6);
        let bce = binary_cross_entropy(&[0.0; 3], &[0.0, 0.5, 1.0]);
        assert!((bce - 2f32.ln()).abs() < 1e-6);
        let mut oh = [9.0; 6];
        one_hot(&mut oh, &[2, 0], 3);
        assert_eq!(oh, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let mut s = [0.0; 3];
        softmax(&mut s, &[1000.0, 0.0, 0.0], 1, 3, 1, false);
        assert_eq!(s, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn transposed_operands_equal_explicit_transposes() {
        // a: [m=2, k=3], b: [k=3, n=2]; stored transposed as [3, 2] and [2, 3].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, -1.0, 0.5, 2.0, -2.0, 1.0];
        let mut want = [0.0; 4];
        matmul(&mut want, &a, &b, 1, 2, 3, 2, true);
        let (mut at, mut bt) = ([0.0; 6], [0.0; 6]);
        transpose(&mut at, &a, &[2, 3], &[1, 0]);
        transpose(&mut bt, &b, &[3, 2], &[1, 0]);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut got = [f32::NAN; 4];
            let x = if ta { &at[..] } else { &a[..] };
            let y = if tb { &bt[..] } else { &b[..] };
            matmul_t(&mut got, x, y, 2, 3, 2, ta, tb);
            assert_eq!(got, want, "ta={ta} tb={tb}");
        }
    }

    #[test]
    fn cross_entropy_grad_is_softmax_minus_one_hot_scaled() {
        // Large logits: a naive exp would overflow; the kernel subtracts the max.
        let logits = [1.0f32, 2.0, 3.0, 500.0, 499.0, -3.0];
        let labels = [2u32, 0];
        let scale = 0.5f32;
        let mut out = [f32::NAN; 6];
        cross_entropy_grad(&mut out, &logits, &labels, 3, scale);
        for (r, &l) in labels.iter().enumerate() {
            let row = &logits[r * 3..][..3];
            let m = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let z: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
            for c in 0..3 {
                let p = (f64::from(row[c]) - m).exp() / z;
                let want = (p - f64::from(u8::from(c == l as usize))) * f64::from(scale);
                assert!((f64::from(out[r * 3 + c]) - want).abs() < 1e-6, "({r},{c})");
            }
        }
    }

    #[test]
    fn matmul_then_applies_the_epilogue_to_the_product() {
        let a: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 2.0).collect(); // [3, 4]
        let b: Vec<f32> = (0..8).map(|v| 1.0 - v as f32 * 0.25).collect(); // [4, 2]
        let bias = [0.5f32, -4.0];
        let mut want = [0.0; 6];
        matmul(&mut want, &a, &b, 1, 3, 4, 2, true);
        for (i, w) in want.iter_mut().enumerate() {
            *w = (*w + bias[i % 2]).max(0.0);
        }
        let mut got = [f32::NAN; 6];
        matmul_then(&mut got, &a, &b, 3, 4, 2, false, false, |i0, seg| {
            for (j, o) in seg.iter_mut().enumerate() {
                *o = (*o + bias[(i0 + j) % 2]).max(0.0);
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn io_splits_disjoint_ranges() {
        let mut ws: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let ([a, b], out) = io(&mut ws, (4, 2), [(0, 2), (7, 2)]);
        assert_eq!((a, b), (&[0.0, 1.0][..], &[7.0, 8.0][..]));
        out[0] = a[1] + b[0];
        assert_eq!(ws[4], 8.0);
    }

    #[test]
    #[should_panic(expected = "overlaps its output")]
    fn io_rejects_overlap() {
        let mut ws = vec![0.0f32; 10];
        let _ = io(&mut ws, (4, 2), [(5, 2)]);
    }
}
