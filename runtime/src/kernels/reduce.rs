//! Reductions over any set of axes (sum, mean, max).

use super::{for_each_broadcast, MAX_RANK};

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
