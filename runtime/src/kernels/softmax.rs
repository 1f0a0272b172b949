//! Softmax and log-softmax over one axis.

/// Softmax (or log-softmax) of `x` viewed as `[outer, n, inner]` over the
/// middle axis, computed stably.
///
/// Softmax takes one `exp` per element: `exp(x - max)` is stored and then
/// divided by its sum (taking `exp(x - lse)` again, as log-softmax's form
/// would, costs a second one; attention's scores are most of W4L's
/// softmax work).
pub fn softmax(out: &mut [f32], x: &[f32], outer: usize, n: usize, inner: usize, log: bool) {
    if n == 0 {
        // An empty axis has nothing to normalise (and `chunks_exact` would
        // panic on a chunk length of 0).
        return;
    }
    if inner == 1 {
        // Rows are contiguous: the same sums, without index arithmetic.
        for (o, xs) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)).take(outer) {
            let m = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            if log {
                let mut z = 0.0f32;
                for &v in xs {
                    z += (v - m).exp();
                }
                let lse = z.ln() + m;
                for (o, &v) in o.iter_mut().zip(xs) {
                    *o = v - lse;
                }
            } else {
                let mut z = 0.0f32;
                for (o, &v) in o.iter_mut().zip(xs) {
                    *o = (v - m).exp();
                    z += *o;
                }
                for o in o.iter_mut() {
                    *o /= z;
                }
            }
        }
        return;
    }
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..n {
                m = m.max(x[at(k)]);
            }
            let mut z = 0.0f32;
            for k in 0..n {
                let e = (x[at(k)] - m).exp();
                if !log {
                    out[at(k)] = e;
                }
                z += e;
            }
            if log {
                let lse = z.ln() + m;
                for k in 0..n {
                    out[at(k)] = x[at(k)] - lse;
                }
            } else {
                for k in 0..n {
                    out[at(k)] /= z;
                }
            }
        }
    }
}
