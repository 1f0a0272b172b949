//! Kernels of the sequence ops: layer normalisation (forward and backward,
//! one pass per row), embedding lookups and their scatter-add gradient,
//! concatenation and slicing along an axis, and the causal mask.
//!
//! Every kernel writes all of `out`; none allocates. Index inputs (token
//! ids) arrive as `u32` labels or as `f32` inputs holding whole numbers; the
//! generated code checks their range before any kernel runs
//! ([`crate::model::check_batch`]).

/// A token id as fed to the generated code: `u32` labels or `f32` inputs.
pub trait TokenIndex: Copy {
    /// The id as an index (range-checked by the caller).
    fn index(self) -> usize;
}

impl TokenIndex for u32 {
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

impl TokenIndex for f32 {
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

/// Normalises each row of `x` (`rows` rows of `d`): `(x − mean) / √(var + eps)`
/// with the biased variance, as layer normalisation does before its affine
/// part. Accumulates in f64 so long rows keep their precision.
pub fn layer_norm(out: &mut [f32], x: &[f32], d: usize, eps: f32) {
    for (o, row) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let (mean, inv) = moments(row, eps);
        for (o, &v) in o.iter_mut().zip(row) {
            *o = ((f64::from(v) - mean) * inv) as f32;
        }
    }
}

/// The gradient of [`layer_norm`] with respect to `x`, given the upstream
/// gradient `g`: per row, `dx = (g − mean(g) − x̂·mean(g·x̂)) / σ` with
/// `x̂` recomputed from `x` (cheaper than storing it).
pub fn layer_norm_grad(out: &mut [f32], x: &[f32], g: &[f32], d: usize, eps: f32) {
    let n = d as f64;
    for ((o, row), gr) in out
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(g.chunks_exact(d))
    {
        let (mean, inv) = moments(row, eps);
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        for (&v, &gv) in row.iter().zip(gr) {
            let xh = (f64::from(v) - mean) * inv;
            sg += f64::from(gv);
            sgx += f64::from(gv) * xh;
        }
        let (mg, mgx) = (sg / n, sgx / n);
        for ((o, &v), &gv) in o.iter_mut().zip(row).zip(gr) {
            let xh = (f64::from(v) - mean) * inv;
            *o = ((f64::from(gv) - mg - xh * mgx) * inv) as f32;
        }
    }
}

/// The mean and `1/√(var + eps)` of one row.
fn moments(row: &[f32], eps: f32) -> (f64, f64) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + f64::from(eps)).sqrt())
}

/// Embedding lookup: row `idx[i]` of `table` (rows of `d`) into row `i` of
/// `out`.
pub fn embedding<I: TokenIndex>(out: &mut [f32], idx: &[I], table: &[f32], d: usize) {
    for (o, &i) in out.chunks_exact_mut(d).zip(idx) {
        let r = i.index() * d;
        o.copy_from_slice(&table[r..r + d]);
    }
}

/// The embedding's gradient: zeros, then row `i` of `g` added into row
/// `idx[i]` of `out` (a token seen twice gets both contributions).
pub fn embedding_grad<I: TokenIndex>(out: &mut [f32], idx: &[I], g: &[f32], d: usize) {
    out.fill(0.0);
    for (gr, &i) in g.chunks_exact(d).zip(idx) {
        let r = i.index() * d;
        for (o, &v) in out[r..r + d].iter_mut().zip(gr) {
            *o += v;
        }
    }
}

/// Copies `x`, viewed as `[outer, len]`, into columns `at..at + len` of
/// `out` viewed as `[outer, total]`: one operand of a concatenation (the
/// lengths are the axis extent times the size of the axes after it).
pub fn place(out: &mut [f32], x: &[f32], total: usize, at: usize, len: usize) {
    for (o, xr) in out.chunks_exact_mut(total).zip(x.chunks_exact(len)) {
        o[at..at + len].copy_from_slice(xr);
    }
}

/// Columns `at..at + len` of `x` viewed as `[outer, total]`: a slice along
/// one axis.
pub fn slice(out: &mut [f32], x: &[f32], total: usize, at: usize, len: usize) {
    for (o, xr) in out.chunks_exact_mut(len).zip(x.chunks_exact(total)) {
        o.copy_from_slice(&xr[at..at + len]);
    }
}

/// A slice's gradient: zeros, with `x` placed at columns `at..at + len` of
/// each row of `total`.
pub fn pad(out: &mut [f32], x: &[f32], total: usize, at: usize, len: usize) {
    out.fill(0.0);
    place(out, x, total, at, len);
}

/// Copies `x`, viewed as matrices `[rows, cols]`, and sets every entry
/// above the diagonal (column > row) to `fill`: the causal mask of
/// attention scores (with a large negative `fill`) and its gradient (with
/// 0).
pub fn causal_mask(out: &mut [f32], x: &[f32], rows: usize, cols: usize, fill: f32) {
    for (o, xm) in out
        .chunks_exact_mut(rows * cols)
        .zip(x.chunks_exact(rows * cols))
    {
        for i in 0..rows {
            for j in 0..cols {
                o[i * cols + j] = if j > i { fill } else { xm[i * cols + j] };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_rows_have_zero_mean_and_unit_variance() {
        let x = [1.0f32, 2.0, 3.0, 4.0, -2.0, 0.0, 2.0, 8.0];
        let mut out = [0.0f32; 8];
        layer_norm(&mut out, &x, 4, 0.0);
        for row in out.chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{row:?}");
        }
    }

    #[test]
    fn embedding_gradient_adds_repeated_tokens() {
        let mut out = [9.0f32; 6];
        embedding_grad(&mut out, &[2u32, 0, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2);
        assert_eq!(out, [3.0, 4.0, 0.0, 0.0, 6.0, 8.0]);
        let mut rows = [0.0f32; 4];
        embedding(&mut rows, &[1.0f32, 0.0], &[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(rows, [3.0, 4.0, 1.0, 2.0]);
    }

    #[test]
    fn slice_pad_and_place_are_consistent() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut s = [0.0f32; 2];
        slice(&mut s, &x, 3, 1, 1);
        assert_eq!(s, [2.0, 5.0]);
        let mut p = [7.0f32; 6];
        pad(&mut p, &s, 3, 1, 1);
        assert_eq!(p, [0.0, 2.0, 0.0, 0.0, 5.0, 0.0]);
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let x = [1.0f32; 4];
        let mut out = [0.0f32; 4];
        causal_mask(&mut out, &x, 2, 2, -1e9);
        assert_eq!(out, [1.0, -1e9, 1.0, 1.0]);
    }
}
