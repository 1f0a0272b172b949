//! Gradient clipping by global norm, applied before an optimizer step.

/// Scales `grads` so their global L2 norm is at most `max_norm`, like
/// `torch.nn.utils.clip_grad_norm_` (coefficient `max_norm/(norm+1e-6)`,
/// applied only when below 1). Returns the norm before clipping, accumulated
/// in f64 so it does not depend on summation luck in large buffers.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt();
    let coef = max_norm as f64 / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for g in grads.iter_mut() {
            *g *= coef;
        }
    }
    norm as f32
}
