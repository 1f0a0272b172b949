//! Kernels of batch normalisation and dropout, called by generated code.
//!
//! Batch statistics are taken per channel over every axis but the channel
//! axis: the tensor is `[n, c, s]` (`s = 1` for `[batch, C]`, `H·W` for
//! NCHW). Sums accumulate in f64 so that large batches do not lose the
//! variance to cancellation; nothing is allocated.
//!
//! Dropout's mask is a pure function of (seed, step, layer salt, global
//! element index) through the splitmix64 hash of `nnc_spec::hash`: the same bits as the
//! compiler's interpreter (`nnc_compiler::ops::norm`), so generated code and
//! the f64 oracle drop the same elements, and a data-parallel shard (which
//! passes the global index of its first sample in [`StepKey::offset`]) draws
//! exactly the mask the whole batch would have.

use crate::model::StepKey;

pub use nnc_spec::hash::{dropout_keep, dropout_key, dropout_threshold, mix};

/// Inverted dropout of a shard: `x` holds whole samples of `per_sample`
/// values, the first being global sample `key.offset`. Each element is
/// dropped with probability `rate` (in [0, 1)): kept elements are scaled by
/// `1 / (1 - rate)`, dropped ones zeroed.
pub fn dropout(x: &[f32], out: &mut [f32], per_sample: usize, key: StepKey, salt: u64, rate: f64) {
    let threshold = dropout_threshold(rate);
    let scale = (1.0 / (1.0 - rate)) as f32;
    let k = dropout_key(key.seed, key.step, salt);
    let base = key.offset.wrapping_mul(per_sample as u64);
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = if dropout_keep(k, base.wrapping_add(i as u64), threshold) {
            v * scale
        } else {
            0.0
        };
    }
}

/// Mean and biased variance of channel `ch` of `x` as `[n, c, s]`.
#[inline]
fn moments(x: &[f32], [n, c, s]: [usize; 3], ch: usize) -> (f64, f64) {
    let m = (n * s) as f64;
    let mut sum = 0.0f64;
    for i in 0..n {
        let row = &x[(i * c + ch) * s..(i * c + ch + 1) * s];
        sum += row.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    let mean = sum / m;
    let mut sq = 0.0f64;
    for i in 0..n {
        let row = &x[(i * c + ch) * s..(i * c + ch + 1) * s];
        sq += row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>();
    }
    (mean, sq / m)
}

/// Training-mode batch norm: `out = (x - mean) / sqrt(var + eps)` with the
/// batch's per-channel mean and biased variance.
pub fn batch_norm(x: &[f32], out: &mut [f32], d: [usize; 3], eps: f32) {
    let [n, c, s] = d;
    for ch in 0..c {
        let (mean, var) = moments(x, d, ch);
        let rstd = 1.0 / (var + f64::from(eps)).sqrt();
        let (mean, rstd) = (mean as f32, rstd as f32);
        for i in 0..n {
            let r = (i * c + ch) * s..(i * c + ch + 1) * s;
            for (o, &v) in out[r.clone()].iter_mut().zip(&x[r]) {
                *o = (v - mean) * rstd;
            }
        }
    }
}

/// The gradient of [`batch_norm`]: with `xhat` the normalised input,
/// `dx = rstd · (dy - mean(dy) - xhat · mean(dy · xhat))` per channel.
pub fn batch_norm_grad(x: &[f32], dy: &[f32], out: &mut [f32], d: [usize; 3], eps: f32) {
    let [n, c, s] = d;
    let m = (n * s) as f64;
    for ch in 0..c {
        let (mean, var) = moments(x, d, ch);
        let rstd = 1.0 / (var + f64::from(eps)).sqrt();
        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
        for i in 0..n {
            let r = (i * c + ch) * s..(i * c + ch + 1) * s;
            for (&g, &v) in dy[r.clone()].iter().zip(&x[r]) {
                let xhat = (f64::from(v) - mean) * rstd;
                sum_dy += f64::from(g);
                sum_dy_xhat += f64::from(g) * xhat;
            }
        }
        let (a, b) = (sum_dy / m, sum_dy_xhat / m);
        for i in 0..n {
            let r = (i * c + ch) * s..(i * c + ch + 1) * s;
            for ((o, &g), &v) in out[r.clone()].iter_mut().zip(&dy[r.clone()]).zip(&x[r]) {
                let xhat = (f64::from(v) - mean) * rstd;
                *o = (rstd * (f64::from(g) - a - xhat * b)) as f32;
            }
        }
    }
}

/// Inference-mode batch norm with the running statistics.
pub fn batch_norm_infer(
    x: &[f32],
    mean: &[f32],
    var: &[f32],
    out: &mut [f32],
    [n, c, s]: [usize; 3],
    eps: f32,
) {
    for ch in 0..c {
        let rstd = 1.0 / (var[ch] + eps).sqrt();
        let m = mean[ch];
        for i in 0..n {
            let r = (i * c + ch) * s..(i * c + ch + 1) * s;
            for (o, &v) in out[r.clone()].iter_mut().zip(&x[r]) {
                *o = (v - m) * rstd;
            }
        }
    }
}

/// The batch's per-channel mean (`var: false`) or unbiased variance
/// (`var: true`; biased when there is a single value per channel), which
/// the running statistics are blended towards.
pub fn batch_stat(x: &[f32], out: &mut [f32], d: [usize; 3], var: bool) {
    let m = d[0] * d[2];
    for (ch, o) in out.iter_mut().enumerate().take(d[1]) {
        let (mean, v) = moments(x, d, ch);
        *o = match (var, m) {
            (false, _) => mean,
            (true, 1) => v,
            (true, m) => v * m as f64 / (m - 1) as f64,
        } as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keeps_about_one_minus_rate_and_scales() {
        let x = vec![1.0f32; 10_000];
        let mut out = vec![0.0f32; 10_000];
        let key = StepKey {
            seed: 7,
            step: 3,
            offset: 0,
        };
        dropout(&x, &mut out, 10, key, 1, 0.25);
        let kept = out.iter().filter(|&&v| v != 0.0).count();
        assert!((7_300..7_700).contains(&kept), "kept {kept}");
        let scale = (1.0 / 0.75f64) as f32;
        assert!(out.iter().all(|&v| v == 0.0 || v == scale));
    }

    #[test]
    fn a_shard_draws_the_whole_batchs_mask() {
        let x: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let mut whole = vec![0.0; 60];
        let key = StepKey {
            seed: 1,
            step: 9,
            offset: 0,
        };
        dropout(&x, &mut whole, 6, key, 5, 0.5);
        let mut part = vec![0.0; 24];
        let shard = StepKey { offset: 6, ..key };
        dropout(&x[36..], &mut part, 6, shard, 5, 0.5);
        assert_eq!(&whole[36..], &part[..]);
    }

    #[test]
    fn batch_norm_matches_naive_loops() {
        // [n=3, c=2, s=2]
        let x = [
            1.0, 2.0, 10.0, 20.0, 3.0, 5.0, 30.0, 70.0, -1.0, 0.0, 0.0, 10.0,
        ];
        let mut out = [0.0; 12];
        batch_norm(&x, &mut out, [3, 2, 2], 0.0);
        let ch0 = [1.0f64, 2.0, 3.0, 5.0, -1.0, 0.0];
        let mean = ch0.iter().sum::<f64>() / 6.0;
        let var = ch0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 6.0;
        let want = (3.0 - mean) / var.sqrt();
        assert!((f64::from(out[4]) - want).abs() < 1e-6);
        let mut v = [0.0; 2];
        batch_stat(&x, &mut v, [3, 2, 2], true);
        assert!((f64::from(v[0]) - var * 6.0 / 5.0).abs() < 1e-5);
    }
}
