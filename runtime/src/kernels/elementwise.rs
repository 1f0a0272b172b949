//! Elementwise kernels: binary arithmetic under numpy broadcasting, and
//! the activations whose scalar form generated code calls inside its loops.

use super::{broadcast_strides, for_each_broadcast};

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
