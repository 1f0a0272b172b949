//! Softmax and log-softmax over one axis.

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
