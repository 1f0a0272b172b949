//! Loss kernels: cross-entropy (and its fused gradient), binary
//! cross-entropy from logits, and one-hot labels.

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
